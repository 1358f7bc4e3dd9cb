"""The native engine's transport-wide feedback window (engine/src/twcc.c) against
controller/twcc.py's ArrivalWindow: the same arrivals give the same packets, byte
for byte, round after round, within the C window's documented bound (twcc.h)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftd.controller import twcc
from sftd.engine.dataplane import native_available
from tests.unit.test_twcc import decode

AVAILABLE, WHY_NOT = native_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)

SENDER, MEDIA = 0x11223344, 0x55667788


class NativeWindow:
    """sfte_twcc_* through cffi; ``packets``/``room`` bound one write call so that
    the continuation of a round is exercised too."""

    def __init__(self, packets: int = 64, room: int = 200_000) -> None:
        from sftd.engine._engine import ffi, lib

        self.ffi, self.lib = ffi, lib
        self.window = ffi.gc(lib.sfte_twcc_new(), lib.sfte_twcc_free)
        self.out = ffi.new("uint8_t[]", room)
        self.lens = ffi.new("uint16_t[]", packets)
        self.packets = packets

    def add(self, seq: int, arrival_us: int) -> None:
        self.lib.sfte_twcc_add(self.window, seq & 0xFFFF, arrival_us)

    def feedback(self, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        packets: list[bytes] = []
        while True:
            n = self.lib.sfte_twcc_write(self.window, sender_ssrc, media_ssrc, self.out,
                                         len(self.out), self.lens, self.packets)
            data = self.ffi.buffer(self.out)[:]
            pos = 0
            for size in self.lens[0:n]:
                packets.append(data[pos:pos + size])
                pos += size
            if not self.lib.sfte_twcc_unfinished(self.window):
                return packets
            assert n, "no progress"

    def counts(self) -> tuple[int, int]:
        out = self.ffi.new("struct sfte_twcc_counts *")
        self.lib.sfte_twcc_counts(self.window, out)
        return out.duplicates, out.too_old


def slots() -> int:
    from sftd.engine._engine import lib

    return int(lib.SFTE_TWCC_SLOTS)


def test_constants_are_the_controllers():
    from sftd.engine._engine import lib

    assert lib.SFTE_TWCC_HISTORY == twcc.HISTORY_PACKETS
    assert lib.SFTE_TWCC_MAX_JUMP == twcc.MAX_SEQUENCE_JUMP
    assert lib.SFTE_TWCC_MAX_BYTES == twcc.MAX_FEEDBACK_BYTES
    assert lib.SFTE_TWCC_SLOTS - lib.SFTE_TWCC_HISTORY >= 7 * 1024  # the bound in twcc.h


def compare(rounds: list[list[tuple[int, int]]], native: NativeWindow | None = None) -> None:
    """Feeds ``rounds`` of (seq, µs) to both windows; the feedback after each round
    must be the same packets, and the ignored arrivals the same counts."""
    python, native = twcc.ArrivalWindow(), native or NativeWindow()
    for number, arrivals in enumerate(rounds):
        for seq, arrival_us in arrivals:
            python.add(seq, arrival_us)
            native.add(seq, arrival_us)
            # within the bound of twcc.h: the ring holds every arrival Python shows
            assert python._highest is not None and python._highest - python._floor < slots()
        expected = python.feedback(SENDER, MEDIA)
        got = native.feedback(SENDER, MEDIA)
        assert got == expected, f"round {number}"
        assert native.counts() == (python.duplicates, python.too_old), f"round {number}"


def within_bound(rounds: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    """``rounds`` with each arrival that would take the window past the C ring's
    bound (a jump forward of thousands, yet no restart) made a duplicate instead."""
    shadow = twcc.ArrivalWindow()
    out = []
    for arrivals in rounds:
        kept = []
        for seq, arrival_us in arrivals:
            if shadow._highest is not None:
                ext = shadow._unwrap(seq & 0xFFFF)
                restart = (ext > shadow._highest + twcc.MAX_SEQUENCE_JUMP
                           or ext < shadow._floor - twcc.MAX_SEQUENCE_JUMP)
                if not restart and ext - shadow._floor >= slots():
                    seq = shadow._highest & 0xFFFF
            shadow.add(seq, arrival_us)
            kept.append((seq, arrival_us))
        shadow.feedback(SENDER, MEDIA)
        out.append(kept)
    return out


def random_rounds(rng: random.Random, rounds: int, per_round: int) -> list[list[tuple[int, int]]]:
    """Loss, reordering, duplicates, the 16-bit wrap, jumps forward and back
    (restarts among them), time gaps beyond a 16-bit delta, some times going back."""
    seq = rng.choice((rng.randrange(1 << 16), 65_500, 0))
    usual_step = rng.choice((1, 1, 1, 10, 13))  # sparse arrivals: packets halved to fit
    start_us = rng.randrange(1 << 41)
    t = start_us
    out = []
    for _ in range(rounds):
        arrivals = []
        for _ in range(rng.randrange(0, per_round + 1)):
            r = rng.random()
            if r < 0.55:
                step = usual_step
            elif r < 0.75:
                step = rng.randrange(2, 40)  # loss
            elif r < 0.85:
                step = -rng.randrange(1, 30)  # reordered or repeated
            elif r < 0.90:
                step = 0  # duplicate
            elif r < 0.93:
                step = rng.randrange(40, 3000)  # a burst lost
            elif r < 0.95:
                step = twcc.MAX_SEQUENCE_JUMP + rng.randrange(1, 16_000)  # restart
            elif r < 0.97:
                step = -rng.randrange(900, 30_000)  # far behind: too old or restart
            else:
                step = rng.randrange(-200, 200)
            seq = (seq + step) & 0xFFFF
            t += rng.choice((0, 0, 100, 250, 1000, 5000, 20_000, 300_000, -700, 9_000_000,
                             -9_000_000))
            t = min(max(t, start_us - 600_000_000), start_us + 600_000_000)  # < 35 min apart
            arrivals.append((seq, t))
        out.append(arrivals)
    return within_bound(out)


def test_random_rounds_match_python_byte_for_byte():
    rng = random.Random(15)
    for _ in range(150):
        compare(random_rounds(rng, rng.randrange(1, 8), rng.choice((5, 40, 400, 1500))))


def test_small_writes_go_on_where_they_stopped():
    rng = random.Random(16)
    for _ in range(40):
        compare(random_rounds(rng, 4, 600), NativeWindow(packets=1, room=1300))
        compare(random_rounds(rng, 4, 600), NativeWindow(packets=3, room=3000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), rounds=st.integers(1, 6),
       per_round=st.sampled_from((3, 30, 300, 2000)))
def test_hypothesis_rounds_match_python(seed: int, rounds: int, per_round: int) -> None:
    compare(random_rounds(random.Random(seed), rounds, per_round))


@given(st.lists(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(-(1 << 29), 1 << 29)),
                         max_size=30), min_size=1, max_size=5))
def test_arbitrary_sequence_numbers_match_python(rounds: list[list[tuple[int, int]]]) -> None:
    """Any 16-bit numbers (restarts, too old, the wrap), times within ~18 minutes."""
    base = 1 << 41
    compare(within_bound([[(seq, base + t) for seq, t in arrivals] for arrivals in rounds]))


@pytest.mark.parametrize("rounds", [
    [[(65530 + i, 10_000 + 5000 * i) for i in range(12)], [(6, 80_000)]],  # the wrap
    [[(100, 1000), (101, 2000), (104, 5000), (104, 9000), (105, 6000)], []],  # dup, loss
    [[(10, 1000), (12, 2000), (11, 2500), (13, 3000)], [(15, 4000)], [(14, 4500), (16, 5000)]],
    [[(1000, 0)], [(1000 + twcc.MAX_SEQUENCE_JUMP + 5, 1000)],  # restart, then ancient
     [(1000 + twcc.MAX_SEQUENCE_JUMP + 5 + i, 1000 + i) for i in range(1, 3000)],
     [(1000 + twcc.MAX_SEQUENCE_JUMP + 10, 99_999)]],
    [[(1, 0), (2, 10_000_000), (3, 10_000_100), (4, 2_000_000)]],  # deltas beyond 16 bits
    [[(i, 1000 * i) for i in range(700)]],  # more than 256 received: split
    [[(i, 1000 * i + (70_000 if i % 2 else 0)) for i in range(0, 4000, 2)]],  # large deltas
    [[(i * 13, 1000 * i) for i in range(400)]],  # halved until the packet fits
    [[(i * 10, 1000 * i + (70_000 if i % 3 else 0)) for i in range(600)]],
    [[(5, 0), (5 - twcc.HISTORY_PACKETS - 1, 10)], [(7, 20), (7 - twcc.HISTORY_PACKETS, 30)]],
    [[(40_000, 0), (40_000 - twcc.HISTORY_PACKETS - twcc.MAX_SEQUENCE_JUMP - 1, 1)]],  # back
    [[(0, 0)], [(0, 1)], [(65535, 2)], [(1, 3)], []],
])
def test_cases_of_test_twcc_match_python(rounds: list[list[tuple[int, int]]]) -> None:
    compare(rounds)


def test_past_the_ring_the_oldest_statuses_are_left_out():
    """A jump forward of more than the ring, yet no restart: Python reports every
    status since the last feedback; the C window the newest SFTE_TWCC_SLOTS."""
    window = NativeWindow()
    window.add(100, 0)
    window.add(100 + slots() + 50, 1000)
    packets = [decode(p) for p in window.feedback(1, 2)]
    statuses = [a for d in packets for a in d.arrivals_us]
    assert packets[0].base_seq == 100 + 51 and len(statuses) == slots()
    assert statuses[-1] is not None and not any(statuses[:-1])
    window.add(100, 2000)  # forgotten: too old for the ring
    assert window.counts() == (0, 1) and window.feedback(1, 2) == []


def test_arrivals_far_apart_in_time_forget_the_older():
    window = NativeWindow()
    window.add(10, 0)
    window.add(11, 1000)
    window.feedback(1, 2)
    window.add(9, 3_000_000_000)  # 50 minutes later: 10 and 11 no longer fit 32 bits
    (packet,) = window.feedback(1, 2)
    assert decode(packet).arrivals_us[1:] == [None, None]
