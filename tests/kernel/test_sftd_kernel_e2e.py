"""The whole server on the kernel data plane: ``sftd --dataplane kernel`` with
its programs on a veth, an aiortc client (sft-probe) and two headless Chromium
pages in another network namespace. Every receiver decodes media from every
other participant while no media packet reaches user space."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT
from tests.e2e.helpers import new_convid
from tests.e2e.test_browser import browser_gets, page_stats

pytestmark = [pytest.mark.kernel, pytest.mark.browser, pytest.mark.timeout(150)]


def _chromium_in(netns: str, directory: Path) -> str:
    """Playwright starts this instead of Chromium: the same binary in ``netns``."""
    wrapper = directory / "chromium-in-netns"
    wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


async def test_aiortc_and_chromium_call_through_the_kernel_path(topology, sftd_factory, tmp_path):
    from playwright.async_api import async_playwright

    from sftd.bpf.dataplane import kernel_available

    ok, reason = kernel_available()
    assert ok, reason
    server = await sftd_factory("-I", topology.host_ip, "-O", topology.host_if, "--dataplane",
                                "kernel", "--instance", topology.netns, "--demo")
    url = f"http://{topology.host_ip}:{server.port}"
    conv = new_convid()
    probe = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topology.netns, str(ROOT / ".venv/bin/sft-probe"), url,
        "--conv", conv, "--user", "probe", "--duration", "25",
        "--local-address", topology.client_ip, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    chromium = _chromium_in(topology.netns, tmp_path)
    profiles = []
    async with async_playwright() as pw:
        contexts = []
        try:
            pages = []
            for i in (1, 2):
                profile = tempfile.mkdtemp(prefix="sft-chromium-")
                profiles.append(profile)
                context = await pw.chromium.launch_persistent_context(
                    profile, executable_path=chromium, headless=True,
                    # a non-loopback http origin is not a secure context: allow media on it
                    args=[*CHROMIUM_FLAGS, f"--unsafely-treat-insecure-origin-as-secure={url}"],
                    permissions=["camera", "microphone"])
                contexts.append(context)
                page = context.pages[0] if context.pages else await context.new_page()
                await page.goto(f"{url}/demo/?conv={conv}&user=browser{i}")
                pages.append(page)
            stats: list[dict | None] = [None, None]
            for _ in range(100):
                stats = [await page_stats(p) for p in pages]
                if all(s and s["phase"] == "joined" and len(s["participants"]) == 3
                       for s in stats):
                    people = [f"{s['userid']}/{s['clientid']}" for s in stats]
                    probe_person = next(f"{p['userid']}/{p['clientid']}"
                                        for p in stats[0]["participants"]
                                        if p["userid"] == "probe")
                    if (browser_gets(stats[0], people[1]) and browser_gets(stats[0], probe_person)
                            and browser_gets(stats[1], people[0])
                            and browser_gets(stats[1], probe_person)):
                        break
                await asyncio.sleep(0.3)
            else:
                counters = {k: v for k, v in (await server.metrics()).items()
                            if "dataplane" in k and v}
                raise AssertionError(f"browsers did not decode each other and the probe "
                                     f"through the kernel path: {stats}\n{server.log_tail(40)}"
                                     f"\ndata plane counters (non-zero): {counters}")
        finally:
            for context in contexts:
                await context.close()
            for profile in profiles:
                shutil.rmtree(profile, ignore_errors=True)
    out, err = await asyncio.wait_for(probe.communicate(), 60)
    report = json.loads(out)
    (client,) = report["clients"]
    assert client["media_ok"], err.decode()[-2000:]
    browsers = [who for who in client["received"] if not who.startswith("probe/")]
    assert len(browsers) == 2
    for who in browsers:
        got = client["received"][who]
        assert got["video_frames"] >= 5 and got["audio_frames"] >= 10, got

    metrics = await server.metrics()
    assert metrics['sft_dataplane_info{dataplane="kernel"}'] == 1
    assert metrics['sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}'] == 0
    forwarded = metrics['sft_dataplane_packets_total{counter="TX_PACKETS"}']
    received = sum(got["audio_packets"] + got["video_packets"]
                   for got in client["received"].values())
    assert forwarded > received > 0
    assert metrics['sft_dataplane_packets_total{counter="DROP_AUTH"}'] == 0
