"""The native engine's AES-128-CTR (engine/src/aesctr.c) equals AES-128 in ECB mode
over SRTP's counter blocks (the IV with its last 16 bits counting the blocks,
RFC 3711 4.1.1), as computed by the ``cryptography`` package: every length from
0 to 1500 (whole groups of blocks, the rest, a partial last block), counters
that wrap within a packet, and in place; on both paths, AES-NI and (where the
CPU has it) VAES. Built here from the engine's source."""

from __future__ import annotations

import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests import native_harness

HARNESS = r"""
#include "aesctr.h"
int supported(void) { return aesctr_supported(); }
int has_vaes(void) { return __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx2"); }
"""
CDEF = """
struct aesctr_key { uint8_t round_key[11][16]; ...; };
int supported(void);
int has_vaes(void);
extern int aesctr_wide;
void aesctr_expand(struct aesctr_key *key, const uint8_t raw[16]);
void aesctr_xor(const struct aesctr_key *key, const uint8_t iv[16], const uint8_t *src,
                uint8_t *dst, size_t n);
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Any:
    module = native_harness.build("aesctr_harness", CDEF, HARNESS, ("aesctr.c",),
                                  tmp_path_factory.mktemp("aesctr"))
    if not module.lib.supported():
        pytest.skip("CPU without AES-NI: the engine uses OpenSSL's AES")
    return module


@pytest.fixture(params=["aesni", "vaes"])
def aesctr(harness: Any, request: pytest.FixtureRequest) -> Any:
    wide = request.param == "vaes"
    if wide and not harness.lib.has_vaes():
        pytest.skip("CPU without VAES")
    harness.lib.aesctr_wide = int(wide)
    yield harness
    harness.lib.aesctr_wide = -1


def srtp_keystream(key: bytes, iv: bytes, n: int) -> bytes:
    first = int.from_bytes(iv[14:], "big")
    blocks = b"".join(iv[:14] + ((first + b) & 0xFFFF).to_bytes(2, "big")
                      for b in range((n + 15) // 16))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (ecb.update(blocks) + ecb.finalize())[:n]


def run(aesctr: Any, key: bytes, iv: bytes, data: bytes, in_place: bool = False) -> bytes:
    ffi, lib = aesctr.ffi, aesctr.lib
    expanded = ffi.new("struct aesctr_key *")
    lib.aesctr_expand(expanded, key)
    src = ffi.new("uint8_t[]", data or b"\0")
    dst = src if in_place else ffi.new("uint8_t[]", len(data) or 1)
    lib.aesctr_xor(expanded, iv, src, dst, len(data))
    return bytes(ffi.buffer(dst, len(data)))


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def test_every_length_is_the_srtp_keystream_xor(aesctr: Any) -> None:
    rng = random.Random(7)
    for length in range(0, 1501):
        key, iv, data = rng.randbytes(16), rng.randbytes(14) + bytes(2), rng.randbytes(length)
        assert run(aesctr, key, iv, data) == xor(data, srtp_keystream(key, iv, length)), length


@pytest.mark.parametrize("first", [0xFFFF, 0xFFF9, 0xFFF0, 0x1234])
def test_the_block_counter_is_16_bits_and_wraps_inside_a_packet(aesctr: Any, first: int) -> None:
    rng = random.Random(first)
    key = rng.randbytes(16)
    iv = rng.randbytes(14) + first.to_bytes(2, "big")
    data = rng.randbytes(1216)
    want = xor(data, srtp_keystream(key, iv, len(data)))
    assert run(aesctr, key, iv, data) == want
    assert run(aesctr, key, iv, data, in_place=True) == want


def test_against_a_known_answer(harness: Any) -> None:
    """FIPS-197 appendix C.1: AES-128 of 00112233..ff under key 00010203..0f
    is 69c4e0d8...; a counter block equal to that plaintext gives it as keystream."""
    key = bytes(range(16))
    iv = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert run(harness, key, iv, bytes(16)) == bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")
