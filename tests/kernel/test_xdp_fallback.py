"""A driver that refuses native XDP (here a veth whose MTU is too large for it,
as virtio_net with GRO_HW/CSUM refuses on VMs): the program runs in generic mode,
one log line says so and what to change, and its counters see the traffic."""

from __future__ import annotations

import logging
import os
import subprocess
import time

import pytest

from sftd.bpf import libbpf
from sftd.bpf.dataplane import KernelDataPlane
from sftd.controller.dataplane import LegSpec, SrtpKeys
from tests.conftest import VethTopology, owned_name

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]

PORTS = (41000, 41099)


def send_from_client(topo: VethTopology, port: int, payload: bytes, count: int) -> None:
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(('{topo.client_ip}', 5000)); "
            f"[s.sendto(bytes.fromhex('{payload.hex()}'), ('{topo.host_ip}', {port})) "
            f"for _ in range({count})]")
    subprocess.run(["ip", "netns", "exec", topo.netns, "python3", "-c", code], check=True)


def test_generic_xdp_fallback_is_named_and_counts_traffic(caplog):
    with VethTopology() as topo:
        for args in (("link", "set", topo.host_if, "mtu", "8000"),
                     ("-n", topo.netns, "link", "set", topo.client_if, "mtu", "8000")):
            subprocess.run(["ip", *args], check=True)
        caplog.set_level(logging.DEBUG)
        dp = KernelDataPlane((topo.host_if,), PORTS, instance=owned_name("xdpfb"))
        try:
            (xdp,) = [a for a in dp.attachments if a.kind == "xdp"]
            assert xdp.flags == libbpf.XDP_FLAGS_SKB_MODE
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            (line,) = [w for w in warnings if "generic (skb) mode" in w]
            assert topo.host_if in line and "ethtool -K" in line, line
            raw = [r for r in caplog.records if r.getMessage().startswith("libbpf:")]
            assert all(r.levelno == logging.DEBUG for r in raw), raw
            # a leg on the veth, then junk and a stranger's RTP aimed at its socket
            dp.add_leg(LegSpec(leg_id=1, conference_id=1, local_addr=(topo.host_ip, PORTS[0]),
                               remote_addr=(topo.client_ip, 5001),
                               srtp=SrtpKeys("SRTP_AES128_CM_SHA1_80", os.urandom(30),
                                             os.urandom(30)),
                               audio_slot_ssrcs=(1,), video_slot_ssrcs=(2,)))
            send_from_client(topo, PORTS[0], b"\x42" * 40, 5)
            send_from_client(topo, PORTS[0], b"\x80\x6f" + bytes(60), 7)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                k = dp.read_kernel_counters()
                if k["XDP_DROP_JUNK"] >= 5 and k["XDP_DROP_UNKNOWN"] >= 7:
                    break
                time.sleep(0.1)
            assert k["XDP_DROP_JUNK"] == 5 and k["XDP_DROP_UNKNOWN"] == 7, k
        finally:
            dp.close()
