"""The controller's keystream precomputation (bpf/native/keystream.c and its numpy
fallback in bpf/srtp.py, KernelDataPlane rings) against an independent AES-CTR
reference, against each other byte for byte, and across ring wrap-around."""

from __future__ import annotations

import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sftd.bpf.dataplane import KernelDataPlane, _Ring
from sftd.bpf.srtp import SrtpSession


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


@pytest.mark.parametrize("use_native", [True, False])
def test_ring_entries_hold_tag_header_and_keystream(dp: KernelDataPlane,
                                                    use_native: bool) -> None:
    """Entries written in a batch that wraps the ring read back as the kernel reads them."""
    session = SrtpSession.from_master(os.urandom(30))
    size, length, ssrc = 32, 512, 0x01020304
    ring = _Ring(base=dp._rings.alloc(size), size=size, ssrc=ssrc, session=session,
                 length=length)
    first = 65536 - 7  # wraps both the 16-bit sequence and the ring
    dp.native_keystream = use_native
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


def _entries(dp: KernelDataPlane, base: int, size: int) -> list[bytes]:
    stride = dp.maps["sft_keystream"].entry_stride
    return [bytes(dp._keystream_mm[(base + i) * stride:(base + i + 1) * stride])
            for i in range(size)]


def test_native_keystream_is_built() -> None:
    """scripts/setup.sh builds bpf/_keystream*.so; without it the controller falls back
    to numpy at several µs per entry (a warning, not an error, in production)."""
    from sftd.bpf import native

    assert native.keystream() is not None, "run: .venv/bin/python -m sftd.bpf.native.build"


@pytest.mark.parametrize("seed", range(3))
def test_native_and_numpy_entries_identical(dp: KernelDataPlane, seed: int) -> None:
    """Every byte of every entry (tag, header, keystream, untouched tail) is the same
    whether the native fill or the numpy fallback wrote it: single runs and batches of
    several rings, entry lengths, ring wrap, 16-bit and 48-bit index wrap, oversize runs."""
    from sftd.bpf import native

    if native.keystream() is None:
        pytest.fail("native keystream fill not built")
    rng = random.Random(seed)
    stride = dp.maps["sft_keystream"].entry_stride
    off_bytes = dp.abi.ffi.offsetof("struct sft_keystream", "bytes")
    pairs = []
    for length, size in ((512, 32), (1456, 128), (100, 8), (1456, 4), (17, 16), (512, 1)):
        session = SrtpSession.from_master(rng.randbytes(30))
        ssrc = rng.randrange(1 << 32)
        rings = [_Ring(base=dp._rings.alloc(size), size=size, ssrc=ssrc, session=session,
                       length=length) for _ in range(2)]
        for ring in rings:  # garbage beyond valid_len must stay as it was
            for i in range(size):
                off = (ring.base + i) * stride
                dp._keystream_mm[off:off + stride] = bytes([0xA5]) * stride
        pairs.append(rings)
    firsts = [0, 65536 - 5, (1 << 48) - 3, rng.randrange(1 << 47)]
    for round_ in range(4):
        jobs_native, jobs_numpy = [], []
        for native_ring, numpy_ring in pairs:
            first = rng.choice(firsts) + round_
            count = rng.randrange(0, native_ring.size + 1)
            jobs_native.append((native_ring, first, count))
            jobs_numpy.append((numpy_ring, first, count))
        if round_ == 3:  # single-ring path, more indices than the ring holds
            for (native_ring, first, _c), (numpy_ring, _f, _c2) in zip(jobs_native, jobs_numpy):
                indices = range(first, first + native_ring.size + 3)
                dp.native_keystream = True
                dp._write_keystream(native_ring, indices)
                dp.native_keystream = False
                dp._write_keystream(numpy_ring, indices)
        else:
            dp.native_keystream = True
            dp._write_keystreams(jobs_native)
            dp.native_keystream = False
            dp._write_keystreams(jobs_numpy)
        dp.native_keystream = True
        for native_ring, numpy_ring in pairs:
            assert native_ring.filled_until == numpy_ring.filled_until
            assert (_entries(dp, native_ring.base, native_ring.size)
                    == _entries(dp, numpy_ring.base, numpy_ring.size)), (round_,
                                                                        native_ring.length)
    # and both against the reference, for the last round's entries
    for native_ring, _numpy_ring in pairs:
        index = native_ring.filled_until - 1
        entry = _entries(dp, native_ring.base, native_ring.size)[index % native_ring.size]
        assert struct.unpack_from("<QIHH", entry) == (index + 1, native_ring.ssrc,
                                                      native_ring.length, 0)
        assert entry[off_bytes:off_bytes + native_ring.length] == _ctr_reference(
            native_ring.session, native_ring.ssrc, index, native_ring.length)


