"""The kernel data plane's periodic work, off the event loop: which keystream
ring needs which indices (refills on the kernel's miss events at once, top-ups
of every ring once a quarter of it is used), and the thread that runs a round
every ``maintain_interval_s``, woken early by the events' ring buffer.

The thread exists so that the event loop's work (joins, DTLS, data channels)
cannot delay a top-up past a ring's slack.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterable

from .keystream import KeystreamWriter
from .maps import KernelMaps
from .rings import KeystreamRing, KeystreamRun
from .state import KernelLegRecord, KernelSlotRecord

log = logging.getLogger(__name__)


def needs_top_up(ring: KeystreamRing, start: int) -> bool:
    """Whether a periodic top-up should write: at least a quarter of the ``ahead``
    entries wanted from ``start`` on were used since the last write
    (``ring.top_up_floor``), or ``start`` is not covered at all."""
    return not ring.top_up_floor < ring.filled_until - start <= ring.size


def _queue(runs: list[KeystreamRun], ring: KeystreamRing, todo: range) -> None:
    if todo:
        todo = todo[-ring.size:]
        runs.append((ring, todo[0], len(todo)))


class KeystreamRefill:
    """Decides the keystream runs; ``KeystreamWriter`` writes them."""

    def __init__(self, writer: KeystreamWriter, maps: KernelMaps) -> None:
        self.writer = writer
        self._maps = maps

    def refill_slot(self, slot: KernelSlotRecord, next_index: int | None = None) -> None:
        """Keystream for the slot's next ``ring.ahead`` indices."""
        if next_index is None:
            next_index = self._maps.slot_next_index(slot.slot_id)
        ring = slot.ring
        self.writer.write(ring, ring.fill_range(next_index, next_index + ring.ahead))

    def refill_stream(self, leg: KernelLegRecord, ssrc: int, index: int | None = None,
                      force: bool = True, runs: list[KeystreamRun] | None = None) -> None:
        """Keystream for the stream's next ``ring.ahead`` indices past its newest packet
        (``ring.behind`` stay behind it for reordering). With ``runs``, the write is queued."""
        ring = leg.streams[ssrc].ring
        if index is None:
            state = self._maps.stream_state(leg.leg_id, ssrc)
            if state is None:
                return  # first packet unseen: its miss event says where to start
            index = int(state.highest_index)
        if not force and not needs_top_up(ring, index + 1):
            return
        todo = ring.fill_range(index + 1, index + 1 + ring.ahead)
        if runs is None:
            self.writer.write(ring, todo)
        else:
            _queue(runs, ring, todo)

    def top_up(self, legs: Iterable[KernelLegRecord],
               slots: Iterable[KernelSlotRecord]) -> None:
        """Keystream for every active slot and stream that used a quarter of its ring,
        written in one call: slots from their next index (the mmapped
        ``sft_slot_state``), streams past their newest packet."""
        runs: list[KeystreamRun] = []
        next_index_of = self._maps.slot_next_index
        for slot in slots:
            if slot.source is None:
                continue
            ring, next_index = slot.ring, next_index_of(slot.slot_id)
            if needs_top_up(ring, next_index):
                _queue(runs, ring, ring.fill_range(next_index, next_index + ring.ahead))
        highest = {(key.leg_id, key.ssrc): int(state.highest_index)
                   for key, state in self._maps.stream_states()}
        for leg in legs:
            for ssrc in leg.streams:
                index = highest.get((leg.leg_id, ssrc))
                if index is not None:  # else its first packet's miss event says where
                    self.refill_stream(leg, ssrc, index, force=False, runs=runs)
        self.writer.write_runs(runs)


class MaintenanceThread:
    """Runs ``run_round(top_up)`` until stopped: every ``interval_s``, or at once
    when ``wake_fd`` (the events ring buffer's epoll fd) becomes readable; a
    top-up at most every ``top_up_interval_s``."""

    def __init__(self, name: str, run_round: Callable[[bool], None], wake_fd: int,
                 interval_s: float, top_up_interval_s: float) -> None:
        self._run_round = run_round
        self._wake_fd = wake_fd
        self._interval_s = interval_s
        self._top_up_interval_s = top_up_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def _work(self) -> None:
        next_top_up = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            top_up = now >= next_top_up  # events (misses) are served at once regardless
            if top_up:
                next_top_up = now + self._top_up_interval_s
            try:
                self._run_round(top_up)
            except Exception:  # noqa: BLE001 - keep refilling; the error is logged
                log.exception("kernel data plane maintenance failed")
            select.select([self._wake_fd], [], [], self._interval_s)
