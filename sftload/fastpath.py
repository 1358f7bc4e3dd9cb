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

# (leg, datagram, source address, receive time ns, RTP rollover counter,
#  kernel arrival time ns or 0)
Received = tuple[int, bytes, tuple[str, int], int, int, int]


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

    def set_publisher(self, leg: int, pub: Any, master: bytes) -> None:
        """The leg sends ``pub``'s share of the mix (a ``media.Publisher``), protected
        with ``master`` (our SRTP key || salt), from its first due time on."""
        cfg = ffi.new("struct fp_mix_config *")
        s = pub.s
        for name, value in (("index", pub.index), ("audio_ssrc", s.audio_ssrc),
                            ("video_ssrc", s.video_ssrc), ("audio_pt", s.audio_pt),
                            ("video_pt", s.video_pt), ("audio_level_id", s.audio_level_id),
                            ("rid_id", s.rid_id), ("a_seq", pub.a_seq), ("v_seq", pub.v_seq),
                            ("a_ts0", pub.a_ts0), ("v_ts0", pub.v_ts0), ("t0", pub.t0),
                            ("next_audio", pub.next_audio), ("next_video", pub.next_video),
                            ("level_period", pub.level_period),
                            ("level_phase", pub.level_phase)):
            setattr(cfg, name, value)
        if len(master) != lib.FP_MASTER_LEN:
            raise ValueError(f"an SRTP master key and salt of {lib.FP_MASTER_LEN} bytes, "
                             f"not {len(master)}")
        ffi.memmove(cfg.master, master, len(master))
        ffi.memmove(cfg.fill, pub.fill, lib.FP_VIDEO_PAYLOAD)
        err = ffi.new("char[]", 256)
        if lib.fp_set_publisher(self.ctx, leg, cfg, err, 256) != 0:
            raise OSError(f"the fast path cannot publish on leg {leg}: "
                          f"{ffi.string(err).decode()}")

    def request_keyframe(self, leg: int) -> None:
        lib.fp_request_keyframe(self.ctx, leg)

    def pause(self) -> None:
        """No packet is generated until ``resume``."""
        lib.fp_pause(self.ctx)

    def resume(self, start_ns: int) -> None:
        """Every publisher continues its schedule from ``start_ns``."""
        lib.fp_resume(self.ctx, start_ns)

    def generate(self, leg: int) -> tuple[int, int, bytes]:
        """(due ns, kind 0 audio / 1 video, protected packet): the leg's next packet,
        without the threads (for tests)."""
        out = ffi.new("uint8_t[]", lib.FP_TXPKT)
        due, kind = ffi.new("uint64_t *"), ffi.new("int *")
        n = lib.fp_generate(self.ctx, leg, out, lib.FP_TXPKT, due, kind)
        if n < 0:
            raise OSError(f"leg {leg} publishes nothing, or the threads run")
        return int(due[0]), int(kind[0]), bytes(ffi.buffer(out, n))

    def pop(self, samples: bool) -> list[Received]:
        """(leg, datagram, source address, receive time ns, RTP rollover counter,
        kernel arrival time ns or 0)."""
        fn = lib.fp_pop_samples if samples else lib.fp_pop_ctrl
        out: list[Received] = []
        items = self._items
        while True:
            n = fn(self.ctx, items, 256)
            for i in range(n):
                it = items[i]
                addr = socket.inet_ntoa(int(it.addr).to_bytes(4, "little"))
                out.append((int(it.leg), bytes(ffi.buffer(it.data, it.len)),
                            (addr, int(it.port)), int(it.recv_ns), int(it.roc),
                            int(it.kernel_ns)))
            if n < 256:
                return out

    def pop_samples(self) -> list[Received]:
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
            "first_audio_ns", "first_video_ns", "keyframes")}

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
            "tx_wakeups", "tx_hold_over_1ms")}

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