def test_fallback_without_native_module(dp: KernelDataPlane, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Without bpf/_keystream*.so the numpy path writes the same entries, and says so."""
    import sys

    from sftd.bpf import native

    native.keystream.cache_clear()
    dp._ks_native = None
    monkeypatch.setitem(sys.modules, "sftd.bpf._keystream", None)  # import raises ImportError
    try:
        with caplog.at_level("WARNING", logger="sftd.bpf.native"):
            assert native.keystream() is None
        assert "numpy fallback" in caplog.text
        session = SrtpSession.from_master(os.urandom(30))
        ring = _Ring(base=dp._rings.alloc(8), size=8, ssrc=7, session=session, length=512)
        dp._write_keystreams([(ring, 65534, 8)])
        assert dp._ks_native is None and ring.filled_until == 65542
        off_bytes = dp.abi.ffi.offsetof("struct sft_keystream", "bytes")
        for index in range(65534, 65542):
            entry = _entries(dp, ring.base, 8)[index % 8]
            assert struct.unpack_from("<QIHH", entry) == (index + 1, 7, 512, 0)
            assert entry[off_bytes:off_bytes + 512] == _ctr_reference(session, 7, index, 512)
    finally:
        monkeypatch.undo()
        native.keystream.cache_clear()
        dp._ks_native = None


@pytest.mark.parametrize("aesni", [1, 0])
def test_native_aes_implementations_equal_reference(aesni: int) -> None:
    """The AES-NI and the OpenSSL EVP code of keystream.c, on a plain buffer: random
    rings, lengths (partial last blocks too), counts past the ring size, index wraps."""
    from sftd.bpf import native

    mod = native.keystream()
    if mod is None:
        pytest.fail("native keystream fill not built")
    req = struct.Struct("<QIIIIII16s14s2x")
    assert req.size == mod.ffi.sizeof("struct sft_ks_req")
    previous = mod.lib.sft_keystream_use_aesni(-1)
    stride, off, entries = 1472, 16, 256
    buf = bytearray(stride * entries)
    rng = random.Random(aesni)
    try:
        if mod.lib.sft_keystream_use_aesni(aesni) != aesni:
            pytest.skip("no AES-NI on this CPU")
        for _ in range(60):
            session = SrtpSession.from_master(rng.randbytes(30))
            ssrc, size = rng.randrange(1 << 32), rng.choice([1, 4, 32])
            base = rng.randrange(entries - size + 1) & ~(size - 1)
            first = rng.choice([0, 65530, (1 << 48) - 3, rng.randrange(1 << 47)])
            count, length = rng.randrange(size + 3), rng.choice([1, 17, 100, 512, 1456])
            written = mod.lib.sft_keystream_fill(
                mod.ffi.from_buffer(buf), stride, off, entries,
                req.pack(first, base, size, ssrc, count, length, 0, session.enc_key,
                         session.salt), 1)
            kept = min(count, size)
            assert written == kept
            for index in range(first + count - kept, first + count):
                e = (base + index % size) * stride
                assert struct.unpack_from("<QIHH", buf, e) == (index + 1, ssrc, length, 0)
                assert buf[e + off:e + off + length] == _ctr_reference(session, ssrc, index,
                                                                       length)
        assert mod.lib.sft_keystream_fill(mod.ffi.from_buffer(buf), stride, off, entries,
                                          req.pack(0, entries - 2, 4, 1, 1, 16, 0,
                                                   bytes(16), bytes(14)), 1) == -1
    finally:
        mod.lib.sft_keystream_use_aesni(previous)
