"""The userspace plane records transport-wide arrivals for the feedback loop:
authentic packets only (padding probes included), per leg, over real UDP on
loopback with libsrtp at both ends."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from sftd.controller.dataplane import ExtensionIds
from sftd.controller.twcc import MAX_PENDING_ARRIVALS
from tests.dataplane.planes import EXT
from tests.dataplane.test_contract import AUDIO_SSRC, VIDEO_SSRC
from tests.rtpkit import make_rtp


def _packet(seq: int, twcc_seq: int | None, ssrc: int = VIDEO_SSRC, payload: bytes = b"\x02" * 80,
            padding: int = 0, ext_id: int = EXT.transport_cc) -> bytes:
    extensions = {ext_id: struct.pack("!H", twcc_seq)} if twcc_seq is not None else None
    return make_rtp(ssrc, seq, seq * 3000, payload, pt=100, extensions=extensions,
                    padding=padding)


async def test_authentic_packets_are_recorded_in_order_with_their_arrival(h):
    pub = await h.leg(1)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    before = time.monotonic_ns()
    for i, seq in enumerate((65534, 65535, 0, 1)):
        h.send(1, _packet(10 + i, seq, AUDIO_SSRC if i % 2 else VIDEO_SSRC))
    h.send(1, _packet(14, 2, payload=b"", padding=200))  # a padding-only probe
    await asyncio.sleep(0.1)
    records = h.plane.read_transport_arrivals()[pub.leg_id]
    assert [seq for seq, _ in records] == [65534, 65535, 0, 1, 2]
    times = [t for _, t in records]
    assert times == sorted(times) and before <= times[0] and times[-1] <= time.monotonic_ns()
    assert h.plane.read_transport_arrivals() == {}


async def test_forged_replayed_and_unmarked_packets_are_not_recorded(h):
    await h.leg(1)
    genuine = h.send(1, _packet(20, 7))
    h.send(1, genuine, protect=False)  # replay
    forged = bytearray(h.legs[1].peer.protect(_packet(21, 8)))
    forged[-1] ^= 1
    h.send(1, bytes(forged), protect=False)
    h.send(1, _packet(22, None))
    h.send(1, make_rtp(VIDEO_SSRC, 23, 0, b"\x02" * 80, extensions={EXT.transport_cc: b"\x01"}))
    h.send(1, _packet(24, 9))
    await asyncio.sleep(0.1)
    assert [seq for seq, _ in h.plane.read_transport_arrivals()[1]] == [7, 9]


async def test_legs_are_kept_apart_and_a_removed_leg_forgotten(h):
    await h.leg(1)
    await h.leg(2)
    await h.leg(3)
    h.send(1, _packet(1, 11))
    h.send(2, _packet(1, 12))
    h.send(3, _packet(1, 13))
    await asyncio.sleep(0.1)
    h.plane.remove_leg(3)
    got = {leg: [s for s, _ in records]
           for leg, records in h.plane.read_transport_arrivals().items()}
    assert got == {1: [11], 2: [12]}


async def test_the_negotiated_id_is_used(h):
    spec = await h.leg(1)
    assert spec.extensions.transport_cc == EXT.transport_cc == ExtensionIds().transport_cc
    h.send(1, _packet(1, 5, ext_id=9))  # not the negotiated id
    await asyncio.sleep(0.1)
    assert h.plane.read_transport_arrivals() == {}
    h.send(1, _packet(2, 6))
    await asyncio.sleep(0.1)
    assert [s for s, _ in h.plane.read_transport_arrivals()[1]] == [6]


# MAX_PENDING_ARRIVALS bounds the userspace plane's list; the kernel plane's ring
# is bounded by its size (tests/kernel/test_kernel_transport_arrivals.py).
@pytest.mark.parametrize("h", ["userspace"], indirect=True)
async def test_a_backlog_is_bounded(h):
    await h.leg(1)
    for i in range(MAX_PENDING_ARRIVALS + 3):
        h.plane.handle_packet(1, h.legs[1].peer.protect(_packet(100 + i, i)))
    assert len(h.plane.read_transport_arrivals()[1]) == MAX_PENDING_ARRIVALS
    assert h.plane.read_detail_counters()["TWCC_RECORDS_DROPPED"] == 3
