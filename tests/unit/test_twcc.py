"""Transport-wide feedback encoding (controller/twcc.py) against the draft's field
layout, decoded here by a reader written from the draft, not from the encoder."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest

from sftd.controller import twcc


@dataclass
class Decoded:
    padding: bool
    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_64ms: int
    feedback_count: int
    chunks: list[int]
    arrivals_us: list[int | None]  # reference time + accumulated deltas


def decode(packet: bytes) -> Decoded:
    """draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1."""
    b0, pt, words = struct.unpack_from("!BBH", packet)
    assert b0 >> 6 == 2 and b0 & 0x1F == 15 and pt == 205
    assert len(packet) == 4 * (words + 1)
    end = len(packet) - (packet[-1] if b0 & 0x20 else 0)
    sender, media, base, count, ref_fb = struct.unpack_from("!IIHHI", packet, 4)
    pos = 20
    symbols: list[int] = []
    chunks = []
    while len(symbols) < count:
        (chunk,) = struct.unpack_from("!H", packet, pos)
        chunks.append(chunk)
        pos += 2
        if chunk >> 15 == 0:  # run length: T=0, S (2 bits), length (13 bits)
            symbols += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif (chunk >> 14) & 1 == 0:  # one-bit vector, 14 symbols
            symbols += [(chunk >> (13 - k)) & 1 for k in range(14)]
        else:  # two-bit vector, 7 symbols
            symbols += [(chunk >> (12 - 2 * k)) & 3 for k in range(7)]
    symbols = symbols[:count]
    reference = ref_fb >> 8
    now = reference * 64_000
    arrivals: list[int | None] = []
    for symbol in symbols:
        assert symbol != 3, "reserved symbol"
        if symbol == 0:
            arrivals.append(None)
            continue
        if symbol == 1:
            delta = packet[pos]
            pos += 1
        else:
            (delta,) = struct.unpack_from("!h", packet, pos)
            pos += 2
        now += delta * 250
        arrivals.append(now)
    assert pos <= end and not any(packet[pos:end]), "non-zero bytes after the deltas"
    return Decoded(bool(b0 & 0x20), sender, media, base, reference, ref_fb & 0xFF, chunks,
                   arrivals)


def test_hand_checked_vectors():
    """Three packets, the middle one lost, 1 ms apart, from reference 2 (128 ms)."""
    packet = twcc.encode_feedback(0x11223344, 0x55667788, 0xFFFF, 7,
                                  [128_000 + 1000, None, 128_000 + 3000])
    assert packet == bytes.fromhex(
        "8f cd 0005"          # V=2 P=0 FMT=15, PT=205, length 5 (24 bytes)
        "11223344 55667788"   # sender, media source
        "ffff 0003"           # base sequence, status count
        "000002 07"           # reference time 2 x 64 ms, feedback count 7
        "a800"                # 1-bit vector: 1 0 1, then padding symbols
        "04 08"               # deltas 1 ms (from the reference), 2 ms: small
        .replace(" ", ""))
    # A second packet 70 ms after the first: a large delta, and padding to 32 bits.
    reference = 64_000 * 0x1000001
    packet = twcc.encode_feedback(1, 2, 5, 0x1FF, [reference, reference + 70_000])
    assert packet == bytes.fromhex(
        "af cd 0006"          # P=1, length 6 (28 bytes)
        "00000001 00000002"
        "0005 0002"
        "000001 ff"           # reference 2^24 + 1 wraps to 1; count 0x1ff wraps to 0xff
        "d800"                # 2-bit vector: 01 (small), 10 (large), padding symbols
        "00 0118"             # 0 ticks, 280 ticks of 250 µs
        "0000 03"             # padding: 3 octets, the count last
        .replace(" ", ""))


def test_large_and_negative_deltas_use_two_bytes():
    arrivals = [64_000, 64_000 + 70_000, 64_000 + 69_000, 64_000 + 69_000 + 250]
    d = decode(twcc.encode_feedback(1, 2, 10, 0, arrivals))
    assert d.arrivals_us == arrivals
    assert d.chunks == [0xC000 | (1 << 12) | (2 << 10) | (2 << 8) | (1 << 6)]


def test_run_length_for_long_loss_and_long_reception():
    arrivals: list[int | None] = [1_000_000 + 20_000 * i for i in range(3)] + [None] * 5000
    arrivals += [2_000_000 + 1000 * i for i in range(20)]
    d = decode(twcc.encode_feedback(1, 2, 0, 0, arrivals))
    assert d.arrivals_us == arrivals
    assert max(c & 0x1FFF for c in d.chunks if c >> 15 == 0 and (c >> 13) & 3 == 0) > 4900
    assert any(c >> 15 == 0 and (c >> 13) & 3 == 1 for c in d.chunks)  # the 20 received
    assert len(d.chunks) <= 6


def test_delta_beyond_16_bits_is_refused():
    with pytest.raises(twcc.FeedbackError):
        twcc.encode_feedback(1, 2, 0, 0, [0, 9_000_000])


def test_window_wraps_the_sequence_number():
    window = twcc.ArrivalWindow()
    seqs = [65530 + i for i in range(12)]
    for i, seq in enumerate(seqs):
        window.add(seq & 0xFFFF, 10_000 + 5000 * i)
    (packet,) = window.feedback(1, 2)
    d = decode(packet)
    assert d.base_seq == 65530 and len(d.arrivals_us) == 12
    assert [a - d.arrivals_us[0] for a in d.arrivals_us] == [5000 * i for i in range(12)]
    window.add(6, 80_000)
    (packet,) = window.feedback(1, 2)
    d = decode(packet)
    assert (d.base_seq, d.feedback_count) == (6, 1)


def test_losses_duplicates_and_nothing_new():
    window = twcc.ArrivalWindow()
    for seq, t in ((100, 1000), (101, 2000), (104, 5000), (104, 9000), (105, 6000)):
        window.add(seq, t)
    d = decode(window.feedback(9, 8)[0])
    assert d.base_seq == 100
    assert [a is not None for a in d.arrivals_us] == [True, True, False, False, True, True]
    assert d.arrivals_us[4] - d.arrivals_us[0] == 4000  # the duplicate kept its first time
    assert window.duplicates == 1
    assert window.feedback(9, 8) == []


def test_reordering_within_and_across_feedbacks():
    window = twcc.ArrivalWindow()
    for seq, t in ((10, 1000), (12, 2000), (11, 2500), (13, 3000)):
        window.add(seq, t)
    d = decode(window.feedback(1, 2)[0])
    assert [a - d.arrivals_us[0] for a in d.arrivals_us] == [0, 1500, 1000, 2000]
    window.add(15, 4000)
    window.feedback(1, 2)  # reports 14 as lost
    window.add(14, 4500)  # late: the next feedback starts again at 14
    window.add(16, 5000)
    d = decode(window.feedback(1, 2)[0])
    assert d.base_seq == 14
    assert [a - d.arrivals_us[0] for a in d.arrivals_us] == [0, -500, 500]


def test_sender_restart_and_ancient_packets():
    window = twcc.ArrivalWindow()
    window.add(1000, 0)
    window.feedback(1, 2)
    window.add(1000 + twcc.MAX_SEQUENCE_JUMP + 5, 1000)  # a new count: no 16k losses
    d = decode(window.feedback(1, 2)[0])
    assert d.base_seq == 1000 + twcc.MAX_SEQUENCE_JUMP + 5 and len(d.arrivals_us) == 1
    for i in range(1, 3000):
        window.add(d.base_seq + i, 1000 + i)
    window.feedback(1, 2)
    window.add(d.base_seq + 5, 99_999)  # far behind: forgotten history, not re-reported
    assert window.too_old == 1 and window.feedback(1, 2) == []


def test_large_gap_in_time_splits_into_packets():
    window = twcc.ArrivalWindow()
    window.add(1, 0)
    window.add(2, 10_000_000)  # 10 s later: more than a 16-bit delta
    packets = window.feedback(1, 2)
    assert len(packets) == 2
    first, second = decode(packets[0]), decode(packets[1])
    assert (first.base_seq, len(first.arrivals_us)) == (1, 1)
    assert (second.base_seq, second.arrivals_us) == (2, [10_000_000])
    assert (first.feedback_count, second.feedback_count) == (0, 1)


def test_random_patterns_round_trip_and_fit_the_mtu():
    rng = random.Random(4)
    for _ in range(200):
        window = twcc.ArrivalWindow()
        start = rng.randrange(1 << 16)
        t = rng.randrange(1 << 40)
        sent = list(range(start, start + rng.randrange(1, 3000)))
        for i in range(len(sent) - 1):  # reordering by a few places
            if rng.random() < 0.05:
                j = min(len(sent) - 1, i + rng.randrange(1, 20))
                sent[i], sent[j] = sent[j], sent[i]
        expected: dict[int, int] = {}
        for seq in sent:
            if rng.random() < 0.3:
                continue
            t += rng.choice((0, 100, 1000, 20_000, 300_000))
            window.add(seq & 0xFFFF, t)
            expected.setdefault(seq, t)
        seen: dict[int, int] = {}
        for packet in window.feedback(1, 2):
            assert len(packet) <= twcc.MAX_FEEDBACK_BYTES
            d = decode(packet)
            for i, arrival in enumerate(d.arrivals_us):
                if arrival is not None:
                    seen[start + ((d.base_seq + i - start) & 0xFFFF)] = arrival
        first = min(expected)
        # times are exact to the 250 µs tick, relative to each packet's own reference
        assert set(seen) == {s for s in expected if s >= first}
        wrap = 64_000 << 24  # the 24-bit reference time wraps
        for seq, arrival in seen.items():
            error = (arrival - expected[seq]) % wrap
            assert min(error, wrap - error) <= 125, (seq, arrival, expected[seq])


def test_transport_feedback_sends_to_live_legs_and_forgets_gone_ones():
    feedback = twcc.TransportFeedback()
    sent: list[bytes] = []
    feedback.record({5: [(1, 1_000_000), (2, 2_000_000)], 6: [(9, 1_000_000)]})
    feedback.send(lambda leg: twcc.FeedbackTarget(77, 88, sent.append) if leg == 5 else None)
    assert len(sent) == 1 and decode(sent[0]).sender_ssrc == 77
    assert decode(sent[0]).arrivals_us[1] - decode(sent[0]).arrivals_us[0] == 1000
    assert set(feedback.windows) == {5}
