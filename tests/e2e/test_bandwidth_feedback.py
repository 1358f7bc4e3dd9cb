"""Chrome's own send-side estimate, fed by the SFT's transport-wide feedback
(controller/twcc.py): with it, ``availableOutgoingBitrate`` stays at or above
300 kbit/s and the fake 15 fps camera is encoded at full rate; without it the
estimate decays towards 70 kbit/s and the encoder drops to ~9 fps.
Userspace data plane over loopback (the kernel plane: tests/kernel)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .helpers import new_convid
from .test_browser import page_stats

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120),
              pytest.mark.sftd_args("--demo", "--dataplane", "userspace")]

SETTLE_SECONDS = 20  # the estimate without feedback has long collapsed by then
WINDOW_SECONDS = 5
MIN_ESTIMATE_BPS = 300_000
MIN_FPS = 12


async def uplink_figures(page: Any) -> dict[str, float]:
    """Once the page is connected: wait SETTLE_SECONDS, then measure over WINDOW_SECONDS
    the encoder's frame rate (best layer), the video bytes sent and Chrome's estimate."""
    deadline = time.monotonic() + 30
    while True:
        stats = await page_stats(page)
        if stats and stats.get("connectionState") == "connected" and any(
                k.startswith("video") for k in stats["outbound"]):
            break
        assert time.monotonic() < deadline, f"page never connected and sent video: {stats}"
        await asyncio.sleep(0.3)
    await asyncio.sleep(SETTLE_SECONDS)
    first, t0 = await page_stats(page), time.monotonic()
    await asyncio.sleep(WINDOW_SECONDS)
    last, t1 = await page_stats(page), time.monotonic()
    video = [k for k in last["outbound"] if k.startswith("video")]
    fps = max(((last["outbound"][k]["framesEncoded"] or 0)
               - (first["outbound"].get(k, {}).get("framesEncoded") or 0)) / (t1 - t0)
              for k in video)
    sent = sum(last["outbound"][k]["bytesSent"] - first["outbound"].get(k, {}).get("bytesSent", 0)
               for k in video) * 8 / (t1 - t0)
    estimate = (last.get("candidatePair") or {}).get("availableOutgoingBitrate") or 0
    return {"estimate_kbps": estimate / 1000, "fps": fps, "video_sent_kbps": sent / 1000,
            "layers": len(video)}


async def test_chrome_estimate_and_frame_rate_hold_with_feedback(sftd, browser_page):
    page = await browser_page(f"{sftd.url}/demo/?conv={new_convid()}&user=sender")
    figures = await uplink_figures(page)
    print(f"userspace plane, after {SETTLE_SECONDS} s: availableOutgoingBitrate "
          f"{figures['estimate_kbps']:.0f} kbit/s, encoder {figures['fps']:.1f} fps, "
          f"video sent {figures['video_sent_kbps']:.0f} kbit/s over {figures['layers']} layer(s)")
    assert figures["estimate_kbps"] * 1000 >= MIN_ESTIMATE_BPS, figures
    assert figures["fps"] >= MIN_FPS, figures
