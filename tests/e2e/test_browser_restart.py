"""A browser's ICE restart (CONFCONN update:true) on a host with several
network paths to the SFT: Chrome may move to another candidate pair right
after the restart, and media must keep flowing both ways."""

from __future__ import annotations

import os

import pytest

from tests.conftest import host_veth

from .helpers import new_convid
from .test_browser import _wait_async, page_stats

pytestmark = [pytest.mark.browser, pytest.mark.kernel, pytest.mark.timeout(120)]


@pytest.fixture
def second_path():
    """A veth pair with an address on each end: Chrome gathers a host candidate
    on each, sftd offers media on one of them besides loopback."""
    base = f"198.18.{os.getpid() % 250}"
    with host_veth("rs", (f"{base}.1/30", f"{base}.2/30")) as (name, _):
        yield name


@pytest.mark.parametrize("dataplane", ["userspace", "native"])
async def test_ice_restart_with_several_paths_keeps_the_call(dataplane, second_path, sftd_factory,
                                                             wire_client, browser_page):
    sftd = await sftd_factory("--demo", "-O", f"lo,{second_path}", dataplane=dataplane)
    conv = new_convid()
    page = await browser_page(f"{sftd.url}/demo/?conv={conv}&user=browser")
    client = await wire_client(sftd, conv, "aiortc")
    me = f"{client.userid}/{client.clientid}"
    stats: dict = {}

    async def flowing(after_video: int = 0, after_frames: int = 0) -> bool:
        nonlocal stats
        stats = await page_stats(page) or {}
        got = (stats.get("byPerson") or {}).get(me)
        browser = next(iter(client.received.by_person.values()), None)
        return bool(got and got["videoFrames"] > after_frames + 5 and browser is not None
                    and browser.video_frames > after_video + 5)

    def detail() -> str:
        return f"{stats}\n{sftd.log_tail(30)}"

    await _wait_async(flowing, 30, "media both ways before the restart", detail)
    for restart in range(3):
        new_ufrag = await page.evaluate("window.sftDemo.restartIce()")
        assert isinstance(new_ufrag, str) and len(new_ufrag) >= 4
        frames_before = stats["byPerson"][me]["videoFrames"]
        video_before = next(iter(client.received.by_person.values())).video_frames
        await _wait_async(lambda v=video_before, f=frames_before: flowing(v, f), 30,
                    f"media both ways after ICE restart {restart + 1}", detail)
    log = sftd.log_text()
    assert log.count("ICE restarted") == 3, log[-3000:]
    assert stats["datachannel"] == "open" and stats["connectionState"] == "connected"
    metrics = await sftd.metrics()
    assert metrics["sft_participants"] == 2 and metrics["sft_participants_total"] == 2
