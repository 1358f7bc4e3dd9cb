"""Chrome's send-side estimate on the kernel data plane: sftd with its programs on
a veth, headless Chromium in another namespace. The arrivals come from the TC
program's records (sft_twcc_rings), not from media in user space."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from tests.conftest import CHROMIUM_FLAGS
from tests.e2e.helpers import new_convid
from tests.e2e.test_bandwidth_feedback import (
    MIN_ESTIMATE_BPS,
    MIN_FPS,
    SETTLE_SECONDS,
    uplink_figures,
)
from tests.kernel.test_sftd_kernel_e2e import _chromium_in

pytestmark = [pytest.mark.kernel, pytest.mark.browser, pytest.mark.timeout(150)]


async def test_chrome_estimate_and_frame_rate_hold_on_the_kernel_plane(
        topology, sftd_factory, tmp_path):
    from playwright.async_api import async_playwright

    from sftd.bpf.dataplane import kernel_available

    ok, reason = kernel_available()
    assert ok, reason
    server = await sftd_factory("-I", topology.host_ip, "-O", topology.host_if, "--dataplane",
                                "kernel", "--instance", topology.netns, "--demo")
    url = f"http://{topology.host_ip}:{server.port}"
    profile = tempfile.mkdtemp(prefix="sft-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=_chromium_in(topology.netns, tmp_path), headless=True,
                args=[*CHROMIUM_FLAGS, f"--unsafely-treat-insecure-origin-as-secure={url}"],
                permissions=["camera", "microphone"])
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                await page.goto(f"{url}/demo/?conv={new_convid()}&user=sender")
                figures = await uplink_figures(page)
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    print(f"kernel plane, after {SETTLE_SECONDS} s: availableOutgoingBitrate "
          f"{figures['estimate_kbps']:.0f} kbit/s, encoder {figures['fps']:.1f} fps, "
          f"video sent {figures['video_sent_kbps']:.0f} kbit/s over {figures['layers']} layer(s)")
    metrics = await server.metrics()
    assert metrics['sft_dataplane_info{dataplane="kernel"}'] == 1
    assert metrics['sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}'] == 0
    assert metrics['sft_dataplane_detail_total{counter="TWCC_RECORDS_DROPPED"}'] == 0
    assert figures["estimate_kbps"] * 1000 >= MIN_ESTIMATE_BPS, figures
    assert figures["fps"] >= MIN_FPS, figures
