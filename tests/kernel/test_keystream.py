"""The controller's keystream precomputation (bpf/native/keystream.c through
bpf/keystream.py, KernelDataPlane rings) against an independent AES-CTR reference,
byte for byte, across ring and index wrap-around; and the clear error when the
native module is not built."""

from __future__ import annotations

import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sftd.bpf.dataplane import KernelDataPlane
from sftd.bpf.rings import KeystreamRing, KeystreamRun
from sftd.bpf.srtp import SrtpSession

_ENTRY_HEADER = struct.Struct("<QIHH")  # index_tag, ssrc, valid_len, pad: test_abi checks it


def _ctr_reference(session: SrtpSession, ssrc: int, index: int, length: int) -> bytes:
    """RFC 3711 AES-CM is AES-CTR from IV = (salt << 16) ^ (SSRC << 64) ^ (index << 16)."""
    iv = ((int.from_bytes(session.salt, "big") << 16) ^ (ssrc << 64)
          ^ ((index & 0xFFFFFFFFFFFF) << 16))
    encryptor = Cipher(algorithms.AES(session.enc_key), modes.CTR(iv.to_bytes(16, "big")))
    return encryptor.encryptor().update(bytes(length))


@pytest.mark.parametrize("seed", range(5))
def test_session_keystream_equals_aes_ctr(seed: int) -> None:
    rng = random.Random(seed)
    session = SrtpSession.from_master(rng.randbytes(30))
    ssrc = rng.randrange(1 << 32)
    length = rng.choice([16, 100, 512, 1456])
    for index in (0, 65535, 65536, (1 << 48) - 1, 1 << 48, rng.randrange(1 << 47)):
        assert session.keystream(ssrc, index, length) == _ctr_reference(session, ssrc, index,
                                                                         length)


def _ring(dp: KernelDataPlane, size: int, length: int, ssrc: int,
          session: SrtpSession) -> KeystreamRing:
    return KeystreamRing(base=dp._rings.alloc(size), size=size, ssrc=ssrc, session=session,
                         length=length)


def _entries(dp: KernelDataPlane, base: int, size: int) -> list[bytes]:
    stride = dp.maps["sft_keystream"].entry_stride
    mm = dp._keystream.mm
    return [bytes(mm[(base + i) * stride:(base + i + 1) * stride]) for i in range(size)]


def test_ring_entries_hold_tag_header_and_keystream(dp: KernelDataPlane) -> None:
    """Entries written in a batch that wraps the ring read back as the kernel reads them."""
    session = SrtpSession.from_master(os.urandom(30))
    size, length, ssrc = 32, 512, 0x01020304
    ring = _ring(dp, size, length, ssrc, session)
    first = 65536 - 7  # wraps both the 16-bit sequence and the ring
    dp._keystream.write(ring, range(first, first + size))
    assert ring.filled_until == first + size
    stride = dp.maps["sft_keystream"].entry_stride
    off_bytes = dp.abi.ffi.offsetof("struct sft_keystream", "bytes")
    for index in range(first, first + size):
        entry = dp.maps["sft_keystream"].lookup(struct.pack("<I", ring.base + index % size))
        assert entry is not None and len(entry) >= stride - 8
        assert _ENTRY_HEADER.unpack_from(entry) == (index + 1, ssrc, length, 0)
        assert entry[off_bytes:off_bytes + length] == _ctr_reference(session, ssrc, index, length)


def test_native_keystream_is_built() -> None:
    """scripts/setup.sh builds bpf/_keystream*.so; the kernel plane needs it."""
    from sftd.bpf.keystream import native_module

    assert native_module() is not None, "run: .venv/bin/python -m sftd.bpf.native.build"


def _expected(before: bytes, ring: KeystreamRing, index: int, off_bytes: int) -> bytes:
    """An entry after writing ``index`` into it: header and ``length`` bytes of
    keystream; the bytes past them as they were."""
    head = _ENTRY_HEADER.pack(index + 1, ring.ssrc, ring.length, 0)
    stream = _ctr_reference(ring.session, ring.ssrc, index, ring.length)
    return (head + before[len(head):off_bytes] + stream
            + before[off_bytes + ring.length:])


