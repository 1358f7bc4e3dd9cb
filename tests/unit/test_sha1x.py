"""The native engine's multi-lane HMAC-SHA1 (engine/src/sha1x.c) equals HMAC-SHA1
(Python's hmac, OpenSSL underneath) for every lane: each lane has its own key
and message, all lengths 0..1500 (every padding case of the final blocks) and
lane counts that leave an odd copy out. The module is built here from the
engine's source, with the key pads hashed by OpenSSL as srtp.c hashes them."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from typing import Any

import pytest

from tests import native_harness

# As srtp_ctx_init: SHA-1 states after the key's ipad and opad blocks.
HARNESS = r"""
#define OPENSSL_SUPPRESS_DEPRECATED
#include <string.h>
#include <openssl/sha.h>
#include "sha1x.h"

static void pad_state(const uint8_t *key, size_t key_len, uint8_t xor, uint32_t h[5])
{
	uint8_t pad[64];
	SHA_CTX c;

	for (int i = 0; i < 64; i++)
		pad[i] = (uint8_t)(((size_t)i < key_len ? key[i] : 0) ^ xor);
	SHA1_Init(&c);
	SHA1_Update(&c, pad, sizeof(pad));
	h[0] = c.h0, h[1] = c.h1, h[2] = c.h2, h[3] = c.h3, h[4] = c.h4;
}

void hmac_key(const uint8_t *key, size_t key_len, struct sha1x_hmac_key *out)
{
	pad_state(key, key_len, 0x36, out->inner);
	pad_state(key, key_len, 0x5c, out->outer);
}

int supported(void) { return sha1x_supported(); }
"""
CDEF = """
#define SHA1X_DIGEST 20
struct sha1x_hmac_key { uint32_t inner[5], outer[5]; };
void hmac_key(const uint8_t *key, size_t key_len, struct sha1x_hmac_key *out);
int supported(void);
void sha1x_hmac(size_t n, const struct sha1x_hmac_key *const key[],
                const uint8_t *const msg[], size_t len, uint8_t digest[][SHA1X_DIGEST]);
"""
LANE_COUNTS = (1, 2, 3, 5)  # SHA1X_LANES is 2: whole groups and an odd copy out


@pytest.fixture(scope="module")
def sha1x(tmp_path_factory: pytest.TempPathFactory) -> Any:
    module = native_harness.build("sha1x_harness", CDEF, HARNESS, ("sha1x.c",),
                                  tmp_path_factory.mktemp("sha1x"), libraries=("crypto",))
    if not module.lib.supported():
        pytest.skip("CPU without SHA-NI: the engine uses OpenSSL's SHA-1")
    return module


def lane_hmacs(sha1x: Any, keys: list[bytes], messages: list[bytes]) -> list[bytes]:
    ffi, lib = sha1x.ffi, sha1x.lib
    n = len(keys)
    states = ffi.new("struct sha1x_hmac_key[]", n)
    for i, key in enumerate(keys):
        lib.hmac_key(key, len(key), ffi.addressof(states, i))
    key_ptrs = ffi.new("const struct sha1x_hmac_key *[]", [ffi.addressof(states, i)
                                                           for i in range(n)])
    buffers = [ffi.from_buffer(m) for m in messages]
    msg_ptrs = ffi.new("const uint8_t *[]", buffers)
    digests = ffi.new("uint8_t[][20]", n)
    lib.sha1x_hmac(n, key_ptrs, msg_ptrs, len(messages[0]), digests)
    return [bytes(ffi.buffer(digests[i])) for i in range(n)]


def test_every_lane_is_hmac_sha1_for_all_lengths(sha1x: Any) -> None:
    rng = random.Random(1)
    for length in range(0, 1501):
        lanes = LANE_COUNTS[length % len(LANE_COUNTS)]
        keys = [rng.randbytes(20) for _ in range(lanes)]
        messages = [rng.randbytes(length) for _ in range(lanes)]
        got = lane_hmacs(sha1x, keys, messages)
        want = [hmac.new(k, m, hashlib.sha1).digest() for k, m in zip(keys, messages)]
        assert got == want, f"length {length}, {lanes} lanes"


@pytest.mark.parametrize("lanes", LANE_COUNTS)
def test_lanes_do_not_mix_keys_or_messages(sha1x: Any, lanes: int) -> None:
    """One key for all lanes and messages one bit apart: a lane that read its
    neighbour's data or state would give the neighbour's digest."""
    key = os.urandom(20)
    base = bytearray(os.urandom(1216))
    messages = []
    for i in range(lanes):
        m = bytearray(base)
        m[(i * 397) % len(m)] ^= 1 << (i % 8)
        messages.append(bytes(m))
    got = lane_hmacs(sha1x, [key] * lanes, messages)
    assert got == [hmac.new(key, m, hashlib.sha1).digest() for m in messages]
    assert len(set(got)) == lanes
