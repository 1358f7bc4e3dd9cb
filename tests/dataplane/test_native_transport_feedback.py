"""The native plane writes transport-wide feedback itself (engine/src/twcc.c):
packets pushed through the engine come back as feedback reporting the sequence
numbers that arrived, and TransportFeedback uses that path for the plane."""

from __future__ import annotations

import asyncio

import pytest

from sftd.controller import twcc
from tests.dataplane.test_transport_arrivals import _packet
from tests.unit.test_twcc import decode

pytestmark = pytest.mark.parametrize("h", ["native"], indirect=True)


def _reported(packets: list[bytes]) -> dict[int, bool]:
    """Sequence number -> arrived, over the packets of one feedback round."""
    statuses = {}
    for packet in packets:
        d = decode(packet)
        for i, arrival in enumerate(d.arrivals_us):
            statuses[(d.base_seq + i) & 0xFFFF] = arrival is not None
    return statuses


async def test_feedback_reports_the_sequence_numbers_sent(h):
    await h.leg(1)
    await h.leg(2)
    sent = [65530, 65531, 65533, 65534, 0, 1, 3]  # across the wrap, 65532 and 2 lost
    for i, seq in enumerate(sent):
        h.send(1, _packet(10 + i, seq))
    await asyncio.sleep(0.2)
    packets = h.plane.transport_feedback(1, 0x1111, 0x2222)
    assert len(packets) == 1
    d = decode(packets[0])
    assert (d.sender_ssrc, d.media_ssrc, d.base_seq, d.feedback_count) == (0x1111, 0x2222,
                                                                           65530, 0)
    assert _reported(packets) == {seq: seq in sent for seq in (*range(65530, 65536), 0, 1, 2, 3)}
    times = [a for a in d.arrivals_us if a is not None]
    assert times == sorted(times) and times[-1] - times[0] < 200_000
    assert h.plane.transport_feedback(1, 0x1111, 0x2222) == []  # nothing new
    assert h.plane.transport_feedback(2, 0x1111, 0x2222) == []  # nothing sent there

    h.send(1, _packet(20, 2))  # late: the next feedback starts again at it
    h.send(1, _packet(21, 4))
    await asyncio.sleep(0.2)
    (packet,) = h.plane.transport_feedback(1, 0x1111, 0x2222)
    d = decode(packet)
    assert (d.base_seq, d.feedback_count) == (2, 1)
    assert [a is not None for a in d.arrivals_us] == [True, True, True]
    assert h.plane.transport_feedback_counts(1) == (0, 0)


async def test_feedback_is_the_python_windows_for_the_same_arrivals(h):
    """The arrivals the engine recorded, fed to ArrivalWindow, give the same bytes."""
    await h.leg(1)
    python = twcc.ArrivalWindow()
    for number, burst in enumerate(((100, 101, 103, 102, 102, 110), (111, 90, 112))):
        for i, seq in enumerate(burst):
            h.send(1, _packet(10 * number + i + 1, seq))
        await asyncio.sleep(0.2)
        # read_transport_arrivals pops the same ring: peek by draining into Python
        arrivals = h.plane.read_transport_arrivals().get(1, [])
        assert [s for s, _ in arrivals] == list(burst)
        for seq, arrival_ns in arrivals:
            python.add(seq, arrival_ns // 1000)
        native = h.plane._lib  # the same arrivals into the leg's window, by the test API
        window = native.sfte_leg_twcc(h.plane._legs[1].handle)
        for seq, arrival_ns in arrivals:
            native.sfte_twcc_add(window, seq, arrival_ns // 1000)
        assert h.plane.transport_feedback(1, 5, 6) == python.feedback(5, 6)
    assert h.plane.transport_feedback_counts(1) == (python.duplicates, python.too_old) == (1, 0)


async def test_transport_feedback_loop_sends_through_the_plane(h):
    await h.leg(1)
    await h.leg(2)
    for i in range(30):
        h.send(1, _packet(i + 1, 500 + i))
        h.send(2, _packet(i + 1, 7 + i))
    await asyncio.sleep(0.2)
    feedback = twcc.TransportFeedback()
    sent: list[bytes] = []
    assert isinstance(h.plane, twcc.FeedbackSource)
    feedback.send_from(h.plane, lambda leg: twcc.FeedbackTarget(1, 2, sent.append)
                       if leg == 1 else None)
    assert feedback.packets_sent == len(sent) == 1 and feedback.windows == {}
    assert _reported(sent) == {500 + i: True for i in range(30)}
    # leg 2 had no target: its arrivals are gone and its window starts afresh
    h.send(2, _packet(40, 37))
    await asyncio.sleep(0.2)
    (packet,) = h.plane.transport_feedback(2, 1, 2)
    assert (decode(packet).base_seq, decode(packet).feedback_count) == (37, 0)
    assert len(decode(packet).arrivals_us) == 1
