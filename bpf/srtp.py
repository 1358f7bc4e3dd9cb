"""SRTP AES_CM_128_HMAC_SHA1_80 key material as the BPF programs consume it.

RFC 3711: session keys derived from the DTLS-exported master key and salt
(key derivation rate 0), the AES-CM keystream of one (SSRC, packet index) —
computed here with AES-NI (``cryptography``) ahead of the packets and handed
to the kernel through the mmapable ``sft_keystream`` map — and the HMAC-SHA1
key as the two SHA-1 chaining states after ``key ^ ipad`` / ``key ^ opad``,
so the kernel hashes only the packet.

Keystream cost: the counter blocks of a whole refill batch are built with
numpy (one template per SSRC, the 48-bit index XORed into bytes 8..13 of
every block) and encrypted by one AES-ECB call of a cached encryptor, so a
batch costs a few µs plus AES-NI time (``benchmarks/bpf_bench.py --keystream``).
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MASTER_KEY_LEN = 16
MASTER_SALT_LEN = 14
AUTH_KEY_LEN = 20
TAG_LEN = 10
_BLOCK = 16

_INDEX_MASK = np.uint64(0xFFFFFFFFFFFF)  # SRTP index: 48 bits
_SIXTEEN = np.uint64(16)
_NATIVE_LITTLE = sys.byteorder == "little"

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

    @functools.cached_property
    def _encryptor(self):  # type: ignore[no-untyped-def]
        """ECB is stateless between ``update`` calls: one encryptor serves every batch
        (creating one costs ~10 µs, more than AES on a whole video entry)."""
        return Cipher(algorithms.AES(self.enc_key), modes.ECB()).encryptor()

    @functools.cached_property
    def _templates(self) -> dict[tuple[int, int], np.ndarray]:
        return {}

    def _template(self, ssrc: int, n_blocks: int) -> np.ndarray:
        """Counter blocks of index 0, (salt << 16) ^ (SSRC << 64) + j (the IV's low 16 bits
        are zero, so + j never carries), as (n_blocks, 2) native uint64 words holding the
        big-endian bytes: word 0 = bytes 0..7, word 1 = bytes 8..15."""
        key = (ssrc, n_blocks)
        template = self._templates.get(key)
        if template is None:
            base = (int.from_bytes(self.salt, "big") << 16) ^ (ssrc << 64)
            raw = b"".join((base | j).to_bytes(_BLOCK, "big") for j in range(n_blocks))
            template = np.frombuffer(raw, dtype=np.uint64).reshape(n_blocks, 2)
            if len(self._templates) >= 64:
                self._templates.clear()
            self._templates[key] = template
        return template

    def keystream_array(self, ssrc: int, first: int, count: int, length: int) -> np.ndarray:
        """AES-CM keystream of ``length`` bytes for the SRTP indices first .. first +
        count - 1, as a (count, length) uint8 array, with one AES call."""
        n_blocks = (length + _BLOCK - 1) // _BLOCK
        counters = np.empty((count, n_blocks, 2), dtype=np.uint64)
        counters[:] = self._template(ssrc, n_blocks)
        # the 48-bit index << 16 is bytes 8..13 of every block: XOR it into word 1,
        # byte-swapped the way the big-endian block sits in the native word
        indices = np.arange(first, first + count, dtype=np.uint64) & _INDEX_MASK
        if _NATIVE_LITTLE:
            counters[:, :, 1] ^= (indices << _SIXTEEN).byteswap()[:, None]
        else:
            counters[:, :, 1] ^= (indices << _SIXTEEN)[:, None]
        stream = np.frombuffer(self._encryptor.update(counters.view(np.uint8)),
                               dtype=np.uint8)
        return stream.reshape(count, n_blocks * _BLOCK)[:, :length]

    def keystreams(self, ssrc: int, indices: Iterable[int], length: int) -> list[bytes]:
        """AES-CM keystream of ``length`` bytes for each SRTP index (any order)."""
        out = []
        for index in indices:
            out.append(self.keystream_array(ssrc, index, 1, length)[0].tobytes())
        return out


def keystream_batch(jobs: list[tuple[SrtpSession, int, int, int]], length: int) -> np.ndarray:
    """Keystreams of many (session, SSRC, first index, count) runs, all of ``length``
    bytes, as one (sum of counts, length) array: the counter blocks of every run are
    built in one numpy pass, then one AES-ECB ``update`` per run (each has its key)."""
    n_blocks = (length + _BLOCK - 1) // _BLOCK
    counts = np.fromiter((job[3] for job in jobs), dtype=np.int64, count=len(jobs))
    total = int(counts.sum())
    bases = [(int.from_bytes(session.salt, "big") << 16) ^ (ssrc << 64)
             for session, ssrc, _first, _count in jobs]
    his = np.repeat(np.fromiter((b >> 64 for b in bases), dtype=np.uint64, count=len(jobs)),
                    counts)
    los = np.repeat(np.fromiter((b & 0xFFFFFFFFFFFFFFFF for b in bases), dtype=np.uint64,
                                count=len(jobs)), counts)
    starts = np.fromiter((job[2] for job in jobs), dtype=np.uint64, count=len(jobs))
    offsets = np.cumsum(counts) - counts
    indices = (np.repeat(starts, counts)
               + (np.arange(total, dtype=np.int64) - np.repeat(offsets, counts)).astype(np.uint64))
    # block j of an index: word 0 = IV bits 127..64, word 1 = bits 63..0 ^ index << 16 | j
    counters = np.empty((total, n_blocks, 2), dtype=np.uint64)
    counters[:, :, 0] = his[:, None]
    counters[:, :, 1] = ((los ^ ((indices & _INDEX_MASK) << _SIXTEEN))[:, None]
                         | np.arange(n_blocks, dtype=np.uint64)[None, :])
    if _NATIVE_LITTLE:
        counters.byteswap(inplace=True)
    plain = counters.view(np.uint8).reshape(total, n_blocks * _BLOCK)
    stream = np.empty(total * n_blocks * _BLOCK + _BLOCK, dtype=np.uint8)
    for (session, _ssrc, _first, count), offset in zip(jobs, offsets.tolist()):
        lo, hi = offset * n_blocks * _BLOCK, (offset + count) * n_blocks * _BLOCK
        session._encryptor.update_into(plain[offset:offset + count].reshape(-1),
                                       stream[lo:hi + _BLOCK - 1])
    return stream[:total * n_blocks * _BLOCK].reshape(total, n_blocks * _BLOCK)[:, :length]
