"""A path the kernel programs do not see is no silent black hole: with sftd's
TC filter removed from the veth its legs' media takes, the media reaches user
space, is counted as ``path_not_served``, and both participants are reported as
legs whose media is not forwarded."""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest
from test_local_paths import run_probe, stop_now  # tests/kernel is on sys.path

from tests.conftest import SftServer, owned_name
from tests.e2e.helpers import new_convid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

WITHOUT_MEDIA = 'sft_legs_without_media_total{{reason="{}"}}'


def remove_tc_filters(interface: str) -> int:
    """Deletes the BPF filters on ``interface``'s ingress by preference and handle."""
    shown = subprocess.run(["tc", "filter", "show", "dev", interface, "ingress"], check=True,
                           capture_output=True, text=True).stdout
    filters = set(re.findall(r"pref (\d+) bpf .*?handle (0x[0-9a-f]+)", shown))
    for pref, handle in filters:
        subprocess.run(["tc", "filter", "del", "dev", interface, "ingress", "pref", pref,
                        "handle", handle, "bpf"], check=True, capture_output=True)
    return len(filters)


async def test_media_on_a_path_the_programs_do_not_see_is_counted_and_reported(topology,
                                                                                 tmp_path):
    server = SftServer(("-I", topology.host_ip, "-O", topology.host_if, "--dataplane", "kernel",
                        "--instance", owned_name("unseen")), tmp_path)
    server.url = f"http://{topology.host_ip}:{server.port}"
    await server.start()
    try:
        assert remove_tc_filters(topology.host_if) == 1
        conv = new_convid()
        probes = [await run_probe(server.url, conv, user, topology.client_ip, 10, topology.netns)
                  for user in ("first", "second")]
        metrics: dict[str, float] = {}
        for _ in range(80):
            metrics = await server.metrics()
            if metrics.get(WITHOUT_MEDIA.format("not_forwarded")) == 2:
                break
            await asyncio.sleep(0.25)
        for proc in probes:
            await asyncio.wait_for(proc.communicate(), 60)
        log = server.log_text()
    finally:
        stop_now(server)
    assert metrics[WITHOUT_MEDIA.format("not_forwarded")] == 2, (metrics, log[-3000:])
    assert metrics[WITHOUT_MEDIA.format("silent")] == 0
    assert metrics[WITHOUT_MEDIA.format("not_received")] == 0
    assert metrics['sft_userspace_media_dropped_total{reason="path_not_served"}'] > 50
    assert metrics['sft_dataplane_packets_total{counter="TX_PACKETS"}'] == 0
    for user in ("first", "second"):
        assert re.search(rf"\.{user}\.\w+ \(leg \d+, media via {topology.host_if}\) without "
                         rf"media \(not_forwarded\)", log), log[-3000:]
    assert len(re.findall("reached user space although the kernel data plane serves", log)) == 2
