"""Harnesses of the data-plane contract tests, one per data plane in
PLANE_HARNESSES: real UDP sockets as the legs' clients, libsrtp at both ends.

userspace  the sockets and the plane's own sockets on loopback; packets reach
           the plane through ``handle_packet`` as sftd's leg sockets deliver them.
kernel     the plane's programs on the host end of a veth pair; the client
           sockets in a network namespace at the other end, so every packet
           crosses the interface the programs serve.
native     the C engine's workers on the legs' loopback sockets.
native-xdp the C engine with AF_XDP I/O on the host end of a veth pair (as the
           kernel plane), the legs' own sockets bound there too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest

from sftd.controller.dataplane import SRTP_AES_CM_128_HMAC_SHA1_80, ExtensionIds, LegSpec, SrtpKeys
from tests.conftest import VethTopology, owned_name
from tests.rtpkit import Peer

EXT = ExtensionIds()
KERNEL_PORTS = (40000, 40999)
SO_RCVBUFFORCE = 33  # Linux; root may pass net.core.rmem_max
CLIENT_RCVBUF = 16 << 20  # a plane's burst of copies waits here until the test reads
_instances = itertools.count()


def client_socket() -> socket.socket:
    """A client's UDP socket (in the caller's network namespace), unbound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CLIENT_RCVBUF)
    except PermissionError:  # not root: as much as net.core.rmem_max allows
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    return sock


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


class _SftSide(asyncio.DatagramProtocol):
    def __init__(self, plane: Any, leg_id: int) -> None:
        self.plane, self.leg_id = plane, leg_id

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.plane.handle_packet(self.leg_id, data)


@dataclass
class HarnessLeg:
    spec: LegSpec
    peer: Peer  # the client's SRTP ends
    client: _Collect  # what the client received
    client_transport: asyncio.DatagramTransport
    sft_transport: asyncio.DatagramTransport | None  # the leg's own socket (userspace plane)


class Harness:
    """Legs of one data plane, each with a client socket that sends and receives.
    A subclass makes its plane with sftd's settings unless given one."""

    plane_name = ""
    plane: Any
    # True: every packet arriving for a leg reaches the plane (the userspace plane
    # reads the leg's socket) and what it drops is counted in read_counters.
    # False: the plane takes SRTP from known legs' addresses only and leaves the
    # rest (STUN, DTLS, junk, a removed leg's packets) to the leg's socket, whose
    # demultiplexer in sftd sorts them; media it finds there is counted in
    # read_userspace_media_drops.
    sees_every_packet = True
    # True: XDP on the interface drops what is not STUN/DTLS/RTP/RTCP (and RTP from
    # addresses no leg validated) before any socket, counted in the detail
    # counters STEER_* rather than in read_counters.
    junk_dropped_at_interface = False

    def __init__(self) -> None:
        self.transports: list[asyncio.BaseTransport] = []
        self.legs: dict[int, HarnessLeg] = {}

    async def _endpoints(self, leg_id: int) -> tuple[tuple[str, int], Any,
                                                      asyncio.DatagramTransport, _Collect]:
        """(the SFT's address for the leg, its transport or None, the client's)."""
        raise NotImplementedError

    async def leg(self, leg_id: int, conference: int = 1, audio: int = 5, video: int = 2,
                  profile: str = SRTP_AES_CM_128_HMAC_SHA1_80) -> LegSpec:
        """A leg with random keys and slot SSRCs."""
        key_len = (28 if "128" in profile else 44) if "GCM" in profile else 30
        keys = SrtpKeys(profile, rx=os.urandom(key_len), tx=os.urandom(key_len))
        slots = [int.from_bytes(os.urandom(4), "big") | 1 for _ in range(audio + video)]
        return await self.add_leg(LegSpec(
            leg_id=leg_id, conference_id=conference, local_addr=("", 0), remote_addr=("", 0),
            srtp=keys, audio_slot_ssrcs=tuple(slots[:audio]),
            video_slot_ssrcs=tuple(slots[audio:]), extensions=EXT))

    async def add_leg(self, spec: LegSpec) -> LegSpec:
        """``spec`` (its keys, slots, extensions) on the plane, with this harness's
        sockets in place of its addresses and transport; returns what the plane got."""
        local_addr, sft_transport, client_t, client = await self._endpoints(spec.leg_id)
        spec = dataclasses.replace(spec, local_addr=local_addr,
                                   remote_addr=client_t.get_extra_info("sockname"),
                                   transport=sft_transport)
        self.plane.add_leg(spec)
        keys = spec.srtp
        self.legs[spec.leg_id] = HarnessLeg(spec, Peer(keys.profile, keys.rx, keys.tx), client,
                                            client_t, sft_transport)
        return spec

    def send(self, leg_id: int, packet: bytes, protect: bool = True) -> bytes:
        leg = self.legs[leg_id]
        data = leg.peer.protect(packet) if protect else packet
        leg.client_transport.sendto(data, leg.spec.local_addr)
        return data

    # Packets open_stream sent that the plane does not forward (in RX_PACKETS and
    # DROP_NOT_READY); always 0 on a plane that forwards a stream's first packet.
    primers = 0

    async def open_stream(self, leg_id: int, packet: bytes) -> None:
        """Where a plane cannot forward a publisher stream's first packet, sends
        ``packet`` (one sequence number before the test's first) and waits until
        the stream is ready; elsewhere nothing."""

    async def received(self, leg_id: int, settle: float = 0.15) -> list[bytes]:
        await asyncio.sleep(settle)
        leg = self.legs[leg_id]
        out = [leg.peer.unprotect(p) for p in leg.client.packets]
        leg.client.packets.clear()
        return out

    def close(self) -> None:
        for t in self.transports:
            t.close()
        self.plane.close()


