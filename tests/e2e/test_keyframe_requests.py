"""A receiver that lost a slot's picture asks the SFT for a keyframe (PLI or
FIR on the slot's SSRC); the SFT asks that slot's publisher, not everyone."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc.rtp import RTCP_PSFB_FIR, RtcpPsfbPacket

from .helpers import gets_media, new_convid, wait_until

# periodic FIRs off (-k one hour): every FIR a publisher gets is on request
pytestmark = [pytest.mark.timeout(60), pytest.mark.sftd_args("-k", "3600000")]


def count_firs(client) -> list[int]:  # noqa: ANN001
    """FIRs reaching ``client``'s RTP router, counted as they arrive."""
    router = client.pc.getTransceivers()[1].sender.transport._rtp_router
    seen = [0]
    original = router.route_rtcp

    def route_rtcp(packet):  # noqa: ANN001, ANN202
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            seen[0] += 1
        return original(packet)

    router.route_rtcp = route_rtcp
    return seen


def slot_carrying(receiver, publisher) -> tuple[str, int]:  # noqa: ANN001
    """(mid, SFT-chosen SSRC) of the receiver's video slot that carries ``publisher``."""
    people = receiver.people_for("video")
    for mid, csrcs in receiver.slot_sources("video").items():
        if any(people.get(csrc) == publisher.person for csrc in csrcs):
            section = receiver.offer.split(f"a=mid:{mid}\r\n", 1)[1].split("m=", 1)[0]
            return mid, int(re.search(r"a=ssrc:(\d+) ", section).group(1))
    raise AssertionError("no video slot carries the publisher")


async def test_a_receivers_pli_reaches_that_slots_publisher_only(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b")
    c = await wire_client(sftd, conv, "c")
    await wait_until(lambda: gets_media(b, [a, c]), 20, "b gets a and c")
    firs_a, firs_c = count_firs(a), count_firs(c)
    await asyncio.sleep(1.0)  # the joins' own keyframe requests are over
    before_a, before_c = firs_a[0], firs_c[0]
    mid, slot_ssrc = slot_carrying(b, a)
    receiver = next(t.receiver for t in b.pc.getTransceivers() if t.mid == mid)
    await receiver._send_rtcp_pli(slot_ssrc)
    await wait_until(lambda: firs_a[0] > before_a, 5, "a FIR at the slot's publisher")
    await asyncio.sleep(0.5)
    assert firs_c[0] == before_c, "only the publisher of that slot is asked"


async def test_slots_switching_to_one_publisher_at_once_ask_it_for_one_keyframe(
        sftd, wire_client):
    """b, c and d each move a to another video slot (CONFSTREAMS in reverse
    order) within a few milliseconds: three slots switch to a, which gets one
    FIR at once and, for slots that switched after it, one more when the
    interval ends; not one per slot."""
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    others = [await wire_client(sftd, conv, name) for name in "bcd"]
    for receiver in others:
        senders = [x for x in [a, *others] if x is not receiver]
        await wait_until(lambda r=receiver, s=senders: gets_media(r, s), 20,
                         f"{receiver.userid} gets everyone")
    firs_a = count_firs(a)
    await asyncio.sleep(1.0)  # the joins' own keyframe requests are over
    before = firs_a[0]
    slots_before = [slot_carrying(r, a)[0] for r in others]
    for receiver in others:
        reverse = [{"userid": p.get("userid"), "clientid": p.get("clientid"), "quality": 0}
                   for p in reversed(receiver.others())]
        assert receiver.send_confstreams("list", reverse)
    await wait_until(lambda: firs_a[0] > before, 5, "a FIR at a")
    await wait_until(lambda: all(slot_carrying(r, a)[0] != mid
                                 for r, mid in zip(others, slots_before)), 10,
                     "a on another slot at b, c and d")
    await asyncio.sleep(1.0)
    assert 1 <= firs_a[0] - before <= 2
