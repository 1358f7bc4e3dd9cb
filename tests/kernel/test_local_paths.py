"""No black holes: legs whose ICE path is not one of ``-O`` are served by the
kernel plane too. Clients on this host reach the SFT's NIC address through
``lo``; a conference may mix them with clients behind a real interface."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import ROOT, SftServer, owned_name
from tests.e2e.helpers import new_convid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

INFO = 'sft_dataplane_info{dataplane="kernel"}'
AUTO_INFO = 'sft_dataplane_info{dataplane="native"}'  # what --dataplane auto takes
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
    args += ["--instance", owned_name("local"), *extra]
    return server


def stop_now(server: SftServer) -> None:
    """SIGINT: stop at once (SIGTERM would drain the calls, then be killed and leave
    its programs on the NIC until the next start of the same instance)."""
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(15)


def host_address() -> str:
    """A non-loopback IPv4 address of this host: what sftd's default ``-O`` offers."""
    from sftd.signalling.cli import interface_addresses

    address = interface_addresses(None)[0]
    if address.startswith("127."):
        pytest.fail("this host has no non-loopback IPv4 address for sftd's default -O")
    return address


async def run_probe(url: str, conv: str, user: str, local: str, seconds: float,
                    netns: str | None = None, *extra: str) -> asyncio.subprocess.Process:
    command = [str(ROOT / ".venv/bin/sft-probe"), url, "--conv", conv, "--user", user,
               "--duration", str(seconds), "--local-address", local, "--json", *extra]
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


async def call_via_lo_and(server: SftServer, interface: str,
                          probes: tuple[asyncio.subprocess.Process, ...]) -> dict:
    """A two-party call, one leg's media via lo and one via ``interface``: each
    probe decodes the other. Returns the metrics after the call."""
    metrics = await legs_while_running(server, 2)
    assert metrics['sft_legs{dataplane="kernel",interface="lo"}'] == 1, metrics
    assert metrics[f'sft_legs{{dataplane="kernel",interface="{interface}"}}'] == 1, metrics
    for proc in probes:
        assert_decoded_everyone(await probe_report(proc, server), 1)
    return await server.metrics()


async def test_clients_on_this_host_get_media_on_the_kernel_plane(tmp_path):
    """The README's first command with aiortc clients: default -O (the NIC), two
    clients on this host on the NIC's address: their packets take lo, and the
    kernel plane forwards them without the interpreter. (A client offering only
    127.0.0.1 is refused unless media is on lo: loopback candidates would let a
    stranger aim the SFT's ICE checks at this host's own services.)"""
    server = await default_sftd(tmp_path, "--dataplane", "kernel").start()
    try:
        conv = new_convid()
        nic = await asyncio.to_thread(host_address)
        probes = [await run_probe(server.url, conv, "first", nic, 8),
                  await run_probe(server.url, conv, "second", nic, 8)]
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
        stop_now(server)


async def test_a_conference_with_legs_on_a_veth_and_on_loopback(topology, tmp_path):
    """One client behind a veth (the ``-O`` interface), one on this host (lo):
    each decodes the other, both on the kernel plane, nothing in user space."""
    server = default_sftd(tmp_path, "-O", topology.host_if, "--dataplane", "kernel")
    server.args[server.args.index("-I") + 1] = topology.host_ip
    server.url = f"http://{topology.host_ip}:{server.port}"
    await server.start()
    try:
        conv = new_convid()
        remote = await run_probe(server.url, conv, "viaVeth", topology.client_ip, 8,
                                 topology.netns)
        local = await run_probe(server.url, conv, "viaLoopback", topology.host_ip, 8)
        metrics = await call_via_lo_and(server, topology.host_if, (remote, local))
        assert metrics[INFO] == 1
        assert metrics[USERSPACE_MEDIA] == 0
        assert metrics['sft_dataplane_packets_total{counter="DROP_AUTH"}'] == 0
    finally:
        stop_now(server)


ARTIFACTS = Path(os.environ.get("SFT_TEST_ARTIFACTS", ROOT / "results" / "test-artifacts"))


@pytest.mark.browser
async def test_readme_first_command_two_local_tabs(tmp_path, browser_page):
    """What a newcomer does first: ``sftd --demo`` as scripts/serve.sh starts it
    (default -O, --dataplane auto), the demo page in two headless Chromium tabs on
    this host. Both decode video and audio from the other, on the plane auto
    takes (native), with no media in the interpreter. A screenshot of one tab is kept."""
    from tests.e2e.test_browser import browser_gets, page_stats

    server = default_sftd(tmp_path, "--demo")
    args = server.args
    del args[args.index("--media-ports"):args.index("--media-ports") + 2]  # the default range
    await server.start()
    pages: list = []
    try:
        conv = new_convid()
        for i in (1, 2):
            pages.append(await browser_page(f"{server.url}/demo/?conv={conv}&user=tab{i}"))
        stats: list = [None, None]
        for _ in range(120):
            stats = [await page_stats(p) for p in pages]
            if all(s and s["phase"] == "joined" and len(s["participants"]) == 2 for s in stats):
                people = [f"{s['userid']}/{s['clientid']}" for s in stats]
                if browser_gets(stats[0], people[1]) and browser_gets(stats[1], people[0]):
                    break
            await asyncio.sleep(0.3)
        else:
            metrics = {k: v for k, v in (await server.metrics()).items() if "dataplane" in k}
            raise AssertionError(f"the tabs did not decode each other: {stats}\n{metrics}\n"
                                 f"{server.log_tail(40)}")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "readme-first-command-tab1.png"
        await pages[0].screenshot(path=str(shot))
        metrics = await server.metrics()
        got = [s["byPerson"][people[1 - i]] for i, s in enumerate(stats)]
        print(f"README first command: tab1 got {got[0]['videoFrames']} frames / "
              f"{got[0]['audioPackets']} audio packets, tab2 got {got[1]['videoFrames']} / "
              f"{got[1]['audioPackets']}; TX_PACKETS {metrics[TX]:.0f}, USERSPACE_MEDIA "
              f"{metrics[USERSPACE_MEDIA]:.0f}, legs {[k for k in metrics if 'sft_legs{' in k]}; "
              f"screenshot {shot}")
        assert metrics[AUTO_INFO] == 1, server.log_tail(30)
        assert metrics['sft_legs{dataplane="native",interface="any"}'] == 2
        # all the tabs got came through the native plane's copies
        assert metrics[TX] >= sum(g["videoPackets"] + g["audioPackets"] for g in got) > 0
        # Chrome tries its pairs first: media on a pair the engine does not read yet
        # passes the interpreter (forwarded, counted). Once settled, none does.
        await asyncio.sleep(3)
        later = await server.metrics()
        assert later[TX] > metrics[TX] + 100
        assert later[USERSPACE_MEDIA] == metrics[USERSPACE_MEDIA], later
        assert shot.stat().st_size > 1000
    finally:
        for page in pages:  # an open call would make sftd drain on SIGTERM
            await page.context.close()
        stop_now(server)
