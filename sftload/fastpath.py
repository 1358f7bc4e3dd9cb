"""The native fast path (``native/fastpath.c``) through cffi.

Built by ``python -m sftd.sftload.native.build`` (scripts/setup.sh); if the module is
missing and a C compiler is present it is built on first import.
"""

from __future__ import annotations

import importlib
import logging
import socket
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sftd.sftload.fastpath")


def _load() -> tuple[Any, Any]:
    try:
        mod = importlib.import_module("sftd.sftload._fastpath")
    except ImportError:
        from .native import build

        log.info("building the native fast path (sftload/native/fastpath.c)")
        build.build()
        importlib.invalidate_caches()
        mod = importlib.import_module("sftd.sftload._fastpath")
    return mod.ffi, mod.lib


ffi, lib = _load()


@dataclass
class SlotStat:
    ssrc: int
    kind: int
    packets: int
    ext_max: int
    base: int
    reordered: int
    started: bool


class FastPath:
    """One sender/receiver context: two C threads over many legs' sockets."""

    def __init__(self, sample_every: int = 100) -> None:
        self.ctx = lib.fp_new(sample_every, -1, -1)
        if self.ctx == ffi.NULL:
            raise OSError("fp_new failed")
        self._items = ffi.new("struct fp_item[]", 256)
        self._slots = ffi.new("struct fp_slot_stat[]", lib.FP_MAXSLOTS)
        self._csrcs = ffi.new("struct fp_csrc_stat[]", lib.FP_MAXCSRC)
        self._leg_stat = ffi.new("struct fp_leg_stat *")
        self._gstat = ffi.new("struct fp_global_stat *")
        self.started = False

    @property
    def ctrl_fd(self) -> int:
        return int(lib.fp_ctrl_fd(self.ctx))

    def start(self) -> None:
        if lib.fp_start(self.ctx) != 0:
            raise OSError("fp_start failed")
        self.started = True

    def add_leg(self, fd: int, peer: tuple[str, int]) -> int:
        addr = int.from_bytes(socket.inet_aton(peer[0]), "little")  # network order in memory
        leg = lib.fp_add_leg(self.ctx, fd, addr, peer[1])
        if leg < 0:
            raise OSError("too many legs for the fast path")
        return int(leg)

    def add_slot(self, leg: int, ssrc: int, kind: int) -> None:
        if lib.fp_add_slot(self.ctx, leg, ssrc, kind) != 0:
            raise OSError("too many slots on one leg")

    def enable(self, leg: int, on: bool = True) -> None:
        lib.fp_leg_enable(self.ctx, leg, 1 if on else 0)

    def push(self, leg: int, due_ns: int, kind: int, data: bytes) -> bool:
        return lib.fp_push(self.ctx, leg, due_ns, kind, data, len(data)) == 0

    def pending(self) -> int:
        return int(lib.fp_tx_pending_total(self.ctx))

    def pop(self, samples: bool) -> list[tuple[int, bytes, tuple[str, int], int, int]]:
        """(leg, datagram, source address, receive time ns, RTP rollover counter)."""
        fn = lib.fp_pop_samples if samples else lib.fp_pop_ctrl
        out: list[tuple[int, bytes, tuple[str, int], int, int]] = []
        items = self._items
        while True:
            n = fn(self.ctx, items, 256)
            for i in range(n):
                it = items[i]
                addr = socket.inet_ntoa(int(it.addr).to_bytes(4, "little"))
                out.append((int(it.leg), bytes(ffi.buffer(it.data, it.len)),
                            (addr, int(it.port)), int(it.recv_ns), int(it.roc)))
            if n < 256:
                return out

    def pop_samples(self) -> list[tuple[int, bytes, tuple[str, int], int, int]]:
        """The sampled RTP, as ``pop``; the ROC from the receiver's extended
        sequence numbers, right when it receives every packet (XdpSink's own)."""
        return self.pop(samples=True)

    def refresh(self) -> None:
        """Nothing to do: the receiver's counts are read live (XdpSink reads its maps)."""

    def leg_stat(self, leg: int) -> dict[str, int]:
        st = self._leg_stat
        lib.fp_leg_stat(self.ctx, leg, st)
        return {name: int(getattr(st, name)) for name in (
            "tx_audio", "tx_video", "tx_bytes", "tx_errors", "tx_retries", "tx_last_errno",
            "rx_rtp", "rx_bytes",
            "rx_ctrl", "rx_rtcp", "rx_unknown_ssrc", "rx_no_csrc", "rx_csrc_overflow",
            "first_audio_ns", "first_video_ns")}

    def slot_stats(self, leg: int) -> list[SlotStat]:
        n = lib.fp_slot_stats(self.ctx, leg, self._slots, lib.FP_MAXSLOTS)
        return [SlotStat(int(s.ssrc), int(s.kind), int(s.packets), int(s.ext_max), int(s.base),
                         int(s.reordered), bool(s.started))
                for s in (self._slots[i] for i in range(n))]

    def csrc_stats(self, leg: int) -> dict[tuple[int, int], int]:
        n = lib.fp_csrc_stats(self.ctx, leg, self._csrcs, lib.FP_MAXCSRC)
        return {(int(self._csrcs[i].kind), int(self._csrcs[i].csrc)): int(self._csrcs[i].packets)
                for i in range(n)}

    def global_stat(self) -> dict[str, int]:
        st = self._gstat
        lib.fp_global_stat(self.ctx, st)
        return {name: int(getattr(st, name)) for name in (
            "tx_packets", "tx_late_sum_ns", "tx_late_max_ns", "tx_late_over_1ms", "rx_batches",
            "rx_datagrams", "ctrl_dropped", "samples_taken", "samples_dropped", "rx_wakeups",
            "tx_wakeups")}

    def stop(self) -> None:
        if self.started:
            lib.fp_stop(self.ctx)
            self.started = False

    def close(self) -> None:
        if self.ctx is not None and self.ctx != ffi.NULL:
            lib.fp_free(self.ctx)
            self.ctx = None


def now_ns() -> int:
    return int(lib.fp_now_ns())
