"""Transport-wide congestion-control feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01): what lets a browser's send-side bandwidth estimate grow.

Every packet a client sends over its leg carries a transport-wide sequence number
(header extension ``ExtensionIds.transport_cc``). The data plane records when each
authentic one arrived (``DataPlane.read_transport_arrivals``); every
``FEEDBACK_INTERVAL`` the controller answers each sending leg with RTCP transport
feedback (RTPFB, FMT 15) saying, per sequence number since the last feedback,
whether and when it arrived. Without it Chrome's estimate decays to ~70 kbit/s.

Unlike Wire's sftd (feedback about the high simulcast layer only), every packet
carrying the extension is covered: both layers, padding probes, audio.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger("sftd.twcc")

FEEDBACK_INTERVAL = 0.1  # seconds, as Wire's TIMEOUT_TWCC
PT_RTPFB = 205
FMT_TRANSPORT_FEEDBACK = 15

DELTA_TICK_US = 250
REFERENCE_TICK_US = 64_000
REFERENCE_MASK = 0xFFFFFF  # 24-bit reference time, wraps after ~12 days

SYMBOL_NOT_RECEIVED = 0
SYMBOL_SMALL_DELTA = 1  # 0 .. 63.75 ms, one byte
SYMBOL_LARGE_DELTA = 2  # -8192 .. 8191.75 ms, two bytes signed

MAX_RUN_LENGTH = 0x1FFF
MAX_FEEDBACK_BYTES = 1200  # fits any path MTU after SRTCP and IP/UDP headers
MAX_RECEIVED_PER_FEEDBACK = 256
MAX_STATUS_PER_FEEDBACK = 0xFFFF
# A forward jump larger than this is a sender that restarted its count, not loss.
MAX_SEQUENCE_JUMP = 0x4000
# Sequence numbers kept behind the newest to answer late (reordered) packets.
HISTORY_PACKETS = 1024
# Records buffered per leg between two feedback rounds in a data plane.
MAX_PENDING_ARRIVALS = 8192


class FeedbackError(ValueError):
    """The statuses given cannot be written into one feedback packet."""


def _delta_ticks(arrival_us: int, last_us: int) -> int:
    """Receive delta in 250 µs ticks, rounded to the nearest tick."""
    diff = arrival_us - last_us
    return (diff + DELTA_TICK_US // 2) // DELTA_TICK_US


def _symbol(ticks: int) -> int:
    if 0 <= ticks <= 0xFF:
        return SYMBOL_SMALL_DELTA
    if -0x8000 <= ticks <= 0x7FFF:
        return SYMBOL_LARGE_DELTA
    raise FeedbackError(f"receive delta of {ticks * DELTA_TICK_US} µs does not fit 16 bits")


def _chunks(symbols: Sequence[int]) -> bytes:
    """Packet status chunks: run-length where a symbol repeats at least 7 times,
    else a status vector (14 one-bit symbols when only 0/1 occur, else 7 two-bit)."""
    out = bytearray()
    i, n = 0, len(symbols)
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and symbols[i + run] == symbol and run < MAX_RUN_LENGTH:
            run += 1
        if run >= 7:
            out += struct.pack("!H", (symbol << 13) | run)
            i += run
            continue
        one_bit = symbols[i:i + 14]
        if all(s <= SYMBOL_SMALL_DELTA for s in one_bit):
            word = 0x8000
            for k, s in enumerate(one_bit):
                word |= s << (13 - k)
            out += struct.pack("!H", word)
            i += 14
        else:
            word = 0xC000
            for k, s in enumerate(symbols[i:i + 7]):
                word |= s << (12 - 2 * k)
            out += struct.pack("!H", word)
            i += 7
    return bytes(out)


def encode_feedback(sender_ssrc: int, media_ssrc: int, base_seq: int, feedback_count: int,
                    arrivals_us: Sequence[int | None]) -> bytes:
    """One transport-feedback packet: ``arrivals_us[i]`` is the arrival time (µs, any
    fixed origin) of sequence number ``base_seq + i``, or None if it did not arrive.
    Raises ``FeedbackError`` if a delta or the count does not fit one packet."""
    if not 0 < len(arrivals_us) <= MAX_STATUS_PER_FEEDBACK:
        raise FeedbackError(f"{len(arrivals_us)} statuses: a feedback holds 1..65535")
    first = next((a for a in arrivals_us if a is not None), None)
    reference = (first // REFERENCE_TICK_US) if first is not None else 0
    last_us = reference * REFERENCE_TICK_US
    symbols: list[int] = []
    deltas = bytearray()
    for arrival in arrivals_us:
        if arrival is None:
            symbols.append(SYMBOL_NOT_RECEIVED)
            continue
        ticks = _delta_ticks(arrival, last_us)
        symbol = _symbol(ticks)
        symbols.append(symbol)
        deltas += struct.pack("!B" if symbol == SYMBOL_SMALL_DELTA else "!h", ticks)
        last_us += ticks * DELTA_TICK_US  # no drift from rounding
    body = struct.pack("!IIHHI", sender_ssrc, media_ssrc, base_seq & 0xFFFF, len(arrivals_us),
                       ((reference & REFERENCE_MASK) << 8) | (feedback_count & 0xFF))
    body += _chunks(symbols) + deltas
    padding = -(4 + len(body)) % 4
    b0 = 0x80 | FMT_TRANSPORT_FEEDBACK
    if padding:  # RFC 3550: the last padding octet counts the padding octets
        b0 |= 0x20
        body += bytes(padding - 1) + bytes([padding])
    return struct.pack("!BBH", b0, PT_RTPFB, (4 + len(body)) // 4 - 1) + body


class ArrivalWindow:
    """One leg's transport-wide arrivals and what the next feedback must report.

    Sequence numbers are unwrapped to a 64-bit count; duplicates keep their first
    arrival; a packet older than what was already reported moves the next
    feedback's start back to it (the sender takes the repeated statuses as
    updates); a jump beyond ``MAX_SEQUENCE_JUMP`` starts afresh."""

    def __init__(self) -> None:
        self._arrivals: OrderedDict[int, int] = OrderedDict()  # unwrapped seq -> µs
        self._highest: int | None = None
        self._next_base = 0  # first sequence the next feedback reports
        self._floor = 0  # lowest sequence still known; older arrivals are ignored
        self.feedback_count = 0
        self.duplicates = 0
        self.too_old = 0

    def _unwrap(self, seq: int) -> int:
        assert self._highest is not None
        delta = (seq - self._highest) & 0xFFFF
        return self._highest + (delta - 0x10000 if delta >= 0x8000 else delta)

    def add(self, seq: int, arrival_us: int) -> None:
        if self._highest is None:  # counted from 2^16 on: unwrapped values stay positive
            self._highest = self._next_base = 0x10000 + (seq & 0xFFFF)
            self._floor = self._highest - HISTORY_PACKETS
            self._arrivals[self._highest] = arrival_us
            return
        ext = self._unwrap(seq & 0xFFFF)
        if ext > self._highest + MAX_SEQUENCE_JUMP or ext < self._floor - MAX_SEQUENCE_JUMP:
            self._arrivals.clear()  # the sender restarted its count
            self._highest = self._next_base = ext
            self._floor = ext - HISTORY_PACKETS
        elif ext < self._floor:
            self.too_old += 1
            return
        elif ext in self._arrivals:
            self.duplicates += 1
            return
        self._arrivals[ext] = arrival_us
        self._highest = max(self._highest, ext)
        self._next_base = min(self._next_base, ext)

    def feedback(self, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """Feedback packets for everything since the last call (none if nothing new)."""
        if self._highest is None or self._next_base > self._highest:
            return []
        statuses = [self._arrivals.get(seq)
                    for seq in range(self._next_base, self._highest + 1)]
        packets = []
        base = self._next_base
        while statuses:
            take = self._fitting(statuses)
            packets.append(encode_feedback(sender_ssrc, media_ssrc, base, self.feedback_count,
                                           statuses[:take]))
            self.feedback_count = (self.feedback_count + 1) & 0xFF
            base += take
            statuses = statuses[take:]
        self._next_base = self._highest + 1
        self._prune()
        return packets

    def _fitting(self, statuses: list[int | None]) -> int:
        """How many of ``statuses`` the next packet takes: at most the limits, cut
        before a delta that would not fit, halved until the packet is small enough."""
        take = min(len(statuses), MAX_STATUS_PER_FEEDBACK)
        received, first, last = 0, None, 0
        for i, arrival in enumerate(statuses[:take]):
            if arrival is None:
                continue
            if first is None:
                first = arrival
                last = (arrival // REFERENCE_TICK_US) * REFERENCE_TICK_US
            received += 1
            ticks = _delta_ticks(arrival, last)
            if received > MAX_RECEIVED_PER_FEEDBACK or not -0x8000 <= ticks <= 0x7FFF:
                take = i
                break
            last += ticks * DELTA_TICK_US
        while take > 1 and len(_chunks([0 if a is None else 2 for a in statuses[:take]])) \
                + 2 * received > MAX_FEEDBACK_BYTES - 20:
            take //= 2
            received = sum(a is not None for a in statuses[:take])
        return max(take, 1)

    def _prune(self) -> None:
        """Forget arrivals more than HISTORY_PACKETS behind the newest (all reported)."""
        assert self._highest is not None
        self._floor = max(self._floor, self._highest + 1 - HISTORY_PACKETS)
        while self._arrivals:
            seq = next(iter(self._arrivals))
            if seq >= self._floor:
                break
            del self._arrivals[seq]


class ArrivalSource(Protocol):
    def read_transport_arrivals(self) -> dict[int, list[tuple[int, int]]]: ...


@runtime_checkable
class FeedbackSource(Protocol):
    """A data plane that keeps the arrival windows and writes the feedback itself
    (the native engine, engine/src/twcc.c): no per-packet work in Python."""

    def feedback_legs(self) -> list[int]: ...

    def transport_feedback(self, leg_id: int, sender_ssrc: int,
                           media_ssrc: int) -> list[bytes]: ...

    def forget_transport_feedback(self, leg_id: int) -> None: ...


@dataclass(frozen=True)
class FeedbackTarget:
    """Where a leg's feedback goes: the SSRCs written into it and the SRTCP sender."""

    sender_ssrc: int
    media_ssrc: int
    send_rtcp: Callable[[bytes], None]