@pytest.mark.parametrize("seed", range(3))
def test_batched_runs_write_exactly_the_reference(dp: KernelDataPlane, seed: int) -> None:
    """Every byte of every entry (tag, header, keystream, untouched tail) is what the
    reference says after batches of several rings: entry lengths, ring wrap, 16-bit
    and 48-bit index wrap, empty runs and runs longer than the ring."""
    rng = random.Random(seed)
    stride = dp.maps["sft_keystream"].entry_stride
    off_bytes = dp.abi.ffi.offsetof("struct sft_keystream", "bytes")
    mm = dp._keystream.mm
    rings = []
    for length, size in ((512, 32), (1456, 128), (100, 8), (1456, 4), (17, 16), (512, 1)):
        ring = _ring(dp, size, length, rng.randrange(1 << 32),
                     SrtpSession.from_master(rng.randbytes(30)))
        mm[ring.base * stride:(ring.base + size) * stride] = bytes([0xA5]) * (size * stride)
        rings.append(ring)
    firsts = [0, 65536 - 5, (1 << 48) - 3, rng.randrange(1 << 47)]
    for round_ in range(4):
        runs: list[KeystreamRun] = []
        for ring in rings:
            first = rng.choice(firsts) + round_
            count = rng.randrange(0, ring.size + 1) if round_ < 3 else ring.size + 3
            runs.append((ring, first, count))
        before = {ring.base: _entries(dp, ring.base, ring.size) for ring in rings}
        if round_ == 3:  # one run per call, more indices than the ring holds
            for ring, first, count in runs:
                dp._keystream.write(ring, range(first, first + count))
        else:
            dp._keystream.write_runs(runs)
        for ring, first, count in runs:
            expected = list(before[ring.base])
            for index in range(max(first, first + count - ring.size), first + count):
                slot = index % ring.size
                expected[slot] = _expected(before[ring.base][slot], ring, index, off_bytes)
            assert _entries(dp, ring.base, ring.size) == expected, (round_, ring.length)
            if count:
                assert ring.filled_until == first + count


def test_missing_native_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without bpf/_keystream*.so the kernel plane is unavailable, and says how to build it."""
    import sys

    from sftd.bpf import keystream
    from sftd.bpf.dataplane import kernel_available

    keystream.native_module.cache_clear()
    monkeypatch.setitem(sys.modules, "sftd.bpf._keystream", None)  # import raises ImportError
    try:
        with pytest.raises(keystream.NativeKeystreamMissing, match="python -m sftd.bpf.native"):
            keystream.native_module()
        ok, reason = kernel_available()
        assert not ok and "python -m sftd.bpf.native.build" in reason
    finally:
        monkeypatch.undo()
        keystream.native_module.cache_clear()


@pytest.mark.parametrize("aesni", [1, 0])
def test_native_aes_implementations_equal_reference(aesni: int) -> None:
    """The AES-NI and the OpenSSL EVP code of keystream.c, on a plain array of
    ``struct sft_keystream``: random rings, lengths (partial last blocks too), counts
    past the ring size, index wraps; a ring outside the array is refused."""
    from sftd.bpf import abi as abi_mod
    from sftd.bpf.keystream import native_module

    mod = native_module()
    ffi, abi_ffi = mod.ffi, abi_mod.load().ffi
    entries = 256
    stride = abi_ffi.sizeof("struct sft_keystream")
    off = abi_ffi.offsetof("struct sft_keystream", "bytes")
    raw = bytearray(entries * stride)
    buf = ffi.cast("struct sft_keystream *", ffi.from_buffer(raw))
    req = ffi.new("struct sft_ks_req *")

    def fill(first: int, base: int, size: int, ssrc: int, count: int, length: int,
             session: SrtpSession) -> int:
        req.first, req.base, req.size, req.ssrc = first, base, size, ssrc
        req.count, req.length = count, length
        ffi.memmove(req.key, session.enc_key, 16)
        ffi.memmove(req.salt, session.salt, 14)
        return int(mod.lib.sft_keystream_fill(buf, entries, req, 1))

    previous = mod.lib.sft_keystream_use_aesni(-1)
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
            kept = min(count, size)
            assert fill(first, base, size, ssrc, count, length, session) == kept
            for index in range(first + count - kept, first + count):
                e = (base + index % size) * stride
                assert _ENTRY_HEADER.unpack_from(raw, e) == (index + 1, ssrc, length, 0)
                assert raw[e + off:e + off + length] == _ctr_reference(session, ssrc, index,
                                                                       length)
        zero = SrtpSession(bytes(16), bytes(20), bytes(14))
        assert fill(0, entries - 2, 4, 1, 1, 16, zero) == -1
        assert fill(0, 0, 4, 1, 1, stride, zero) == -3  # longer than an entry's bytes
    finally:
        mod.lib.sft_keystream_use_aesni(previous)
