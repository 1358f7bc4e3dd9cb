"""The keystream fill: AES-CM keystream written into the mmapped ``sft_keystream``
map, run by run, by ``bpf/native/keystream.c`` (AES-NI or OpenSSL, GIL released).

Which indices each ring needs is decided by ``bpf/maintenance.py``; a run is
(ring, first SRTP index, count), written as the kernel's reader expects: per
entry the tag is cleared, the bytes and header (ssrc, valid_len) written, and
the tag set last. Requests are ``struct sft_ks_req`` of ``keystream.h`` built
through the compiled module's cffi, entries ``struct sft_keystream`` of
``sft_abi.h``: a layout change is a build error, never a silent misfill.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import Any

from . import abi as abi_mod
from . import libbpf
from .errors import KernelDataPlaneError
from .native.build import BUILD_COMMAND
from .rings import KeystreamRing, KeystreamRun


class NativeKeystreamMissing(KernelDataPlaneError):
    """``sftd.bpf._keystream`` is not built."""


@functools.cache
def native_module() -> Any:
    """The compiled keystream fill (``sftd.bpf._keystream``)."""
    try:
        return importlib.import_module("sftd.bpf._keystream")
    except ImportError as exc:
        raise NativeKeystreamMissing(
            f"the native keystream fill is not built ({exc}): run `{BUILD_COMMAND}` "
            "(scripts/setup.sh does; needs gcc and libssl-dev)") from exc


class KeystreamWriter:
    """Writes runs of keystream into one ``sft_keystream`` map, mmapped."""

    def __init__(self, keystream_map: libbpf.Map, abi: abi_mod.Abi) -> None:
        self._native = native_module()
        entry_size = abi.sizeof("sft_keystream")
        if keystream_map.entry_stride != entry_size:
            raise KernelDataPlaneError(
                f"sft_keystream entries are {keystream_map.entry_stride} bytes in the map but "
                f"{entry_size} in sft_abi.h: rebuild with `make -C bpf`")
        self.entries = keystream_map.max_entries
        self.mm = keystream_map.mmap()
        self._buffer = self._native.ffi.from_buffer(self.mm)
        self._map = self._native.ffi.cast("struct sft_keystream *", self._buffer)

    def write(self, ring: KeystreamRing, indices: range) -> None:
        """The keystream of consecutive indices of one ring (the last ``ring.size`` of
        them if there are more)."""
        if indices:
            self.write_runs([(ring, indices[0], len(indices))])

    def write_runs(self, runs: Sequence[KeystreamRun]) -> None:
        """Every run in one C call; each ring's ``filled_until`` moves past its run."""
        runs = [run for run in runs if run[2] > 0]
        if not runs:
            return
        reqs = self._native.ffi.new("struct sft_ks_req[]", len(runs))
        for i, (ring, first, count) in enumerate(runs):
            req = ring.fill_request or self._request(ring)
            req.first = first
            req.count = count
            reqs[i] = req[0]
        written = self._native.lib.sft_keystream_fill(self._map, self.entries, reqs, len(runs))
        if written < 0:
            raise KernelDataPlaneError(f"native keystream fill failed ({written}): a ring "
                                       "outside the map or an oversized entry; this is a bug")
        for ring, first, count in runs:
            ring.filled_until = first + count

    def _request(self, ring: KeystreamRing) -> Any:
        """The ring's ``struct sft_ks_req`` but for first and count, kept on the ring."""
        ring.fill_request = self._native.ffi.new("struct sft_ks_req *", {
            "base": ring.base, "size": ring.size, "ssrc": ring.ssrc, "length": ring.length,
            "key": list(ring.session.enc_key), "salt": list(ring.session.salt)})
        return ring.fill_request

    def close(self) -> None:
        """Unmaps; the writer is unusable afterwards."""
        self._map = None
        self._native.ffi.release(self._buffer)
        self.mm.close()
