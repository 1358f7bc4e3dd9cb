"""The native data plane: ``controller.dataplane.DataPlane`` on the C engine of
``engine/src`` (SRTP with OpenSSL, worker threads on the legs' UDP sockets).

Per-packet semantics are the userspace plane's (``controller/userspace.py``), which
the differential test checks byte for byte. What differs is where packets go:
when a leg is added, the engine takes over receiving on the leg's socket (the
event loop stops reading it); its workers handle SRTP media from the
ICE-validated address and hand every other datagram (STUN, DTLS, RTCP, media from
another address) back to the leg's socket protocol through an upcall queue the
event loop reads, so ICE consent, DTLS and RTCP work as before. Python keeps
sending its own packets on the same socket.

All legs of a conference share one worker (a conference's media state has one
writer, no locks); conferences are spread over the workers.

I/O (``io``): ``udp`` receives and sends on the legs' sockets; ``xdp`` adds
AF_XDP (``engine/xdp_io.py``): legs' RTP is steered into AF_XDP ports and copies
leave from UMEM frames, while everything else still comes by the sockets;
``auto`` is xdp when it can attach on every interface, else udp, with the reason
logged.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sftd.controller.dataplane import (
    LAYER_PAUSED_AFTER,
    MAX_SSRCS_PER_LEG,
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES_CM_128_HMAC_SHA1_80,
    UNVALIDATED_SOURCE,
    Counter,
    Layer,
    LegMedia,
    LegSpec,
    ReceiveStats,
    SlotSource,
    StreamKind,
)
from sftd.engine.xdp_io import XdpIo, XdpIoUnavailable

log = logging.getLogger("sftd.native")

BUILD_COMMAND = "python -m sftd.engine.build"
LEVEL_STALE_NS = 1_000_000_000  # no audio for this long counts as silence (as userspace)
AUDIO_LEVEL_SILENT = 127.0
UPCALLS_PER_WAKEUP = 4096  # the rings hold 256 per worker; a bound against a busy loop
# Transport-wide feedback written per engine call; a round that needs more (a
# leg's arrivals far apart in time) takes more calls.
FEEDBACK_PACKETS_PER_CALL = 64


class EngineUnavailable(RuntimeError):
    """The compiled engine is missing or cannot start."""


@functools.cache
def _module() -> Any:
    try:
        return importlib.import_module("sftd.engine._engine")
    except ImportError as exc:
        raise EngineUnavailable(
            f"the native engine is not built ({exc}); build it with '{BUILD_COMMAND}' "
            "(needs gcc and libssl-dev), or run --dataplane userspace") from exc


def native_available() -> tuple[bool, str]:
    """Whether the compiled engine can be loaded, and why not."""
    try:
        _module()
    except EngineUnavailable as exc:
        return False, str(exc)
    return True, ""


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) or 1


PROFILE_IDS = {SRTP_AES_CM_128_HMAC_SHA1_80: 1, SRTP_AEAD_AES_128_GCM: 2,
               SRTP_AEAD_AES_256_GCM: 3}


@dataclass
class _Leg:
    spec: LegSpec
    handle: Any  # struct sfte_leg *
    worker: int
    n_slots: tuple[int, int]  # audio, video
    transport: asyncio.DatagramTransport | None
    local: tuple[str, int]  # the steered 5-tuple (xdp I/O)
    remote: tuple[str, int]
    taken_fd: int = -1  # the event loop stopped reading this fd for the engine
    loop: asyncio.AbstractEventLoop | None = None


@dataclass
class _Placement:
    """Which worker serves a conference, and how many of its legs are live."""

    worker: int
    legs: int = 0


@dataclass
class _Stats:
    userspace_media: int = 0  # media of a live leg that reached the event loop
    unvalidated: int = 0
    upcalls_undeliverable: int = 0  # for a leg whose socket is gone
    streams_refused: int = 0
    by_worker: list[int] = field(default_factory=list)  # live legs per worker


IO_CHOICES = ("auto", "xdp", "udp")


class NativeDataPlane:
    name: str = "native"
    srtp_profiles: tuple[str, ...] = (SRTP_AES_CM_128_HMAC_SHA1_80, SRTP_AEAD_AES_128_GCM,
                                      SRTP_AEAD_AES_256_GCM)

    def __init__(self, *, workers: int | None = None,
                 slot_initial_index: Callable[[], int] | None = None,
                 slot_initial_ts: Callable[[], int] | None = None,
                 fixed_ts_gap: Mapping[StreamKind, int] | None = None,
                 layer_paused_after: float = LAYER_PAUSED_AFTER,
                 dry_run: bool = False, io: str = "udp", interfaces: Sequence[str] = (),
                 media_ports: tuple[int, int] = (1, 65535), instance: str = "default") -> None:
        """``workers``: engine threads (default and cap: the CPUs this process may
        use); 0 runs everything in the caller's thread (tests, benchmarks).
        ``slot_initial_index``/``slot_initial_ts``: as UserspaceDataPlane's hooks;
        ``fixed_ts_gap``: timestamp gap per kind at a source switch instead of the
        wall-clock gap (UserspaceDataPlane's ``switch_ts_gap`` as constants);
        ``dry_run``: build and protect copies but do not send them (benchmarks).
        ``io``: one of IO_CHOICES; ``interfaces``, ``media_ports`` and ``instance``
        (its pins' names) are what the xdp I/O attaches to."""
        mod = _module()
        self._ffi, self._lib = mod.ffi, mod.lib
        if io not in IO_CHOICES:
            raise ValueError(f"native I/O {io!r} is none of {', '.join(IO_CHOICES)}")
        cpus = usable_cpus()
        if workers is None or workers > cpus:
            workers = cpus
        self.workers = max(0, workers)
        gaps = fixed_ts_gap or {}
        err = self._ffi.new("char[256]")

        def new_engine() -> Any:
            engine = self._lib.sfte_new(self.workers, int(layer_paused_after * 1e9),
                                        gaps.get(StreamKind.AUDIO, 0),
                                        gaps.get(StreamKind.VIDEO, 0), int(dry_run), err, 256)
            if engine == self._ffi.NULL:
                raise EngineUnavailable(self._ffi.string(err).decode())
            return engine

        self._engine = new_engine()
        self._xdp: XdpIo | None = None
        self.io, self.io_reason = "udp", "--native-io udp"
        if io != "udp":
            try:
                self._xdp = XdpIo(self._ffi, self._lib, self._engine,
                                  interfaces=tuple(interfaces), media_ports=media_ports,
                                  instance=instance, workers=self.workers)
                self.io = "xdp"
                self.io_reason = f"AF_XDP on {self._xdp.summary}"
            except XdpIoUnavailable as exc:
                self._lib.sfte_free(self._engine)  # with any port it had been given
                if io == "xdp":
                    self._engine = None
                    raise EngineUnavailable(f"--native-io xdp: {exc} (--native-io udp runs "
                                            "on the legs' sockets instead)") from exc
                self._engine = new_engine()
                self.io_reason = f"AF_XDP unavailable: {exc}"
        self._slot_initial_index = slot_initial_index
        self._slot_initial_ts = slot_initial_ts
        self._legs: dict[int, _Leg] = {}
        self._retiring: dict[int, _Leg] = {}  # removed, until the worker lets go
        self._conferences: dict[int, _Placement] = {}
        self._conference_base: dict[int, int] = {}  # counts before reset_conference
        self._stats = _Stats(by_worker=[0] * max(1, self.workers))
        self._upcall = self._ffi.new("struct sfte_upcall *")
        self._upcall_loop: asyncio.AbstractEventLoop | None = None
        self._err = err
        self._feedback_out: Any = None  # uint8_t[], uint16_t[]: transport_feedback's
        self._feedback_lens: Any = None
        log.info("native data plane: %s; I/O %s (%s)",
                 f"{self.workers} worker threads" if self.workers else
                 "inline (no worker threads)", self.io, self.io_reason)

    # ----------------------------------------------------------------- verbs
    def add_leg(self, spec: LegSpec) -> None:
        if spec.srtp.profile not in PROFILE_IDS:
            raise ValueError(f"SRTP profile {spec.srtp.profile} not supported by {self.name}")
        if spec.leg_id in self._legs:
            raise ValueError(f"leg {spec.leg_id} is already added")
        self._reap()
        cfg = self._ffi.new("struct sfte_leg_config *")
        cfg.leg_id = spec.leg_id
        cfg.conference_id = spec.conference_id
        cfg.remote_host = spec.remote_addr[0].encode()
        cfg.remote_port = spec.remote_addr[1]
        cfg.profile = PROFILE_IDS[spec.srtp.profile]
        if len(spec.srtp.rx) != len(spec.srtp.tx) or len(spec.srtp.rx) > 64:
            raise ValueError(f"leg {spec.leg_id}: SRTP master keys of {len(spec.srtp.rx)} and "
                             f"{len(spec.srtp.tx)} bytes")
        cfg.rx_master = spec.srtp.rx
        cfg.tx_master = spec.srtp.tx
        cfg.master_len = len(spec.srtp.rx)
        ssrcs = (*spec.audio_slot_ssrcs, *spec.video_slot_ssrcs)
        if len(ssrcs) > self._lib.SFTE_MAX_SLOTS:
            raise ValueError(f"leg {spec.leg_id}: {len(ssrcs)} slots, the native plane takes "
                             f"at most {self._lib.SFTE_MAX_SLOTS}")
        cfg.audio_slots = len(spec.audio_slot_ssrcs)
        cfg.video_slots = len(spec.video_slot_ssrcs)
        for i, ssrc in enumerate(ssrcs):  # audio slots then video slots, as userspace
            cfg.slot_ssrc[i] = ssrc
            first = (self._slot_initial_index() if self._slot_initial_index is not None
                     else random.randrange(1 << 16) + 1)
            cfg.slot_last_seq[i] = (first - 1) & 0xFFFF
            cfg.slot_last_ts[i] = (self._slot_initial_ts() if self._slot_initial_ts is not None
                                   else random.randrange(1 << 32)) & 0xFFFFFFFF
        ext = spec.extensions
        cfg.ext_audio_level = max(0, min(255, ext.audio_level))
        cfg.ext_rid = max(0, min(255, ext.rid))
        cfg.ext_frame_descriptor = max(0, min(255, ext.frame_descriptor))
        cfg.ext_transport_cc = max(0, min(255, ext.transport_cc))
        fd, loop = self._socket_of(spec.transport)
        cfg.fd = fd
        cfg.take_receive = int(self.workers > 0 and loop is not None)
        if self._xdp is not None:
            self._xdp.fill_path(cfg.path, spec.local_addr, spec.remote_addr)
        placement = self._conferences.get(spec.conference_id)
        candidates = self._xdp.workers if self._xdp is not None else \
            range(len(self._stats.by_worker))
        worker = placement.worker if placement is not None else \
            min(candidates, key=self._stats.by_worker.__getitem__)
        handle = self._lib.sfte_leg_new(self._engine, cfg, worker, self._err, 256)
        if handle == self._ffi.NULL:
            raise ValueError(self._ffi.string(self._err).decode())
        leg = _Leg(spec, handle, worker, (len(spec.audio_slot_ssrcs), len(spec.video_slot_ssrcs)),
                   spec.transport, spec.local_addr, spec.remote_addr)
        if cfg.take_receive:
            self._take_receive(leg, loop)
        self._conferences.setdefault(spec.conference_id, _Placement(worker)).legs += 1
        self._stats.by_worker[worker] += 1
        self._legs[spec.leg_id] = leg
        self._lib.sfte_add_leg(self._engine, handle)
        if self._xdp is not None:  # after the engine knows the leg: its RTP has a home
            self._xdp.register(spec.leg_id, leg.local, leg.remote)

    def update_leg_address(self, leg_id: int, remote_addr: tuple[str, int],
                           transport: asyncio.DatagramTransport | None = None) -> None:
        leg = self._legs[leg_id]
        fd, loop = -1, None
        local = leg.local
        if transport is not None and transport is not leg.transport:
            local = transport.get_extra_info("sockname")[:2]
        path = self._ffi.new("struct sfte_path *")
        if self._xdp is not None:
            self._xdp.fill_path(path, local, remote_addr)
            self._xdp.unregister(leg.local, leg.remote)
        if transport is not None and transport is not leg.transport:
            self._give_back_receive(leg)
            leg.transport = transport
            fd, loop = self._socket_of(transport)
        take = int(self.workers > 0 and loop is not None)
        if self._lib.sfte_set_address(self._engine, leg.handle, remote_addr[0].encode(),
                                      remote_addr[1], fd, take, path, self._err, 256) != 0:
            raise ValueError(self._ffi.string(self._err).decode())
        leg.local, leg.remote = local, remote_addr
        if self._xdp is not None:
            self._xdp.register(leg_id, local, remote_addr)
        if take:
            self._take_receive(leg, loop)

    def remove_leg(self, leg_id: int) -> None:
        leg = self._legs.pop(leg_id, None)
        if leg is None:
            return
        if self._xdp is not None:  # first: no more of its RTP is steered to the engine
            self._xdp.unregister(leg.local, leg.remote)
        self._give_back_receive(leg)
        self._lib.sfte_remove_leg(self._engine, leg.handle)
        self._retiring[leg_id] = leg
        self._stats.by_worker[leg.worker] -= 1
        placement = self._conferences[leg.spec.conference_id]
        placement.legs -= 1
        if placement.legs == 0:
            del self._conferences[leg.spec.conference_id]
        self._reap()

    def set_publisher(self, leg_id: int, audio_ssrcs: tuple[int, ...],
                      video_ssrcs: dict[int, Layer]) -> None:
        leg = self._legs[leg_id]
        declared = [*audio_ssrcs, *video_ssrcs][:MAX_SSRCS_PER_LEG]
        self._stats.streams_refused += len(audio_ssrcs) + len(video_ssrcs) - len(declared)
        audio = [s for s in audio_ssrcs if s in declared]
        video = [(s, layer) for s, layer in video_ssrcs.items() if s in declared]
        self._lib.sfte_set_publisher(
            self._engine, leg.handle, self._ffi.new("uint32_t[]", audio or [0]), len(audio),
            self._ffi.new("uint32_t[]", [s for s, _ in video] or [0]),
            self._ffi.new("uint8_t[]", [int(layer) for _, layer in video] or [0]), len(video))

    def set_slot(self, subscriber: int, kind: StreamKind, index: int,
                 source: SlotSource | None) -> None:
        sub = self._legs[subscriber]
        slots = sub.n_slots[0] if kind == StreamKind.AUDIO else sub.n_slots[1]
        if not 0 <= index < slots:
            raise IndexError(f"leg {subscriber} has {slots} {kind.name.lower()} slots, "
                             f"not slot {index}")
        pub_handle = self._ffi.NULL
        if source is not None:
            pub = self._legs.get(source.publisher)
            if pub is not None:
                if pub.spec.conference_id != sub.spec.conference_id:
                    raise ValueError(
                        f"slot of leg {subscriber} (conference {sub.spec.conference_id}) "
                        f"pointed at leg {source.publisher} of conference "
                        f"{pub.spec.conference_id}: media never crosses conferences")
                pub_handle = pub.handle
        self._lib.sfte_set_slot(
            self._engine, sub.handle, int(kind), index, int(source is not None), pub_handle,
            source.publisher if source else 0, source.csrc if source else 0,
            int(source.layer) if source else 0)

    def handle_packet(self, leg_id: int, data: bytes) -> None:
        """Media that reached the event loop (with worker threads: only from a path
        the engine does not read, e.g. another validated pair): run through the
        engine like any other packet, and counted as USERSPACE_MEDIA."""
        leg = self._legs.get(leg_id) if leg_id != UNVALIDATED_SOURCE else None
        if leg is not None:
            self._stats.userspace_media += 1
        elif leg_id == UNVALIDATED_SOURCE:
            self._stats.unvalidated += 1
        self._lib.sfte_packet(self._engine, leg.handle if leg else self._ffi.NULL, data,
                              len(data))

    def sync(self) -> None:
        """Return once the workers handled every packet and verb given so far."""
        self._lib.sfte_sync(self._engine)

    def can_admit(self, legs: Sequence[tuple[int, int]]) -> str | None:
        for audio, video in legs:
            if audio + video > self._lib.SFTE_MAX_SLOTS:
                return (f"a leg of {audio} audio and {video} video slots is more than the "
                        f"native plane's {self._lib.SFTE_MAX_SLOTS}")
        return None

    def remaining_legs(self, audio_slots: int, video_slots: int) -> int | None:
        return None  # bounded by CPU, which the controller counts

    # ----------------------------------------------------------------- reads
    def read_audio_levels(self) -> dict[int, float]:
        now = time.monotonic_ns()
        updated = self._ffi.new("int64_t *")
        levels = {}
        for leg_id, leg in self._legs.items():
            level = self._lib.sfte_audio_level(leg.handle, updated)
            fresh = updated[0] and now - updated[0] < LEVEL_STALE_NS
            levels[leg_id] = float(level) if fresh else AUDIO_LEVEL_SILENT
        return levels

    def read_receive_stats(self, leg_id: int, ssrc: int) -> ReceiveStats | None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return None
        out = self._ffi.new("struct sfte_receive_stats *")
        if not self._lib.sfte_receive_stats(leg.handle, ssrc, out):
            return None
        return ReceiveStats(received=out.received, first_seq=out.first_seq,
                            highest_seq=out.highest_seq, jitter=out.jitter)

    def read_transport_arrivals(self) -> dict[int, list[tuple[int, int]]]:
        size = self._lib.SFTE_ARRIVALS
        seqs, ns = self._ffi.new("uint16_t[]", size), self._ffi.new("int64_t[]", size)
        arrivals = {}
        for leg_id, leg in self._legs.items():
            n = self._lib.sfte_arrivals(leg.handle, seqs, ns, size)
            if n:
                arrivals[leg_id] = list(zip(seqs[0:n], ns[0:n]))
        return arrivals

    def feedback_legs(self) -> list[int]:
        """Legs whose transport-wide feedback the engine writes (all of them)."""
        return list(self._legs)

    def transport_feedback(self, leg_id: int, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """RTCP transport feedback (controller/twcc.py's, byte for byte) for the leg's
        arrivals since the last call, windowed and encoded in the engine. It pops the
        arrivals read_transport_arrivals would return: use one or the other."""
        leg = self._legs.get(leg_id)
        if leg is None:
            return []
        lib = self._lib
        if self._feedback_out is None:
            self._feedback_out = self._ffi.new(
                "uint8_t[]", FEEDBACK_PACKETS_PER_CALL * lib.SFTE_TWCC_MAX_BYTES * 2)
            self._feedback_lens = self._ffi.new("uint16_t[]", FEEDBACK_PACKETS_PER_CALL)
        out, lens = self._feedback_out, self._feedback_lens
        packets: list[bytes] = []
        while True:
            n = lib.sfte_twcc_feedback(leg.handle, sender_ssrc, media_ssrc, out, len(out),
                                       lens, FEEDBACK_PACKETS_PER_CALL)
            sizes = lens[0:n]
            data = self._ffi.buffer(out, sum(sizes))[:]
            pos = 0
            for size in sizes:
                packets.append(data[pos:pos + size])
                pos += size
            if not n or not lib.sfte_twcc_unfinished(lib.sfte_leg_twcc(leg.handle)):
                return packets

    def forget_transport_feedback(self, leg_id: int) -> None:
        """Drops the leg's pending arrivals and starts its window afresh."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            self._lib.sfte_twcc_forget(leg.handle)

    def transport_feedback_counts(self, leg_id: int) -> tuple[int, int]:
        """(duplicates, too old) arrivals the leg's feedback window ignored."""
        counts = self._ffi.new("struct sfte_twcc_counts *")
        self._lib.sfte_twcc_counts(self._lib.sfte_leg_twcc(self._legs[leg_id].handle), counts)
        return int(counts.duplicates), int(counts.too_old)

    def _read_all(self) -> tuple[list[int], list[int]]:
        counters = self._ffi.new("uint64_t[]", self._lib.SFTE_COUNTERS)
        details = self._ffi.new("uint64_t[]", self._lib.SFTE_DETAILS)
        self._lib.sfte_read_counters(self._engine, counters, details)
        return list(counters), list(details)

    def read_counters(self) -> dict[Counter, int]:
        counters, _ = self._read_all()
        return {c: counters[c] for c in Counter}

    def read_conference_packets(self) -> dict[int, int]:
        packets = {}
        for conference_id in self._conferences.keys() | self._conference_base.keys():
            count = self._lib.sfte_conference_packets(self._engine, conference_id) - \
                self._conference_base.get(conference_id, 0)
            if count > 0:
                packets[conference_id] = count
        return packets

    def reset_conference(self, conference_id: int) -> None:
        self._conference_base[conference_id] = self._lib.sfte_conference_packets(
            self._engine, conference_id)

    def read_detail_counters(self) -> dict[str, int]:
        """Engine figures: datagrams handed to the event loop (UPCALLS) and those
        its queue had no room for, copies the kernel refused, batches; media that
        reached the event loop (USERSPACE_MEDIA, 0 when the engine reads every
        leg's socket); streams refused by the per-leg cap; transport-wide arrivals
        not recorded (more than MAX_PENDING_ARRIVALS of a leg between two reads).
        AF_XDP: media received on ports (XDP_RX), copies sent from frames (XDP_TX;
        the rest of TX_PACKETS went by the sockets), kicks, copies that found no
        free frame, media handed to the leg's worker from another worker's port,
        steered packets the kernel dropped at a port (its rings full or empty);
        with the xdp I/O the steering programs' counters (STEER_*)."""
        _, details = self._read_all()
        lib, stats = self._lib, self._stats
        steering = self._xdp.counters() if self._xdp is not None else {}
        return {**steering,
                "XDP_RX": details[lib.SFTE_DETAIL_XDP_RX],
                "XDP_TX": details[lib.SFTE_DETAIL_XDP_TX],
                "XDP_KICKS": details[lib.SFTE_DETAIL_XDP_KICKS],
                "XDP_NO_FRAME": details[lib.SFTE_DETAIL_XDP_NO_FRAME],
                "XDP_HANDOFFS": details[lib.SFTE_DETAIL_XDP_HANDOFFS],
                "XDP_RX_DROPPED": lib.sfte_xdp_rx_dropped(self._engine),
                "UPCALLS": details[lib.SFTE_DETAIL_UPCALLS],
                "UPCALLS_DROPPED": details[lib.SFTE_DETAIL_UPCALLS_DROPPED],
                "UPCALLS_UNDELIVERABLE": stats.upcalls_undeliverable,
                "SEND_ERRORS": details[lib.SFTE_DETAIL_SEND_ERRORS],
                "RX_BATCHES": details[lib.SFTE_DETAIL_RX_BATCHES],
                "TX_BATCHES": details[lib.SFTE_DETAIL_TX_BATCHES],
                "USERSPACE_MEDIA": stats.userspace_media,
                "USERSPACE_UNVALIDATED": stats.unvalidated,
                "STREAMS_REFUSED": stats.streams_refused,
                "TWCC_RECORDS_DROPPED": details[lib.SFTE_DETAIL_TWCC_DROPPED]}

    def read_leg_media(self) -> dict[int, LegMedia]:
        out = self._ffi.new("struct sfte_leg_media *")
        media = {}
        for leg_id, leg in self._legs.items():
            self._lib.sfte_leg_media(leg.handle, out)
            media[leg_id] = LegMedia(
                {StreamKind.AUDIO: out.received_audio, StreamKind.VIDEO: out.received_video},
                0, tuple(out.slot_sent[0:sum(leg.n_slots)]), "any")
        return media

    def read_userspace_media_drops(self) -> dict[str, int]:
        return {}  # media reaching the event loop is forwarded, not dropped

    def legs_by_interface(self) -> dict[str, int]:
        return {"any": len(self._legs)}

    def leg_ssrc_state(self, leg_id: int) -> tuple[int, int]:
        """(SSRCs with SRTP state, SSRCs with a known video layer) of a leg."""
        handle = self._legs[leg_id].handle
        return self._lib.sfte_ssrcs_seen(handle), self._lib.sfte_video_layers(handle)

    def close(self) -> None:
        if self._engine is None:
            return
        if self._xdp is not None:  # detached and unpinned before the ports close
            self._xdp.close()
            self._xdp = None
        for leg in [*self._legs.values(), *self._retiring.values()]:
            self._give_back_receive(leg)
        if self._upcall_loop is not None and not self._upcall_loop.is_closed():
            self._upcall_loop.remove_reader(self._lib.sfte_upcall_fd(self._engine))
        self._lib.sfte_free(self._engine)  # stops the workers; they let go of every leg
        for leg in [*self._legs.values(), *self._retiring.values()]:
            self._lib.sfte_leg_free(leg.handle)
        self._legs.clear()
        self._retiring.clear()
        self._engine = None

    # ------------------------------------------------------------ sockets
    @staticmethod
    def _socket_of(transport: asyncio.DatagramTransport | None
                   ) -> tuple[int, asyncio.AbstractEventLoop | None]:
        """The transport's fd, and its event loop if the engine can take over
        receiving (a selector loop's datagram transport: it reads in _read_ready)."""
        if transport is None or transport.is_closing():
            return -1, None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return -1, None
        loop = getattr(transport, "_loop", None)
        if not hasattr(transport, "_read_ready") or not hasattr(loop, "_remove_reader"):
            return sock.fileno(), None
        return sock.fileno(), loop

    def _take_receive(self, leg: _Leg, loop: asyncio.AbstractEventLoop | None) -> None:
        assert leg.transport is not None and loop is not None
        fd = leg.transport.get_extra_info("socket").fileno()
        loop._remove_reader(fd)  # type: ignore[attr-defined]
        leg.taken_fd, leg.loop = fd, loop
        if self._upcall_loop is None:
            loop.add_reader(self._lib.sfte_upcall_fd(self._engine), self._drain_upcalls)
            self._upcall_loop = loop

    def _give_back_receive(self, leg: _Leg) -> None:
        """The event loop reads the socket again (the leg goes; its socket may live
        on, e.g. handed to the leg an ICE restart made)."""
        transport, loop, fd = leg.transport, leg.loop, leg.taken_fd
        leg.taken_fd, leg.loop = -1, None
        if fd < 0 or transport is None or loop is None or loop.is_closed() or \
                transport.is_closing():
            return
        loop._add_reader(fd, transport._read_ready)  # type: ignore[attr-defined]

    def _drain_upcalls(self) -> None:
        """Datagrams the engine does not handle, to the leg's socket protocol."""
        try:
            os.read(self._lib.sfte_upcall_fd(self._engine), 8)
        except BlockingIOError:
            pass
        upcall = self._upcall
        for _ in range(UPCALLS_PER_WAKEUP):
            if not self._lib.sfte_upcall_pop(self._engine, upcall):
                return
            leg = self._legs.get(upcall.leg_id) or self._retiring.get(upcall.leg_id)
            transport = leg.transport if leg is not None else None
            if transport is None or transport.is_closing():
                self._stats.upcalls_undeliverable += 1
                continue
            data = bytes(self._ffi.buffer(upcall.data, upcall.len))
            addr = (self._ffi.string(upcall.host).decode(), upcall.port)
            try:
                transport.get_protocol().datagram_received(data, addr)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - one bad datagram must not stop the others
                log.exception("leg %d: handling a datagram from %s:%d failed", upcall.leg_id,
                              *addr)

    def _reap(self) -> None:
        for leg_id, leg in list(self._retiring.items()):
            if self._lib.sfte_leg_released(leg.handle):
                self._lib.sfte_leg_free(leg.handle)
                del self._retiring[leg_id]
