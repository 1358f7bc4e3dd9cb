"""Real browsers in a call: two headless Chromium pages (the demo page served by
sftd --demo, fake camera and microphone) and one aiortc client."""

from __future__ import annotations

import pytest

from sftd.sftclient import Person

from .helpers import new_convid, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90),
              pytest.mark.sftd_args("--demo")]


async def page_stats(page) -> dict:
    return await page.evaluate("window.sftDemo ? window.sftDemo.stats() : null")


def browser_gets(stats: dict | None, person: str, frames: int = 5, audio_packets: int = 20) -> bool:
    if not stats:
        return False
    got = stats["byPerson"].get(person)
    return bool(got and got["videoFrames"] >= frames and got["audioPackets"] >= audio_packets
                and got["audioSamples"] > 0)


async def test_two_browsers_and_an_aiortc_client(sftd, wire_client, browser_page):
    conv = new_convid()
    pages = [await browser_page(f"{sftd.url}/demo/?conv={conv}&user=browser{i}")
             for i in (1, 2)]
    client = await wire_client(sftd, conv, "aiortc")

    latest: dict[int, dict | None] = {}

    async def refresh() -> None:
        for i, page in enumerate(pages):
            latest[i] = await page_stats(page)

    def detail() -> str:
        lines = []
        for i, page in enumerate(pages):
            s = latest.get(i) or {}
            lines.append(f"  page {i + 1}: phase={s.get('phase')} error={s.get('error')} "
                         f"conn={s.get('connectionState')} dc={s.get('datachannel')} "
                         f"framesDecoded={s.get('framesDecoded')} byPerson={s.get('byPerson')}"
                         f" join={s.get('joinMs')} pair={s.get('candidatePair')}"
                         f" out={s.get('outbound')}")
            lines.extend("    console " + line for line in page.console_lines[-10:])
        lines.append(f"  aiortc: {client.summary()['received']}")
        return "\n".join(lines)

    # Both pages joined and see all three participants.
    async def joined() -> bool:
        await refresh()
        return all(s and s["phase"] == "joined" and len(s["participants"]) == 3
                   for s in latest.values())

    await _wait_async(joined, 25, "both pages to join and see 3 participants", detail)
    ids = {i: Person(latest[i]["userid"], latest[i]["clientid"]) for i in latest}
    people = {i: f"{p.userid}/{p.clientid}" for i, p in ids.items()}
    me = f"{client.userid}/{client.clientid}"

    async def browsers_decode() -> bool:
        await refresh()
        return (browser_gets(latest[0], people[1]) and browser_gets(latest[0], me)
                and browser_gets(latest[1], people[0]) and browser_gets(latest[1], me))

    await _wait_async(browsers_decode, 30, "each browser to decode the other two", detail)

    def aiortc_decodes() -> bool:
        return all((s := client.received.by_person.get(p)) is not None
                   and s.video_frames >= 5 and s.audio_frames >= 10 for p in ids.values())

    await wait_until(aiortc_decodes, 20, "the aiortc client to decode both browsers", detail)
    assert not client.received.unknown_csrc_packets, client.received.unknown_csrc_packets

    for i in latest:
        s = latest[i]
        assert sum(s["framesDecoded"].values()) > 0
        assert "CONFPART" in s["messageTypes"]
        # Video arrived on video slots (mids 6..), audio on audio slots (1..5).
        for who in s["byPerson"].values():
            assert set(who["audioMids"]) <= {"1", "2", "3", "4", "5"}
            assert who["videoMids"] and not set(who["videoMids"]) & {"1", "2", "3", "4", "5"}
    print("browser join (CONFCONN -> first decoded video) ms:",
          [latest[i]["joinMs"]["firstVideo"] for i in latest],
          "aiortc:", round(client.join_time_video * 1000) if client.join_time_video else None)


async def _wait_async(predicate, timeout: float, what: str, detail) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        await asyncio.sleep(0.3)
