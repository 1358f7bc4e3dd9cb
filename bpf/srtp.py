"""SRTP AES_CM_128_HMAC_SHA1_80 key material as the BPF programs consume it.

RFC 3711: session keys derived from the DTLS-exported master key and salt
(key derivation rate 0), the AES-CM keystream of one (SSRC, packet index) —
computed here with AES-NI (``cryptography``) ahead of the packets and handed
to the kernel through the mmapable ``sft_keystream`` map — and the HMAC-SHA1
key as the two SHA-1 chaining states after ``key ^ ipad`` / ``key ^ opad``,
so the kernel hashes only the packet.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MASTER_KEY_LEN = 16
MASTER_SALT_LEN = 14
AUTH_KEY_LEN = 20
TAG_LEN = 10
_BLOCK = 16

_SHA1_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)


def _ecb(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """AES-CM PRF of RFC 3711 §4.3.3 with kdr = 0."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    iv = x << 16
    blocks = b"".join((iv + i).to_bytes(_BLOCK, "big") for i in range((length + 15) // 16))
    return _ecb(master_key, blocks)[:length]


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


@functools.cache
def _counter_lanes(n_blocks: int) -> tuple[int, int]:
    """Counter blocks IV + j for j < n_blocks as one big integer is
    IV * repeat | lanes: IV has 16 zero low bits, so + j never carries."""
    lanes = sum(j << (128 * (n_blocks - 1 - j)) for j in range(n_blocks))
    repeat = sum(1 << (128 * k) for k in range(n_blocks))
    return lanes, repeat


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
        return cls(enc_key=_derive(key, salt, 0, 16), auth_key=_derive(key, salt, 1, 20),
                   salt=_derive(key, salt, 2, 14))

    def hmac_states(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return hmac_states(self.auth_key)

    def keystreams(self, ssrc: int, indices: Iterable[int], length: int) -> list[bytes]:
        """AES-CM keystream of ``length`` bytes for each SRTP index, in one AES call."""
        n_blocks = (length + _BLOCK - 1) // _BLOCK
        lanes, repeat = _counter_lanes(n_blocks)
        base = (int.from_bytes(self.salt, "big") << 16) ^ (ssrc << 64)
        size = n_blocks * _BLOCK
        indices = list(indices)
        counters = b"".join(
            (((base ^ ((index & 0xFFFFFFFFFFFF) << 16)) * repeat) | lanes).to_bytes(size, "big")
            for index in indices)
        stream = _ecb(self.enc_key, counters)
        return [stream[i * size:i * size + length] for i in range(len(indices))]