class TransportFeedback:
    """Arrival windows of every leg, and the periodic feedback to each."""

    def __init__(self) -> None:
        self.windows: dict[int, ArrivalWindow] = {}
        self.packets_sent = 0

    def record(self, arrivals: dict[int, list[tuple[int, int]]]) -> None:
        """(sequence number, arrival in monotonic ns) per leg, in arrival order."""
        for leg_id, records in arrivals.items():
            window = self.windows.get(leg_id)
            if window is None:
                window = self.windows[leg_id] = ArrivalWindow()
            for seq, arrival_ns in records:
                window.add(seq, arrival_ns // 1000)

    def send(self, target_of: Callable[[int], FeedbackTarget | None]) -> None:
        """Feedback to every leg with news; windows of legs that are gone are dropped."""
        for leg_id in list(self.windows):
            target = target_of(leg_id)
            if target is None:
                del self.windows[leg_id]
                continue
            for packet in self.windows[leg_id].feedback(target.sender_ssrc, target.media_ssrc):
                target.send_rtcp(packet)
                self.packets_sent += 1

    def send_from(self, source: FeedbackSource,
                  target_of: Callable[[int], FeedbackTarget | None]) -> None:
        """``send`` for a data plane that writes the feedback: a leg without a
        target loses its arrivals and window, as ``send`` drops its window."""
        for leg_id in source.feedback_legs():
            target = target_of(leg_id)
            if target is None:
                source.forget_transport_feedback(leg_id)
                continue
            for packet in source.transport_feedback(leg_id, target.sender_ssrc,
                                                    target.media_ssrc):
                target.send_rtcp(packet)
                self.packets_sent += 1

    async def run(self, source: ArrivalSource | FeedbackSource,
                  target_of: Callable[[int], FeedbackTarget | None]) -> None:
        """Every FEEDBACK_INTERVAL: read the data plane's arrivals, send feedback
        (or have the data plane write it, when it can). An error is logged and the
        next round goes on."""
        while True:
            await asyncio.sleep(FEEDBACK_INTERVAL)
            try:
                if isinstance(source, FeedbackSource):
                    self.send_from(source, target_of)
                else:
                    self.record(source.read_transport_arrivals())
                    self.send(target_of)
            except Exception:  # noqa: BLE001 - feedback must outlive one bad round
                log.exception("transport-wide feedback round failed")