class UserspaceHarness(Harness):
    plane_name = "userspace"

    def __init__(self, plane: Any = None) -> None:
        from sftd.controller.userspace import UserspaceDataPlane

        super().__init__()
        self.plane = plane if plane is not None else UserspaceDataPlane()

    async def _endpoints(self, leg_id: int) -> tuple[tuple[str, int], Any,
                                                      asyncio.DatagramTransport, _Collect]:
        loop = asyncio.get_running_loop()
        sft_t, _ = await loop.create_datagram_endpoint(
            lambda: _SftSide(self.plane, leg_id), local_addr=("127.0.0.1", 0))
        sock = client_socket()
        sock.bind(("127.0.0.1", 0))
        client_t, client = await loop.create_datagram_endpoint(_Collect, sock=sock)
        self.transports += [sft_t, client_t]
        return sft_t.get_extra_info("sockname"), sft_t, client_t, client


    def ssrc_state(self, leg_id: int) -> tuple[int, int]:
        """(SSRCs with SRTP state, SSRCs with a known video layer) of a leg."""
        leg = self.plane._legs[leg_id]
        return len(leg.ssrcs_seen), len(leg.video_layers)


def veth_clients(prefix: str, queues: int = 1) -> VethTopology:
    """A veth pair whose far end (in its own namespace) is the clients' wire."""
    topology = VethTopology(prefix, queues).__enter__()
    try:
        # a wire, not a local socket: packets leave the client end with full checksums
        subprocess.run(["ip", "netns", "exec", topology.netns, "ethtool", "-K",
                        topology.client_if, "tx", "off"], check=True, capture_output=True)
        client_mac = subprocess.run(
            ["ip", "-n", topology.netns, "-br", "link", "show", topology.client_if],
            check=True, capture_output=True, text=True).stdout.split()[2]
        subprocess.run(["ip", "neigh", "replace", topology.client_ip, "lladdr", client_mac,
                        "dev", topology.host_if, "nud", "permanent"], check=True,
                       capture_output=True)
    except BaseException:
        topology.__exit__()
        raise
    return topology


def namespace_client_socket(topology: VethTopology) -> socket.socket:
    """A client's UDP socket in the clients' namespace, bound to the client address."""
    from pyroute2 import netns

    netns.pushns(topology.netns)
    try:
        sock = client_socket()
    finally:
        netns.popns()
    sock.bind((topology.client_ip, 0))
    return sock


async def client_endpoint(topology: VethTopology) -> tuple[asyncio.DatagramTransport,
                                                             _Collect]:
    """A client socket in the clients' namespace, collecting what it receives."""
    return await asyncio.get_running_loop().create_datagram_endpoint(
        _Collect, sock=namespace_client_socket(topology))


