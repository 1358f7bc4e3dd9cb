"""The media watch on the userspace plane over real UDP on loopback with libsrtp at
both ends: a subscriber whose socket stops taking packets is reported as
receiving nothing, a publisher none of whose media reaches anyone as not
forwarded, and legs that work are never reported, not even when they stop."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from sftd.controller.dataplane import SlotSource, StreamKind
from sftd.controller.media_watch import MediaWatch
from sftd.controller.model import Participant, ParticipantKey
from tests.dataplane.test_contract import AUDIO_SSRC, audio

# Userspace only: the failures staged here (a leg's socket closed) are that plane's.
# The kernel plane's counterpart, media on a path its programs do not see, is
# tests/kernel/test_unseen_path.py; tests/e2e/test_media_watch.py runs on both.
pytestmark = pytest.mark.parametrize("h", ["userspace"], indirect=True)

AFTER = 0.5  # the watch's window, short for the test


def participant(leg_id: int, sources: list[SlotSource | None]) -> Participant:
    name = f"user{leg_id}"
    p = Participant(key=ParticipantKey("conv", name, "client"), convid="conv", userid=name,
                    clientid="client", sessid="s", vstreams=0,
                    leg=SimpleNamespace(leg_id=leg_id),  # type: ignore[arg-type]
                    join_index=leg_id, ssrc_video=0, audio_slot_ssrcs=(1,) * len(sources),
                    video_slot_ssrcs=(), state="connected", ssrc_audio=AUDIO_SSRC)
    p.audio_sources = sources
    return p


async def test_legs_without_media_are_reported_once_working_ones_never(h):
    for leg_id in (1, 2, 3):
        await h.leg(leg_id, audio=1, video=0)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    source = SlotSource(1, 0x51)
    for subscriber in (2, 3):
        h.plane.set_slot(subscriber, StreamKind.AUDIO, 0, source)
    people = [participant(1, [None]), participant(2, [source]), participant(3, [source])]
    watch = MediaWatch(after=AFTER)
    seq = 0

    async def run(seconds: float, send: bool = True) -> None:
        nonlocal seq
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if send:
                seq += 1
                h.send(1, audio(seq))
            await asyncio.sleep(0.02)
            watch.check(time.monotonic(), people, h.plane)

    await run(3 * AFTER)
    media = h.plane.read_leg_media()
    assert media[1].received[StreamKind.AUDIO] > 20 and media[1].stranded == 0
    assert media[2].slot_packets[0] > 20 and media[3].slot_packets[0] > 20
    assert watch.found == {"silent": 0, "not_forwarded": 0, "not_received": 0}

    h.legs[3].sft_transport.close()  # leg 3's socket: nothing reaches that subscriber any more
    await run(3 * AFTER)
    assert watch.found == {"silent": 0, "not_forwarded": 0, "not_received": 1}

    h.legs[2].sft_transport.close()  # now none of the publisher's media reaches anyone
    await run(3 * AFTER)
    assert watch.found == {"silent": 0, "not_forwarded": 1, "not_received": 2}

    await run(3 * AFTER)  # once per leg
    assert watch.found == {"silent": 0, "not_forwarded": 1, "not_received": 2}


async def test_a_publisher_that_stops_is_no_black_hole(h):
    for leg_id in (1, 2):
        await h.leg(leg_id, audio=1, video=0)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    source = SlotSource(1, 0x51)
    h.plane.set_slot(2, StreamKind.AUDIO, 0, source)
    people = [participant(1, [None]), participant(2, [source])]
    watch = MediaWatch(after=AFTER)
    for seq in range(1, 40):
        h.send(1, audio(seq))
        await asyncio.sleep(0.02)
        watch.check(time.monotonic(), people, h.plane)
    h.legs[2].sft_transport.close()  # the last packet, if any, is lost; then the publisher stops
    h.send(1, audio(40))
    for _ in range(int(4 * AFTER / 0.02)):
        await asyncio.sleep(0.02)
        watch.check(time.monotonic(), people, h.plane)
    assert watch.found == {"silent": 0, "not_forwarded": 0, "not_received": 0}
