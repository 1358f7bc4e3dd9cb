"""Leaving a call: HANGUP, missing PINGs; and the metrics that count calls."""

from __future__ import annotations

import asyncio
import time

import pytest

from .helpers import (
    frames_from,
    gets_media,
    in_confpart,
    media_table,
    new_convid,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def last_media_from(rx, tx) -> float:
    stats = rx.received.by_person.get(tx.person)
    if stats is None:
        return 0.0
    return max(stats.last_audio or 0.0, stats.last_video or 0.0)


async def test_hangup_removes_participant_and_stops_media(sftd_on_plane, wire_client):
    sftd = sftd_on_plane
    conv = new_convid()
    a, b, c = [await wire_client(sftd, conv, name) for name in ("a", "b", "c")]
    everyone = [a, b, c]
    await wait_until(lambda: all(gets_media(x, [y for y in everyone if y is not x])
                                 for x in everyone), 20, "full mesh of media",
                     lambda: media_table(everyone))

    await c.hangup()
    hung_up = time.monotonic()
    await wait_until(lambda: not in_confpart(a, c) and not in_confpart(b, c), 5,
                     "a CONFPART without the participant that hung up")
    assert a.confpart_people() == [a.person, b.person]
    assert b.confpart_people() == [a.person, b.person]

    # Media from c stops (packets already in flight may land just after HANGUP).
    await asyncio.sleep(1.0)
    before = frames_from(a, c), frames_from(b, c)
    await asyncio.sleep(1.5)
    assert (frames_from(a, c), frames_from(b, c)) == before
    for rx in (a, b):
        assert last_media_from(rx, c) < hung_up + 0.5
    # The others still talk to each other.
    base = frames_from(a, b), frames_from(b, a)
    await wait_until(lambda: frames_from(a, b)[1] > base[0][1] + 5
                     and frames_from(b, a)[1] > base[1][1] + 5, 5,
                     "media between those who stayed", lambda: media_table([a, b]))


@pytest.mark.sftd_args("--ping-timeout", "3")
async def test_silent_client_is_removed_after_ping_timeout(sftd, wire_client):
    conv = new_convid()
    # Ping more often than the 3 s timeout (clients default to Wire's 5 s).
    a, b, c = [await wire_client(sftd, conv, name, ping_interval=1.0)
               for name in ("a", "b", "c")]
    everyone = [a, b, c]
    await wait_until(lambda: all(gets_media(x, [y for y in everyone if y is not x])
                                 for x in everyone), 20, "full mesh of media",
                     lambda: media_table(everyone))
    await wait_until(lambda: all(x.received.pongs >= 1 for x in everyone), 5, "PING echoes")

    c.stop_pinging()
    stopped = time.monotonic()
    await wait_until(lambda: not in_confpart(a, c) and not in_confpart(b, c), 10,
                     "the silent participant to be removed")
    removed_after = time.monotonic() - stopped
    # Its last PING went out at most 1 s before we stopped; the timeout is 3 s.
    assert removed_after >= 1.5, f"removed after only {removed_after:.1f}s"
    stopped_media = time.monotonic()
    await asyncio.sleep(1.0)
    before = frames_from(a, c), frames_from(b, c)
    await asyncio.sleep(1.0)
    assert (frames_from(a, c), frames_from(b, c)) == before
    assert last_media_from(a, c) < stopped_media + 0.5

    # Those who kept pinging stay, past another whole timeout.
    await asyncio.sleep(3.5)
    assert in_confpart(a, b) and in_confpart(b, a)
    base = frames_from(a, b)[1]
    await wait_until(lambda: frames_from(a, b)[1] > base + 5, 5, "media after the timeout")


async def test_metrics_follow_calls_and_participants(sftd, wire_client):
    async def expect(participants, calls, participants_total, calls_total):
        want = {"sft_participants": participants, "sft_calls": calls,
                "sft_participants_total": participants_total, "sft_calls_total": calls_total}
        got: dict = {}

        def ok() -> bool:
            return all(got.get(k) == v for k, v in want.items())

        deadline = time.monotonic() + 5
        while True:
            got = await sftd.metrics()
            if ok() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert {k: got.get(k) for k in want} == want

    m = await sftd.metrics()
    assert m.get("sft_uptime", -1) >= 0
    assert any(k.startswith("sft_build_info") for k in m)
    await expect(0, 0, 0, 0)

    conv1, conv2 = new_convid(), new_convid()
    a = await wire_client(sftd, conv1, "a")
    b = await wire_client(sftd, conv1, "b")
    c = await wire_client(sftd, conv2, "c")
    await expect(3, 2, 3, 2)

    await b.hangup()
    await expect(2, 2, 3, 2)
    await c.hangup()
    await expect(1, 1, 3, 2)
    d = await wire_client(sftd, conv1, "d")
    await expect(2, 1, 4, 2)
    await a.hangup()
    await d.hangup()
    await expect(0, 0, 4, 2)


async def test_hangup_is_answered(sftd, wire_client):
    """Wire's engine waits for the SFT's HANGUP answer before it lets the call go."""
    from sftd import econn

    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    await wait_until(lambda: a._send(a._message(econn.HANGUP, False)), 10, "an open channel")
    await wait_until(lambda: any(m.type == econn.HANGUP and m.resp
                                 for m in a.received.messages), 5, "HANGUP resp:true")
    await wait_until(lambda: sftd.log_text().count("ended: HANGUP") == 1, 5, "the end")
