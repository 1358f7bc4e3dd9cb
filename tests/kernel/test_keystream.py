"""The controller's keystream precomputation (bpf/srtp.py, KernelDataPlane rings)
against an independent AES-CTR reference and across ring wrap-around."""

from __future__ import annotations

import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bpf.dataplane import KernelDataPlane, _Ring
from bpf.srtp import SrtpSession


def _ctr_reference(session: SrtpSession, ssrc: int, index: int, length: int) -> bytes:
    """RFC 3711 AES-CM is AES-CTR from IV = (salt << 16) ^ (SSRC << 64) ^ (index << 16)."""
    iv = ((int.from_bytes(session.salt, "big") << 16) ^ (ssrc << 64)
          ^ ((index & 0xFFFFFFFFFFFF) << 16))
    encryptor = Cipher(algorithms.AES(session.enc_key), modes.CTR(iv.to_bytes(16, "big")))
    return encryptor.encryptor().update(bytes(length))


@pytest.mark.parametrize("seed", range(5))
def test_keystream_array_equals_aes_ctr(seed: int) -> None:
    rng = random.Random(seed)
    session = SrtpSession.from_master(rng.randbytes(30))
    ssrc = rng.randrange(1 << 32)
    first = rng.choice([0, 65530, (1 << 48) - 3, rng.randrange(1 << 47)])
    length = rng.choice([16, 100, 512, 1456])
    count = rng.randrange(1, 70)
    stream = session.keystream_array(ssrc, first, count, length)
    assert stream.shape == (count, length)
    for k in range(count):
        assert stream[k].tobytes() == _ctr_reference(session, ssrc, first + k, length)
    assert session.keystreams(ssrc, [first + 3, first], length) == [
        _ctr_reference(session, ssrc, first + 3, length),
        _ctr_reference(session, ssrc, first, length)]


def test_ring_entries_hold_tag_header_and_keystream(dp: KernelDataPlane) -> None:
    """Entries written in a batch that wraps the ring read back as the kernel reads them."""
    session = SrtpSession.from_master(os.urandom(30))
    size, length, ssrc = 32, 512, 0x01020304
    ring = _Ring(base=dp._rings.alloc(size), size=size, ssrc=ssrc, session=session,
                 length=length)
    first = 65536 - 7  # wraps both the 16-bit sequence and the ring
    dp._write_keystream(ring, range(first, first + size))
    assert ring.filled_until == first + size
    stride = dp.maps["sft_keystream"].entry_stride
    off_bytes = dp.abi.ffi.offsetof("struct sft_keystream", "bytes")
    for index in range(first, first + size):
        entry = dp.maps["sft_keystream"].lookup(struct.pack("<I", ring.base + index % size))
        assert entry is not None and len(entry) >= stride - 8
        tag, entry_ssrc, valid_len, pad = struct.unpack_from("<QIHH", entry)
        assert (tag, entry_ssrc, valid_len, pad) == (index + 1, ssrc, length, 0)
        assert entry[off_bytes:off_bytes + length] == _ctr_reference(session, ssrc, index, length)
