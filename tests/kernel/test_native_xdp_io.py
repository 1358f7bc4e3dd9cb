"""The native engine's AF_XDP I/O (``--native-io``) on real veth pairs: which I/O
is chosen and why, what reaches the legs' sockets beside the steered RTP, and
that nothing stays attached or pinned after close or a failed start. The media
contract on this I/O is the contract suite's ``native-xdp`` plane."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
from typing import Any

import pytest

from sftd.bpf.xdpprog import PIN_ROOT
from sftd.controller.dataplane import Counter, SlotSource, StreamKind
from sftd.engine.dataplane import EngineUnavailable, NativeDataPlane
from sftd.engine.xsk import XskPort
from tests.conftest import VethTopology
from tests.dataplane.planes import KERNEL_PORTS, NativeXdpHarness, client_endpoint
from tests.rtpkit import make_rtp

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

STUN = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, b"transaction!")
DTLS = bytes([22, 0xFE, 0xFD]) + bytes(30)
RTCP = bytes([0x80, 200, 0, 6]) + bytes(24)


def xdp_attached(ifname: str) -> bool:
    out = subprocess.run(["ip", "-d", "link", "show", ifname], check=True,
                         capture_output=True, text=True).stdout
    return "prog/xdp" in out


def steering_pins(instance: str) -> list[str]:
    return sorted(p.name for p in PIN_ROOT.glob(f"steer-{instance}-*")) \
        if PIN_ROOT.exists() else []


def test_auto_takes_udp_on_loopback_and_says_why(caplog):
    caplog.set_level(logging.INFO, logger="sftd.native")
    plane = NativeDataPlane(workers=1, io="auto", interfaces=("lo",), media_ports=KERNEL_PORTS)
    try:
        assert plane.io == "udp"
        (line,) = [r.getMessage() for r in caplog.records if "I/O" in r.getMessage()]
        assert "I/O udp (AF_XDP unavailable: lo is a loopback interface" in line, line
    finally:
        plane.close()


def test_xdp_refused_on_loopback_with_the_reason():
    with pytest.raises(EngineUnavailable, match="--native-io xdp: lo is a loopback interface"):
        NativeDataPlane(workers=1, io="xdp", interfaces=("lo",), media_ports=KERNEL_PORTS)


def test_auto_takes_xdp_on_a_veth_and_close_detaches_and_unpins(caplog):
    caplog.set_level(logging.INFO, logger="sftd.native")
    instance = f"xe{os.getpid()}auto"
    with VethTopology("xe") as topo:
        plane = NativeDataPlane(workers=2, io="auto", interfaces=(topo.host_if,),
                                media_ports=KERNEL_PORTS, instance=instance)
        try:
            assert plane.io == "xdp"
            assert any(f"I/O xdp (AF_XDP on {topo.host_if} (1 queues, driver XDP)"
                       in r.getMessage() for r in caplog.records)
            assert xdp_attached(topo.host_if)
            assert steering_pins(instance) == [f"steer-{instance}-{topo.host_if}"]
        finally:
            plane.close()
        assert not xdp_attached(topo.host_if)
        assert steering_pins(instance) == []


def test_a_failed_start_leaves_nothing_attached_or_pinned():
    """The second interface's queue already has an AF_XDP socket: the start fails
    after the first interface was fully set up and the second's program attached."""
    instance = f"xe{os.getpid()}fail"
    with VethTopology("xe") as first, VethTopology("xe") as second, \
            XskPort(second.host_if, 0):
        with pytest.raises(EngineUnavailable, match="another AF_XDP socket is bound"):
            NativeDataPlane(workers=1, io="xdp", interfaces=(first.host_if, second.host_if),
                            media_ports=KERNEL_PORTS, instance=instance)
        assert not xdp_attached(first.host_if) and not xdp_attached(second.host_if)
        assert steering_pins(instance) == []
        # auto falls back to the sockets, and leaves nothing behind either
        plane = NativeDataPlane(workers=1, io="auto",
                                interfaces=(first.host_if, second.host_if),
                                media_ports=KERNEL_PORTS, instance=instance)
        try:
            assert plane.io == "udp" and "another AF_XDP socket" in plane.io_reason
            assert not xdp_attached(first.host_if) and steering_pins(instance) == []
        finally:
            plane.close()


