"""No black holes: legs whose ICE path is not one of ``-O`` are served by the
kernel plane too. Clients on this host reach the SFT's NIC address through
``lo``; a conference may mix them with clients behind a real interface."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, SftServer
from tests.e2e.helpers import new_convid

from test_sftd_kernel_e2e import CLIENT_IP, HOST_IP, Topology  # tests/kernel is on sys.path

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

INFO = 'sft_dataplane_info{dataplane="kernel"}'
TX = 'sft_dataplane_packets_total{counter="TX_PACKETS"}'
USERSPACE_MEDIA = 'sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}'


def default_sftd(logdir: Path, *extra: str) -> SftServer:
    """sftd as scripts/serve.sh runs it (default ``-O``, ``--dataplane auto``), on
    free ports and its own BPF instance."""
    server = SftServer((), logdir)
    args = server.args
    for flag, value in (("-O", "lo"), ("--dataplane", "userspace")):
        i = args.index(flag)
        assert args[i + 1] == value
        del args[i:i + 2]
    args += ["--instance", f"local{os.getpid()}", *extra]
    return server


def host_address() -> str:
    """A non-loopback IPv4 address of this host: what sftd's default ``-O`` offers."""
    from signalling.cli import interface_addresses

    address = interface_addresses(None)[0]
    if address.startswith("127."):
        pytest.fail("this host has no non-loopback IPv4 address for sftd's default -O")
    return address


async def run_probe(url: str, conv: str, user: str, local: str, seconds: float,
                    netns: str | None = None) -> asyncio.subprocess.Process:
    command = [str(ROOT / ".venv/bin/sft-probe"), url, "--conv", conv, "--user", user,
               "--duration", str(seconds), "--local-address", local, "--json"]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    return await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def probe_report(proc: asyncio.subprocess.Process, server: SftServer) -> dict:
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert out, err.decode()[-2000:]
    (client,) = json.loads(out)["clients"]
    if not client["media_ok"]:
        metrics = {k: v for k, v in (await server.metrics()).items() if "dataplane" in k}
        raise AssertionError(f"{client}\n{err.decode()[-1000:]}\n{metrics}\n"
                             f"{server.log_tail(30)}")
    return client


def assert_decoded_everyone(client: dict, others: int) -> None:
    assert len(client["received"]) == others, client
    for who, got in client["received"].items():
        assert got["video_frames"] >= 5 and got["audio_frames"] >= 10, (who, got)


async def legs_while_running(server: SftServer, want: int, seconds: float = 20) -> dict:
    deadline = asyncio.get_running_loop().time() + seconds
    metrics: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        metrics = await server.metrics()
        legs = {k: v for k, v in metrics.items() if k.startswith("sft_legs{")}
        if sum(legs.values()) >= want:
            return metrics
        await asyncio.sleep(0.3)
    raise AssertionError(f"{want} legs never showed in /metrics: {metrics}\n{server.log_tail(30)}")


async def test_clients_on_this_host_get_media_on_the_kernel_plane(tmp_path):
    """The README's first command with aiortc clients: default -O (the NIC), the
    clients on this host (one on 127.0.0.1, one on the NIC's address): their
    packets take lo, and the kernel plane forwards them without the interpreter."""
    server = await default_sftd(tmp_path).start()
    try:
        conv = new_convid()
        probes = [await run_probe(server.url, conv, "viaLoopback", "127.0.0.1", 8),
                  await run_probe(server.url, conv, "viaNicAddress",
                                   await asyncio.to_thread(host_address), 8)]
        metrics = await legs_while_running(server, 2)
        assert metrics[INFO] == 1, server.log_tail(30)
        assert metrics['sft_legs{dataplane="kernel",interface="lo"}'] == 2, metrics
        for proc in probes:
            assert_decoded_everyone(await probe_report(proc, server), 1)
        metrics = await server.metrics()
        assert metrics[USERSPACE_MEDIA] == 0
        assert metrics[TX] > 200
        assert "media on the kernel data plane via lo" in server.log_text()
    finally:
        server.stop()


@pytest.fixture
def topology():
    with Topology() as topo:
        yield topo


async def test_a_conference_with_legs_on_a_veth_and_on_loopback(topology, tmp_path):
    """One client behind a veth (the ``-O`` interface), one on this host (lo):
    each decodes the other, both on the kernel plane, nothing in user space."""
    server = default_sftd(tmp_path, "-O", topology.host_if)
    server.args[server.args.index("-I") + 1] = HOST_IP
    server.url = f"http://{HOST_IP}:{server.port}"
    await server.start()
    try:
        conv = new_convid()
        remote = await run_probe(server.url, conv, "viaVeth", CLIENT_IP, 8, topology.netns)
        local = await run_probe(server.url, conv, "viaLoopback", HOST_IP, 8)
        metrics = await legs_while_running(server, 2)
        assert metrics['sft_legs{dataplane="kernel",interface="lo"}'] == 1, metrics
        assert metrics[f'sft_legs{{dataplane="kernel",interface="{topology.host_if}"}}'] == 1
        for proc in (remote, local):
            assert_decoded_everyone(await probe_report(proc, server), 1)
        metrics = await server.metrics()
        assert metrics[INFO] == 1
        assert metrics[USERSPACE_MEDIA] == 0
        assert metrics['sft_dataplane_packets_total{counter="DROP_AUTH"}'] == 0
    finally:
        server.stop()
