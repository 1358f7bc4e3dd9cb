"""Both data planes in network namespaces: two conferences at once never see
each other's media, and a stranger spraying RTP, DTLS, STUN and junk at every
media port changes nothing for either call — it is counted and dropped."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct

import pytest
from pyroute2 import netns as pynetns

from tests.conftest import ROOT, VethTopology
from tests.e2e.helpers import new_convid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

XDP_UNKNOWN = 'sft_dataplane_detail_total{counter="XDP_DROP_UNKNOWN"}'
DROP_UNKNOWN = 'sft_dataplane_packets_total{counter="DROP_UNKNOWN_LEG"}'


def _spray(topo: VethTopology, ports: tuple[int, int], rounds: int = 3) -> int:
    """From the clients' namespace: junk at every media port; returns the RTP-looking count."""
    pynetns.pushns(topo.netns)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((topo.client_ip, 0))
    finally:
        pynetns.popns()
    rtp = 0
    try:
        for _ in range(rounds):
            for port in range(ports[0], ports[1] + 1):
                header = struct.pack("!BBHII", 0x80, 111, random.randrange(65536),
                                     random.randrange(1 << 32), random.randrange(1 << 32))
                for packet in (header + os.urandom(100),                  # SRTP-looking
                               bytes([22, 0xFE, 0xFD]) + os.urandom(60),  # DTLS
                               b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12),  # STUN
                               os.urandom(30)):
                    sock.sendto(packet, (topo.host_ip, port))
                rtp += 1
    finally:
        sock.close()
    return rtp


async def _probe(topo: VethTopology, url: str, conv: str, user: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topo.netns, str(ROOT / ".venv/bin/sft-probe"), url,
        "--conv", conv, "--user", user, "--count", "2", "--duration", "14",
        "--local-address", topo.client_ip, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


@pytest.mark.parametrize("plane", ["kernel", "userspace"])
async def test_two_conferences_and_a_stranger(sftd_factory, plane):
    with VethTopology() as topo:
        server = await sftd_factory("-I", topo.host_ip, "-O", topo.host_if, "--dataplane", plane,
                                    "--instance", topo.netns)
        url = f"http://{topo.host_ip}:{server.port}"
        probes = {user: await _probe(topo, url, new_convid(), user) for user in ("red", "blue")}
        for _ in range(100):
            await asyncio.sleep(0.2)
            if (await server.metrics())['sft_dataplane_packets_total{counter="TX_PACKETS"}'] > 300:
                break
        before = await server.metrics()
        loop = asyncio.get_running_loop()
        sprayed = await loop.run_in_executor(None, _spray, topo, server.media_ports)
        await asyncio.sleep(1)
        after = await server.metrics()
        reports = {}
        for user, proc in probes.items():
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()[-2000:]
            reports[user] = json.loads(out)
    for user, report in reports.items():
        for client in report["clients"]:
            assert client["media_ok"], client
            senders = set(client["received"])
            assert senders and all(who.startswith(f"{user}-") for who in senders), (
                f"{user} received media from another conference: {senders}")
            assert not client["unknown_csrc_packets"], client["unknown_csrc_packets"]
    assert after["sft_participants"] == 4
    if plane == "kernel":
        # XDP drops stray RTP at the legs' sockets (each counted twice: XDP detail and
        # DROP_UNKNOWN_LEG); at other ports it is another socket's business, and
        # with none there the stack drops it
        dropped = (after[XDP_UNKNOWN] - before[XDP_UNKNOWN]) + (
            after[DROP_UNKNOWN] - before[DROP_UNKNOWN])
        assert 4 * 3 * 2 <= dropped < sprayed, f"stray RTP at the legs' ports: {dropped}"
        assert after['sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}'] == 0
    else:
        # only the 4 legs' ports have sockets: their stray RTP and DTLS are counted
        dropped = after[DROP_UNKNOWN] - before[DROP_UNKNOWN]
        assert dropped >= 4 * 3 * 2, f"stray packets at the legs' ports not counted: {dropped}"