class KernelHarness(Harness):
    """The kernel plane on a veth's host end, with sftd's production ring sizes."""

    plane_name = "kernel"
    sees_every_packet = False

    def __init__(self) -> None:
        from sftd.bpf.dataplane import KernelDataPlane, kernel_available
        from sftd.bpf.sizing import (
            KEYSTREAM_AUDIO_RING,
            KEYSTREAM_INGRESS_RING_FACTOR,
            KEYSTREAM_VIDEO_RING,
        )

        ok, reason = kernel_available()
        assert ok, reason  # root but unusable is a failure, never a skip
        super().__init__()
        self.topology = veth_clients("e2")
        try:
            self.plane = KernelDataPlane(
                (self.topology.host_if,), KERNEL_PORTS,
                instance=owned_name(f"e2dp{next(_instances)}"),
                audio_ring=KEYSTREAM_AUDIO_RING, video_ring=KEYSTREAM_VIDEO_RING,
                ingress_ring_factor=KEYSTREAM_INGRESS_RING_FACTOR)
        except BaseException:
            self.topology.__exit__()
            raise

    async def _endpoints(self, leg_id: int) -> tuple[tuple[str, int], Any,
                                                      asyncio.DatagramTransport, _Collect]:
        client_t, client = await client_endpoint(self.topology)
        self.transports.append(client_t)
        return (self.topology.host_ip, KERNEL_PORTS[0] + leg_id), None, client_t, client

    async def open_stream(self, leg_id: int, packet: bytes) -> None:
        """By design the kernel plane drops a publisher stream's first packet
        (DROP_NOT_READY): that packet tells the controller the stream's SRTP
        index, and only then is the stream's keystream ring filled from there."""
        ssrc = int.from_bytes(packet[8:12], "big")
        self.send(leg_id, packet)
        self.primers += 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.plane._lock:  # filled by the plane's maintenance thread
                leg = self.plane._legs.get(leg_id)
                stream = leg.streams.get(ssrc) if leg is not None else None
                if stream is not None and stream[2].filled_until > 0:
                    return
            await asyncio.sleep(0.01)
        raise AssertionError(f"leg {leg_id} SSRC {ssrc:#x}: no keystream 5 s after its "
                             f"first packet: {self.plane.read_detail_counters()}")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.topology.__exit__()


class NativeHarness(UserspaceHarness):
    """The native engine with two worker threads that read the legs' sockets
    themselves (the harness's ``handle_packet`` path stays unused)."""

    plane_name = "native"

    def __init__(self, plane: Any = None) -> None:
        from sftd.engine.dataplane import NativeDataPlane

        Harness.__init__(self)
        self.plane = plane if plane is not None else NativeDataPlane(workers=2)

    def ssrc_state(self, leg_id: int) -> tuple[int, int]:
        seen, video_layers = self.plane.leg_ssrc_state(leg_id)
        return int(seen), int(video_layers)


class NativeXdpHarness(Harness):
    """The native engine with AF_XDP I/O on a veth's host end: legs' RTP is steered
    into the engine's AF_XDP port, copies leave from its frames; the legs' own
    sockets (bound on the host end) get the rest, as in sftd."""

    plane_name = "native-xdp"
    sees_every_packet = False
    junk_dropped_at_interface = True

    def __init__(self, queues: int = 1) -> None:
        from sftd.engine.dataplane import NativeDataPlane

        super().__init__()
        self.topology = veth_clients("xe", queues)
        try:
            self.plane = NativeDataPlane(
                workers=2, io="xdp", interfaces=(self.topology.host_if,),
                media_ports=KERNEL_PORTS, instance=f"xe{os.getpid()}x{next(_instances)}")
        except BaseException:
            self.topology.__exit__()
            raise

    async def _endpoints(self, leg_id: int) -> tuple[tuple[str, int], Any,
                                                      asyncio.DatagramTransport, _Collect]:
        sft_t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _SftSide(self.plane, leg_id),
            local_addr=(self.topology.host_ip, KERNEL_PORTS[0] + leg_id))
        client_t, client = await client_endpoint(self.topology)
        self.transports += [sft_t, client_t]
        return sft_t.get_extra_info("sockname"), sft_t, client_t, client

    def ssrc_state(self, leg_id: int) -> tuple[int, int]:
        seen, video_layers = self.plane.leg_ssrc_state(leg_id)
        return int(seen), int(video_layers)

    def clients_transmit_on_last_queue(self) -> None:
        """The clients' end sends everything on its last queue (XPS), so one
        receive queue, and the port of one worker, gets every leg's RTP."""
        topo = self.topology
        every_cpu = f"{(1 << (os.cpu_count() or 1)) - 1:x}"
        for queue in range(topo.queues):
            cpus = every_cpu if queue == topo.queues - 1 else "0"
            subprocess.run(["ip", "netns", "exec", topo.netns, "sh", "-c",
                            f"echo {cpus} > /sys/class/net/{topo.client_if}/queues/"
                            f"tx-{queue}/xps_cpus"], check=True, capture_output=True)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.topology.__exit__()


# Adding a plane to the contract tests is one entry here (and one class above).
PLANE_HARNESSES: dict[str, tuple[type[Harness], list[pytest.MarkDecorator]]] = {
    "userspace": (UserspaceHarness, []),
    "kernel": (KernelHarness, [pytest.mark.kernel]),
    "native": (NativeHarness, []),
    "native-xdp": (NativeXdpHarness, [pytest.mark.kernel]),
}
