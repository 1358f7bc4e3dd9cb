"""SRTP AES_CM_128_HMAC_SHA1_80 key material (RFC 3711), pure Python.

Session keys derived from the DTLS-exported master key and salt (key
derivation rate 0), AES-CM itself, and the HMAC-SHA1 key as the two SHA-1
chaining states after ``key ^ ipad`` / ``key ^ opad``, so the kernel hashes
only the packet. The kernel data plane's keystream rings are filled natively
(``bpf/native/keystream.c``); ``SrtpSession.keystream`` is the reference the
tests hold that fill to. No kernel dependency: the load generator
(``sftload/media.py``) derives its keys here too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MASTER_KEY_LEN = 16
MASTER_SALT_LEN = 14
AUTH_KEY_LEN = 20
TAG_LEN = 10
_INDEX_MASK = 0xFFFFFFFFFFFF  # SRTP index: 48 bits

_SHA1_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)


def aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    """AES in counter mode from the 128-bit ``iv`` (RFC 3711 §4.1.1), XORed onto ``data``."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """The AES-CM key derivation of RFC 3711 §4.3.3 with kdr = 0."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return aes_cm(master_key, x << 16, bytes(length))


def sha1_compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-1 compression (FIPS 180-4), for the precomputed HMAC states."""
    def rol(x: int, n: int) -> int:
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    w = list(struct.unpack(">16I", block))
    for t in range(16, 80):
        w.append(rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1))
    a, b, c, d, e = state
    for t in range(80):
        if t < 20:
            f, k = (b & c) | (~b & d), 0x5A827999
        elif t < 40:
            f, k = b ^ c ^ d, 0x6ED9EBA1
        elif t < 60:
            f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
        else:
            f, k = b ^ c ^ d, 0xCA62C1D6
        a, b, c, d, e = (rol(a, 5) + f + e + k + w[t]) & 0xFFFFFFFF, a, rol(b, 30), c, d
    return tuple((x + y) & 0xFFFFFFFF for x, y in zip(state, (a, b, c, d, e)))


def hmac_states(key: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """SHA-1 states after hashing (key ^ ipad) and (key ^ opad)."""
    padded = key.ljust(64, b"\0")
    inner = sha1_compress(_SHA1_INIT, bytes(b ^ 0x36 for b in padded))
    outer = sha1_compress(_SHA1_INIT, bytes(b ^ 0x5C for b in padded))
    return inner, outer


@dataclass(frozen=True)
class SrtpSession:
    """One direction of one leg: session keys derived from master key || salt."""

    enc_key: bytes
    auth_key: bytes
    salt: bytes

    @classmethod
    def from_master(cls, master: bytes) -> SrtpSession:
        if len(master) != MASTER_KEY_LEN + MASTER_SALT_LEN:
            raise ValueError(f"AES_CM_128_HMAC_SHA1_80 wants 30 bytes of key||salt, "
                             f"got {len(master)}")
        key, salt = master[:MASTER_KEY_LEN], master[MASTER_KEY_LEN:]
        return cls(enc_key=derive(key, salt, 0, 16), auth_key=derive(key, salt, 1, AUTH_KEY_LEN),
                   salt=derive(key, salt, 2, MASTER_SALT_LEN))

    def hmac_states(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return hmac_states(self.auth_key)

    def iv(self, ssrc: int, index: int) -> int:
        """The AES-CM IV of one packet: (salt << 16) ^ (SSRC << 64) ^ (index << 16)."""
        return ((int.from_bytes(self.salt, "big") << 16) ^ (ssrc << 64)
                ^ ((index & _INDEX_MASK) << 16))

    def keystream(self, ssrc: int, index: int, length: int) -> bytes:
        """``length`` bytes of the AES-CM keystream of one (SSRC, SRTP index)."""
        return aes_cm(self.enc_key, self.iv(ssrc, index), bytes(length))