class _Record(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)


class _RecordingHarness(NativeXdpHarness):
    """The legs' sockets keep what reaches them instead of handing it to the plane."""

    async def _endpoints(self, leg_id: int) -> Any:
        record = _Record()
        sft_t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: record, local_addr=(self.topology.host_ip, KERNEL_PORTS[0] + leg_id))
        self.sockets = getattr(self, "sockets", {})
        self.sockets[leg_id] = record
        client_t, client = await client_endpoint(self.topology)
        self.transports += [sft_t, client_t]
        return sft_t.get_extra_info("sockname"), sft_t, client_t, client


async def test_control_goes_to_the_legs_socket_rtp_through_af_xdp():
    h = _RecordingHarness()
    try:
        await h.leg(1)
        await h.leg(2)
        h.plane.set_publisher(1, (0x1111,), {})
        h.plane.set_slot(2, StreamKind.AUDIO, 0, SlotSource(1, csrc=9))
        media = [make_rtp(0x1111, seq, seq * 960, b"\x01" * 100) for seq in range(20)]
        for packet in media:
            h.send(1, packet)
        for control in (STUN, DTLS, RTCP):
            h.send(1, control, protect=False)
        got = await h.received(2, settle=0.3)
        assert [p[16:] for p in got] == [p[12:] for p in media]  # CSRC added, payload kept
        assert sorted(h.sockets[1].datagrams) == sorted([STUN, DTLS, RTCP])
        counters, detail = h.plane.read_counters(), h.plane.read_detail_counters()
        assert counters[Counter.RX_PACKETS] == detail["XDP_RX"] == 20
        assert counters[Counter.TX_PACKETS] == detail["XDP_TX"] == 20
        assert detail["UPCALLS"] == 3 and detail["STEER_REDIRECT"] == 20
        assert detail["XDP_RX_DROPPED"] == detail["XDP_HANDOFFS"] == 0
        assert (detail["STEER_PASS_STUN"], detail["STEER_PASS_DTLS"],
                detail["STEER_PASS_RTCP"]) == (1, 1, 1)
        # a removed leg's RTP is no longer steered: dropped at the interface, counted
        h.plane.remove_leg(1)
        h.send(1, make_rtp(0x1111, 21, 21 * 960, b"\x01" * 100))
        assert await h.received(2) == []
        assert h.plane.read_detail_counters()["STEER_DROP_UNKNOWN"] == 1
    finally:
        h.close()


async def test_media_arriving_on_another_workers_queue_is_handed_over():
    """Two receive queues, a port on each, owned by workers 0 and 1, with one
    conference on each worker. The clients' end sends everything on queue 1 (XPS),
    so conference 1's RTP arrives on worker 1's port and goes to worker 0 through
    its queue (a conference's state keeps one writer); copies leave from worker
    0's own port."""
    h = NativeXdpHarness(queues=2)
    try:
        h.clients_transmit_on_last_queue()
        for conference, (pub, sub) in ((1, (1, 2)), (2, (3, 4))):
            await h.leg(pub, conference=conference)
            await h.leg(sub, conference=conference)
            h.plane.set_publisher(pub, (0x1111,), {})
            h.plane.set_slot(sub, StreamKind.AUDIO, 0, SlotSource(pub, csrc=conference))
        assert [h.plane._legs[leg].worker for leg in (1, 2, 3, 4)] == [0, 0, 1, 1]
        for seq in range(20):
            for pub in (1, 3):
                h.send(pub, make_rtp(0x1111, seq, seq * 960, bytes([pub]) * 80))
        for sub, pub in ((2, 1), (4, 3)):
            got = await h.received(sub)
            assert [p[16:] for p in got] == [bytes([pub]) * 80] * 20, sub
        counters, detail = h.plane.read_counters(), h.plane.read_detail_counters()
        assert counters[Counter.TX_PACKETS] == detail["XDP_TX"] == 40
        assert detail["XDP_RX"] == 40 and detail["XDP_HANDOFFS"] == 20
    finally:
        h.close()
