"""Who may receive whom: separate conferences, and mutual authorisation."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import (
    confpart_entry,
    frames_from,
    gets_media,
    media_table,
    new_convid,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def ssrcs_of(observer, members) -> tuple[set[int], set[int]]:
    """(audio, video) SSRCs that ``observer``'s CONFPART gives ``members``."""
    audio, video = set(), set()
    for m in members:
        e = confpart_entry(observer, m)
        assert e is not None, f"{m.userid} missing from {observer.userid}'s CONFPART"
        audio.add(int(e["ssrc_audio"]))
        video.add(int(e["ssrc_video"]))
    return audio, video


async def test_two_conferences_never_leak(sftd_on_plane, wire_client):
    sftd = sftd_on_plane
    conv1, conv2 = new_convid(), new_convid()
    # Different sizes, so a leak would also show as an extra source on a slot.
    one = [await wire_client(sftd, conv1, f"one-{i}") for i in range(2)]
    two = [await wire_client(sftd, conv2, f"two-{i}") for i in range(3)]
    everyone = one + two

    def meshed(group) -> bool:
        return all(gets_media(x, [y for y in group if y is not x]) for x in group)

    await wait_until(lambda: meshed(one) and meshed(two), 25, "media inside each conference",
                     lambda: media_table(everyone))
    await asyncio.sleep(2.0)  # let anything that might leak arrive

    for group, other in ((one, two), (two, one)):
        for rx in group:
            assert rx.confpart_people() == [m.person for m in group]
            own_audio, own_video = ssrcs_of(rx, group)
            other_audio = {int(confpart_entry(other[0], m)["ssrc_audio"]) for m in other}
            seen_audio = {c for (k, c) in rx.received.csrc_packets if k == "audio"}
            seen_video = {c for (k, c) in rx.received.csrc_packets if k == "video"}
            assert seen_audio <= own_audio - {int(confpart_entry(rx, rx)["ssrc_audio"])}
            assert not seen_audio & other_audio
            assert seen_video <= own_video
            assert not rx.received.unknown_csrc_packets
            for tx in other:
                assert frames_from(rx, tx) == (0, 0)
                assert tx.person not in rx.received.by_person
            # As many distinct sources on the slots as there are others here.
            sources = {c for seen in rx.received.slot_last_seen.values() for c in seen}
            assert len(sources) == 2 * (len(group) - 1), (rx.userid, sources)


async def test_media_needs_mutual_authorisation(sftd_on_plane, wire_client):
    sftd = sftd_on_plane
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b", refuse={"a"})  # b does not authorise a
    c = await wire_client(sftd, conv, "c")
    everyone = [a, b, c]

    await wait_until(lambda: gets_media(c, [a, b]) and gets_media(a, [c])
                     and gets_media(b, [c]), 25, "media between authorised pairs",
                     lambda: media_table(everyone))
    await asyncio.sleep(2.0)

    # b refused a: nothing flows either way between them.
    for rx, tx in ((a, b), (b, a)):
        assert frames_from(rx, tx) == (0, 0), media_table(everyone)
        e = confpart_entry(rx, tx)
        assert rx.received.csrc_packets[("audio", int(e["ssrc_audio"]))] == 0
        assert rx.received.csrc_packets[("video", int(e["ssrc_video"]))] == 0
    # They still know of each other (CONFPART lists everyone).
    assert a.confpart_people() == b.confpart_people() == [a.person, b.person, c.person]
    # b's CONFPART reply really refused a.
    sent = list(b.received.confpart.get("participants") or [])
    assert sent and b.authorizes(sent[0]) is False

    # Authorising later lets media flow (b changes its mind and answers again).
    b.refuse.clear()
    b.answer_confpart()
    b.send_confstreams()
    await wait_until(lambda: gets_media(a, [b], audio=5, video=3)
                     and gets_media(b, [a], audio=5, video=3), 15,
                     "media after mutual authorisation", lambda: media_table(everyone))
