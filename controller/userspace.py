"""The userspace data plane: the reference implementation of
``controller.dataplane.DataPlane`` in Python with libsrtp (pylibsrtp).

Runs wherever Python runs (no root, no BPF). Every SRTP packet of a leg is
unprotected once, then rewritten and protected once per subscribing slot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pylibsrtp

from . import rtp
from .dataplane import (
    LAYER_PAUSED_AFTER,
    MAX_SSRCS_PER_LEG,
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES_CM_128_HMAC_SHA1_80,
    Counter,
    Layer,
    LegMedia,
    LegSpec,
    ReceiveStats,
    SlotSource,
    StreamKind,
)
from .srtp import srtp_session
from .twcc import MAX_PENDING_ARRIVALS

log = logging.getLogger("sftd.userspace")

LEVEL_SMOOTHING = 0.5  # k of docs/protocol.md §4
LEVEL_STALE_SECONDS = 1.0  # no audio for this long counts as silence
CLOCK_RATE = {StreamKind.AUDIO: 48000, StreamKind.VIDEO: 90000}
RID_LAYERS = {b"l": Layer.LOW, b"h": Layer.HIGH}
MAX_SRTP_BYTES = 1500
# pylibsrtp raises one Error class with libsrtp's message for the status code:
# srtp_err_status_replay_fail (9) and srtp_err_status_replay_old (10)
_REPLAY_ERRORS = frozenset(pylibsrtp.ERRORS[status] for status in (9, 10))
# libsrtp's protect refuses an index this far behind the newest it protected
# (srtp_session's window_size): past it a slot needs no floor (see _send)
SWITCH_FLOOR_SPAN = 1024


@dataclass
class UserspaceSlotState:
    ssrc: int
    kind: StreamKind
    source: SlotSource | None = None
    input_ssrc: int | None = None  # publisher SSRC currently forwarded
    seq_offset: int = 0
    ts_offset: int = 0
    last_seq: int = field(default_factory=lambda: random.randrange(1 << 16))
    last_ts: int = field(default_factory=lambda: random.randrange(1 << 32))
    last_time: float = 0.0
    # the sequence number past the slot's newest copy when its mapping last moved
    # (a switch, a padding packet dropped) while a copy before it could still be
    # protected at an SRTP index the slot already used
    floor: int | None = None
    sent: int = 0  # packets sent on the slot


@dataclass
class UserspaceLegState:
    spec: LegSpec
    rx: pylibsrtp.Session
    tx: pylibsrtp.Session
    remote_addr: tuple[str, int]
    transport: asyncio.DatagramTransport | None
    audio_slots: list[UserspaceSlotState]
    video_slots: list[UserspaceSlotState]
    audio_ssrcs: set[int] = field(default_factory=set)
    video_layers: dict[int, Layer] = field(default_factory=dict)  # ssrc -> layer
    layer_media_at: dict[Layer, float] = field(default_factory=dict)  # last media packet
    # SSRCs that sent an authentic packet, so libsrtp holds state for them: at
    # most MAX_SSRCS_PER_LEG (counted as the kernel counts its stream entries)
    ssrcs_seen: set[int] = field(default_factory=set)
    level: float = float(rtp.AUDIO_LEVEL_SILENT)
    level_time: float = 0.0
    received: dict[int, _ReceiveCounter] = field(default_factory=dict)  # by SSRC


MAX_COUNTED_STREAMS = 16  # per leg: a sender's own media is a handful of SSRCs


@dataclass
class _ReceiveCounter:
    """RFC 3550 receive statistics of one SSRC (A.1 extended sequence numbers,
    A.8 jitter), the same figures the kernel plane keeps in sft_stream_state."""

    first_seq: int
    highest_seq: int
    received: int = 1
    jitter_q4: int = 0  # x 16, as RFC 3550's integer form
    last_transit: int | None = None

    def update(self, seq: int, timestamp: int, clock_rate: int, now: float) -> None:
        self.received += 1
        candidate = (self.highest_seq & ~0xFFFF) | seq
        if candidate - self.highest_seq > 0x8000:
            candidate -= 0x10000
        elif self.highest_seq - candidate > 0x8000:
            candidate += 0x10000
        self.highest_seq = max(self.highest_seq, candidate)
        self.transit(timestamp, clock_rate, now)

    def transit(self, timestamp: int, clock_rate: int, now: float) -> None:
        transit = (int(now * clock_rate) - timestamp) & 0xFFFFFFFF
        if self.last_transit is not None:
            d = abs(((transit - self.last_transit + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4)
        self.last_transit = transit


def _wall_clock_gap(kind: StreamKind, elapsed: float | None) -> int:
    """Timestamp gap left when a slot switches source: the time since its last packet."""
    return max(1, int(elapsed * CLOCK_RATE[kind])) if elapsed is not None else 1


class UserspaceDataPlane:
    name = "userspace"
    srtp_profiles = (SRTP_AES_CM_128_HMAC_SHA1_80, SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM)

    def __init__(self, *, slot_initial_index: Callable[[], int] | None = None,
                 slot_initial_ts: Callable[[], int] | None = None,
                 switch_ts_gap: Callable[[StreamKind, float | None], int] | None = None,
                 layer_paused_after: float = LAYER_PAUSED_AFTER) -> None:
        """The keyword hooks make the plane's free choices deterministic (tests compare it
        with the kernel plane byte for byte); by default they are random / wall time.

        ``slot_initial_index``: sequence number of a new slot's first packet (called once
        per slot, audio slots then video slots of each leg, as KernelDataPlane does);
        ``slot_initial_ts``: the timestamp a new slot counts on from;
        ``switch_ts_gap(kind, seconds since the slot's last packet or None)``: timestamp
        gap a slot leaves when it switches to a new source;
        ``layer_paused_after``: seconds without media after which a simulcast layer
        counts as paused."""
        self._slot_initial_index = slot_initial_index
        self._layer_paused_after = layer_paused_after
        self._slot_initial_ts = slot_initial_ts
        self._switch_ts_gap = switch_ts_gap or _wall_clock_gap
        self._legs: dict[int, UserspaceLegState] = {}
        # publisher leg -> slots currently or soon forwarding it, per kind
        self._routes: dict[tuple[int, StreamKind],
                           list[tuple[UserspaceLegState, UserspaceSlotState]]] = defaultdict(list)
        self._counters = [0] * len(Counter)
        self._conference_packets: dict[int, int] = defaultdict(int)
        self._streams_refused = 0
        # leg -> (transport-wide seq, arrival ns) since the last read_transport_arrivals
        self._arrivals: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._arrivals_dropped = 0

    # ----------------------------------------------------------------- verbs
    def add_leg(self, spec: LegSpec) -> None:
        if spec.srtp.profile not in self.srtp_profiles:
            raise ValueError(f"SRTP profile {spec.srtp.profile} not supported by {self.name}")
        self._legs[spec.leg_id] = UserspaceLegState(
            spec=spec,
            rx=srtp_session(spec.srtp.profile, spec.srtp.rx, inbound=True),
            tx=srtp_session(spec.srtp.profile, spec.srtp.tx, inbound=False),
            remote_addr=spec.remote_addr, transport=spec.transport,
            audio_slots=[self._new_slot(s, StreamKind.AUDIO) for s in spec.audio_slot_ssrcs],
            video_slots=[self._new_slot(s, StreamKind.VIDEO) for s in spec.video_slot_ssrcs])

    def _new_slot(self, ssrc: int, kind: StreamKind) -> UserspaceSlotState:
        slot = UserspaceSlotState(ssrc, kind)
        if self._slot_initial_index is not None:
            slot.last_seq = (self._slot_initial_index() - 1) & 0xFFFF
        if self._slot_initial_ts is not None:
            slot.last_ts = self._slot_initial_ts() & 0xFFFFFFFF
        return slot

    def update_leg_address(self, leg_id: int, remote_addr: tuple[str, int],
                           transport: asyncio.DatagramTransport | None = None) -> None:
        leg = self._legs[leg_id]
        leg.remote_addr = remote_addr
        if transport is not None:
            leg.transport = transport

    def remove_leg(self, leg_id: int) -> None:
        leg = self._legs.pop(leg_id, None)
        self._arrivals.pop(leg_id, None)
        if leg is None:
            return
        for kind in StreamKind:
            for _subscriber, slot in self._routes.pop((leg_id, kind), []):
                slot.source, slot.input_ssrc = None, None
        for slot in leg.audio_slots + leg.video_slots:
            self._unroute(leg, slot)

    def set_publisher(self, leg_id: int, audio_ssrcs: tuple[int, ...],
                      video_ssrcs: dict[int, Layer]) -> None:
        leg = self._legs[leg_id]
        declared = [*audio_ssrcs, *video_ssrcs][:MAX_SSRCS_PER_LEG]
        self._streams_refused += len(audio_ssrcs) + len(video_ssrcs) - len(declared)
        leg.audio_ssrcs = {ssrc for ssrc in audio_ssrcs if ssrc in declared}
        leg.video_layers.update({ssrc: layer for ssrc, layer in video_ssrcs.items()
                                 if ssrc in declared})

    def set_slot(self, subscriber: int, kind: StreamKind, index: int,
                 source: SlotSource | None) -> None:
        leg = self._legs[subscriber]
        slots = leg.audio_slots if kind == StreamKind.AUDIO else leg.video_slots
        slot = slots[index]
        if slot.source == source:
            return
        self._unroute(leg, slot)
        slot.source = source
        if kind == StreamKind.AUDIO or source is None:
            slot.input_ssrc = None  # audio switches at once; video waits for a keyframe
        if source is not None:
            self._routes[(source.publisher, kind)].append((leg, slot))

    def _unroute(self, leg: UserspaceLegState, slot: UserspaceSlotState) -> None:
        if slot.source is None:
            return
        routes = self._routes.get((slot.source.publisher, slot.kind))
        if routes:
            routes[:] = [(lg, s) for lg, s in routes if s is not slot]

    @staticmethod
    def _count_received(leg: UserspaceLegState, view: rtp.RtpView, now: float) -> None:
        kind = StreamKind.AUDIO if view.ssrc in leg.audio_ssrcs else StreamKind.VIDEO
        counter = leg.received.get(view.ssrc)
        if counter is not None:
            counter.update(view.seq, view.timestamp, CLOCK_RATE[kind], now)
        elif len(leg.received) < MAX_COUNTED_STREAMS:
            counter = leg.received[view.ssrc] = _ReceiveCounter(view.seq, view.seq)
            counter.transit(view.timestamp, CLOCK_RATE[kind], now)

    def read_receive_stats(self, leg_id: int, ssrc: int) -> ReceiveStats | None:
        leg = self._legs.get(leg_id)
        counter = leg.received.get(ssrc) if leg is not None else None
        if counter is None:
            return None
        return ReceiveStats(received=counter.received, first_seq=counter.first_seq,
                            highest_seq=counter.highest_seq, jitter=counter.jitter_q4 >> 4)

    def read_audio_levels(self) -> dict[int, float]:
        now = time.monotonic()
        return {leg_id: (leg.level if now - leg.level_time < LEVEL_STALE_SECONDS
                         else float(rtp.AUDIO_LEVEL_SILENT))
                for leg_id, leg in self._legs.items()}

    def read_counters(self) -> dict[Counter, int]:
        return {c: self._counters[c] for c in Counter}

    def read_conference_packets(self) -> dict[int, int]:
        return dict(self._conference_packets)

    def read_transport_arrivals(self) -> dict[int, list[tuple[int, int]]]:
        arrivals, self._arrivals = self._arrivals, defaultdict(list)
        return dict(arrivals)

    def reset_conference(self, conference_id: int) -> None:
        self._conference_packets.pop(conference_id, None)

    def read_detail_counters(self) -> dict[str, int]:
        """Streams refused by the per-leg cap, and transport-wide arrivals not
        recorded: more than MAX_PENDING_ARRIVALS of a leg between two reads (the
        controller's feedback loop stalled)."""
        return {"STREAMS_REFUSED": self._streams_refused,
                "TWCC_RECORDS_DROPPED": self._arrivals_dropped}

    def can_admit(self, legs: Sequence[tuple[int, int]]) -> str | None:
        return None  # no limit here beyond the ports and CPU the controller counts

    def remaining_legs(self, audio_slots: int, video_slots: int) -> int | None:
        return None

    def legs_by_interface(self) -> dict[str, int]:
        return {"any": len(self._legs)}

    def read_leg_media(self) -> dict[int, LegMedia]:
        media = {}
        for leg_id, leg in self._legs.items():
            received = dict.fromkeys(StreamKind, 0)
            for ssrc, counter in leg.received.items():
                kind = StreamKind.AUDIO if ssrc in leg.audio_ssrcs else StreamKind.VIDEO
                received[kind] += counter.received
            media[leg_id] = LegMedia(received, 0, tuple(
                slot.sent for slot in leg.audio_slots + leg.video_slots), "any")
        return media

    def read_userspace_media_drops(self) -> dict[str, int]:
        return {}  # every drop here is one of read_counters' reasons

    def close(self) -> None:
        self._legs.clear()
        self._arrivals.clear()
        self._routes.clear()

    # ----------------------------------------------------------- per packet
    # One clock read per packet, in handle_packet: the arrival time in ns (the
    # feedback loop's records) and as monotonic seconds (`now`) for the rest.
    def handle_packet(self, leg_id: int, data: bytes) -> None:
        arrival_ns = time.monotonic_ns()
        now = arrival_ns / 1e9
        counters = self._counters
        counters[Counter.RX_PACKETS] += 1
        counters[Counter.RX_BYTES] += len(data)
        leg = self._legs.get(leg_id)
        if leg is None:
            counters[Counter.DROP_UNKNOWN_LEG] += 1
            return
        if not rtp.RTP_HEADER <= len(data) <= MAX_SRTP_BYTES or data[0] >> 6 != 2:
            counters[Counter.DROP_MALFORMED] += 1
            return
        new_ssrc: int | None = int.from_bytes(data[8:12], "big")
        if new_ssrc in leg.ssrcs_seen:
            new_ssrc = None
        elif len(leg.ssrcs_seen) >= MAX_SSRCS_PER_LEG:  # before libsrtp makes state for it
            counters[Counter.DROP_SSRC_LIMIT] += 1
            return
        try:
            plain = leg.rx.unprotect(data)
        except ValueError:  # pylibsrtp refuses sizes libsrtp cannot take
            counters[Counter.DROP_MALFORMED] += 1
            return
        except pylibsrtp.Error as exc:
            reason = Counter.DROP_REPLAY if str(exc) in _REPLAY_ERRORS else Counter.DROP_AUTH
            counters[reason] += 1
            return
        if new_ssrc is not None:  # authentic: libsrtp now holds state for it
            leg.ssrcs_seen.add(new_ssrc)
        try:
            view = rtp.parse(plain)
        except rtp.RtpError:
            counters[Counter.DROP_MALFORMED] += 1
            return
        self._count_received(leg, view, now)
        self._record_arrival(leg, plain, view, arrival_ns)
        ssrc = view.ssrc
        audio = ssrc in leg.audio_ssrcs
        layer = None if audio else self._learn_layer(leg, plain, view)
        if rtp.padding_only(view):
            counters[Counter.DROP_PADDING] += 1
            self._skip_sequence_number(leg, view)
            return
        if audio:
            self._forward_audio(leg, plain, view, now)
        elif layer is None:
            counters[Counter.DROP_UNKNOWN_SSRC] += 1
        else:
            self._forward_video(leg, plain, view, layer, now)

    @staticmethod
    def _learn_layer(leg: UserspaceLegState, plain: bytes, view: rtp.RtpView) -> Layer | None:
        """The video SSRC's simulcast layer, declared or learned from its RID. Padding
        probes count: a browser stops sending the RID once reports ack the SSRC, and
        at a connection's start those acks may follow nothing but probes."""
        layer = leg.video_layers.get(view.ssrc)
        if layer is None:
            rid = rtp.find_extension(plain, view, leg.spec.extensions.rid)
            layer = RID_LAYERS.get(rid) if rid else None
            if layer is not None:
                leg.video_layers[view.ssrc] = layer
        return layer

    def _record_arrival(self, leg: UserspaceLegState, plain: bytes, view: rtp.RtpView,
                        arrival_ns: int) -> None:
        """The transport-wide sequence number of an authentic packet (padding probes
        included: the sender's estimate counts them) for the feedback loop."""
        value = rtp.find_extension(plain, view, leg.spec.extensions.transport_cc)
        if value is None or len(value) < 2:
            return
        records = self._arrivals[leg.spec.leg_id]
        if len(records) >= MAX_PENDING_ARRIVALS:
            self._arrivals_dropped += 1
            return
        records.append(((value[0] << 8) | value[1], arrival_ns))

    def _forward_audio(self, leg: UserspaceLegState, plain: bytes, view: rtp.RtpView,
                       now: float) -> None:
        level = rtp.audio_level(plain, view, leg.spec.extensions.audio_level)
        if level is not None:
            leg.level = LEVEL_SMOOTHING * leg.level + (1 - LEVEL_SMOOTHING) * level
            leg.level_time = now
        routes = self._routes.get((leg.spec.leg_id, StreamKind.AUDIO))
        if not routes:
            self._counters[Counter.DROP_NO_ROUTE] += 1
            return
        for sub, slot in routes:
            if slot.input_ssrc != view.ssrc:
                self._switch(slot, view, StreamKind.AUDIO, self._switch_ts_gap, now)
            self._send(sub, slot, plain, view, now)

    def _forward_video(self, leg: UserspaceLegState, plain: bytes, view: rtp.RtpView,
                       layer: Layer, now: float) -> None:
        leg.layer_media_at[layer] = now
        routes = self._routes.get((leg.spec.leg_id, StreamKind.VIDEO))
        if not routes:
            self._counters[Counter.DROP_NO_ROUTE] += 1
            return
        keyframe: bool | None = None
        sent = False
        for sub, slot in routes:
            if slot.input_ssrc != view.ssrc:
                if self._wanted_layer(leg, slot, now) != layer:
                    continue
                if keyframe is None:
                    keyframe = rtp.is_keyframe(plain, view, leg.spec.extensions.frame_descriptor)
                if not keyframe:
                    continue
                self._switch(slot, view, StreamKind.VIDEO, self._switch_ts_gap, now)
            self._send(sub, slot, plain, view, now)
            sent = True
        if not sent:
            self._counters[Counter.DROP_NOT_READY] += 1

    def _skip_sequence_number(self, leg: UserspaceLegState, view: rtp.RtpView) -> None:
        """A dropped padding packet must not leave a gap in the slots' sequence
        (receivers would wait for it): later packets of that source move down by one.
        The move maps a packet reordered around the padding (a newer one before it,
        an older one after it) onto a number the slot may have sent: the floor rises
        past the slot's newest copy, so no copy reuses an SRTP index (_send drops it)."""
        for kind in StreamKind:
            for _, slot in self._routes.get((leg.spec.leg_id, kind), ()):
                if slot.input_ssrc == view.ssrc:
                    slot.seq_offset = (slot.seq_offset - 1) & 0xFFFF
                    slot.floor = (slot.last_seq + 1) & 0xFFFF

    def _wanted_layer(self, leg: UserspaceLegState, slot: UserspaceSlotState,
                      now: float) -> Layer:
        """The slot's preferred layer if the publisher sends it, else what it
        has; a paused preferred layer gives way to one that is flowing."""
        assert slot.source is not None
        preferred = slot.source.layer
        other = Layer.LOW if preferred == Layer.HIGH else Layer.HIGH
        layers = set(leg.video_layers.values())
        if preferred not in layers:
            return other if other in layers else preferred
        if other in layers:
            seen = leg.layer_media_at
            pause = self._layer_paused_after
            if now - seen.get(preferred, 0.0) > pause and now - seen.get(other, 0.0) <= pause:
                return other
        return preferred

    @staticmethod
    def _switch(slot: UserspaceSlotState, view: rtp.RtpView, kind: StreamKind,
                ts_gap: Callable[[StreamKind, float | None], int], now: float) -> None:
        """Continue the slot's sequence and timestamp from the new source."""
        elapsed = ts_gap(kind, now - slot.last_time if slot.last_time else None)
        slot.seq_offset = (slot.last_seq + 1 - view.seq) & 0xFFFF
        slot.ts_offset = (slot.last_ts + elapsed - view.timestamp) & 0xFFFFFFFF
        slot.input_ssrc = view.ssrc
        slot.floor = (slot.last_seq + 1) & 0xFFFF

    def _send(self, sub: UserspaceLegState, slot: UserspaceSlotState, plain: bytes,
              view: rtp.RtpView, now: float) -> None:
        assert slot.source is not None
        seq = (view.seq + slot.seq_offset) & 0xFFFF
        ts = (view.timestamp + slot.ts_offset) & 0xFFFFFFFF
        if slot.floor is not None and (seq - slot.floor) & 0xFFFF >= 0x8000:
            # older than the source's first copy: the previous source's index
            self._counters[Counter.DROP_STALE] += 1
            return
        if ((seq - slot.last_seq) & 0xFFFF) < 0x8000:
            slot.last_seq, slot.last_ts, slot.last_time = seq, ts, now
        try:
            packet = sub.tx.protect(rtp.rewrite(plain, view, slot.ssrc, seq, ts,
                                                slot.source.csrc))
        except ValueError:  # grew past what fits a datagram once the CSRC was added
            self._counters[Counter.DROP_MALFORMED] += 1
            return
        except pylibsrtp.Error as exc:  # replay_old: older than the window, never resent
            if str(exc) not in _REPLAY_ERRORS:
                raise
            self._counters[Counter.DROP_STALE] += 1
            return
        if slot.floor is not None and SWITCH_FLOOR_SPAN <= (seq - slot.floor) & 0xFFFF < 0x8000:
            slot.floor = None  # protect refuses whatever is before the floor from now on
        if sub.transport is None or sub.transport.is_closing():
            self._counters[Counter.DROP_NO_ROUTE] += 1
            return
        sub.transport.sendto(packet, sub.remote_addr)
        slot.sent += 1
        self._counters[Counter.TX_PACKETS] += 1
        self._counters[Counter.TX_BYTES] += len(packet)
        self._conference_packets[sub.spec.conference_id] += 1
