"""End to end through real interfaces: programs attached to a veth in one
namespace, plain UDP sockets in another acting as legs with pylibsrtp."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from harness import PROFILE, SFT_IP, rtp, srtp_session

from bpf.dataplane import KernelDataPlane
from controller.dataplane import Counter, LegSpec, SlotSource, SrtpKeys, StreamKind

AUDIO_SSRC = 0x0A0A0A0A
SO_RCVBUFFORCE = 33  # Linux; root may pass net.core.rmem_max
PUB, SUBS = ("10.77.0.10", 5000), [("10.77.0.11", 5001), ("10.77.0.12", 5002)]


class Pair:
    """ns <sft>: sft0 (SFT_IP) with the programs; ns <cli>: cli0 with the client addresses."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}x{time.monotonic_ns() % 100000}"
        self.sft, self.cli = f"sfte{tag}", f"clie{tag}"

    def run(self, *args: str) -> str:
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout

    def __enter__(self) -> Pair:
        self.run("ip", "netns", "add", self.sft)
        self.run("ip", "netns", "add", self.cli)
        try:
            self.run("ip", "-n", self.sft, "link", "add", "sft0", "type", "veth", "peer", "name",
                     "cli0", "netns", self.cli)
            self.run("ip", "-n", self.sft, "addr", "add", f"{SFT_IP}/24", "dev", "sft0")
            for host in [PUB, *SUBS]:
                self.run("ip", "-n", self.cli, "addr", "add", f"{host[0]}/24", "dev", "cli0")
            for ns, dev in ((self.sft, "sft0"), (self.cli, "cli0"), (self.sft, "lo"),
                            (self.cli, "lo")):
                self.run("ip", "-n", ns, "link", "set", dev, "up")
            # locally sent UDP would otherwise carry CHECKSUM_PARTIAL (platform-facts)
            self.run("ip", "netns", "exec", self.cli, "ethtool", "-K", "cli0", "tx", "off")
            cli_mac = self.run("ip", "-n", self.cli, "-br", "link", "show", "cli0").split()[2]
            for host in [PUB, *SUBS]:
                self.run("ip", "-n", self.sft, "neigh", "replace", host[0], "lladdr", cli_mac,
                         "dev", "sft0", "nud", "permanent")
        except BaseException:
            self.__exit__()
            raise
        return self

    def socket_in(self, ns: str, addr: tuple[str, int]) -> socket.socket:
        from pyroute2 import netns
        netns.pushns(ns)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(addr)
            sock.settimeout(0.5)
            return sock
        finally:
            netns.popns()

    def __exit__(self, *exc: object) -> None:
        for ns in (self.sft, self.cli):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with Pair() as p:
        yield p


def _spec(leg_id: int, remote: tuple[str, int], sft_port: int) -> LegSpec:
    return LegSpec(leg_id=leg_id, conference_id=3, local_addr=(SFT_IP, sft_port),
                   remote_addr=remote, srtp=SrtpKeys(PROFILE, os.urandom(30), os.urandom(30)),
                   audio_slot_ssrcs=(0x5F000000 + leg_id,), video_slot_ssrcs=())


def test_subscribers_receive_and_decrypt_over_veth(pair: Pair) -> None:
    from pyroute2 import netns

    pub_spec = _spec(1, PUB, 40000)
    sub_specs = [_spec(2 + i, addr, 40001 + i) for i, addr in enumerate(SUBS)]
    pub_sock = pair.socket_in(pair.cli, PUB)
    sub_socks = [pair.socket_in(pair.cli, s.remote_addr) for s in sub_specs]
    sft_sock = pair.socket_in(pair.sft, (SFT_IP, 40000))  # the leg's own socket
    netns.pushns(pair.sft)
    try:
        dp = KernelDataPlane(("sft0",), (40000, 40999), instance=f"e2e{os.getpid()}")
    finally:
        netns.popns()
    try:
        for spec in [pub_spec, *sub_specs]:
            dp.add_leg(spec)  # routes are looked up in the data plane's namespace
        dp.set_publisher(1, (AUDIO_SSRC,), {})
        for spec in sub_specs:
            dp.set_slot(spec.leg_id, StreamKind.AUDIO, 0, SlotSource(1, csrc=AUDIO_SSRC))
        sender = srtp_session(pub_spec.srtp.rx, outbound=True)
        receivers = [srtp_session(s.srtp.tx, outbound=False) for s in sub_specs]

        # STUN reaches the leg's socket; SRTP never does
        pub_sock.sendto(b"\x00\x01\x00\x00" + os.urandom(16), (SFT_IP, 40000))
        assert sft_sock.recv(2048)[:2] == b"\x00\x01"

        payloads = []
        for seq in range(20):
            payload = os.urandom(100 + seq)
            payloads.append(payload)
            pub_sock.sendto(sender.protect(rtp(seq, seq * 960, AUDIO_SSRC, payload)),
                            (SFT_IP, 40000))
            time.sleep(0.01)
            dp.maintain()
        for sock, receiver in zip(sub_socks, receivers):
            got = []
            while True:
                try:
                    got.append(receiver.unprotect(sock.recv(2048)))
                except TimeoutError:
                    break
            # the first packet primes the keystream rings, the rest arrive in order
            assert [p[16:] for p in got] == payloads[1:]
            assert all(p[12:16] == AUDIO_SSRC.to_bytes(4, "big") for p in got)
        sft_sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sft_sock.recv(2048)
        counters = dp.read_counters()
        assert counters[Counter.TX_PACKETS] == 19 * len(sub_specs)
        assert counters[Counter.DROP_NOT_READY] == 1
    finally:
        dp.close()  # from the root namespace: detaches in the data plane's own
        for sock in [pub_sock, sft_sock, *sub_socks]:
            sock.close()
    filters = pair.run("ip", "netns", "exec", pair.sft, "tc", "filter", "show", "dev", "sft0",
                       "ingress")
    assert "sft_tc_ingress" not in filters
    assert "xdp" not in pair.run("ip", "-n", pair.sft, "link", "show", "sft0")


SENDER = """
import socket, struct, sys, time
dst, data = (sys.argv[1], int(sys.argv[2])), open(sys.argv[3], "rb").read()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[4], int(sys.argv[5])))
packets, off = [], 0
while off < len(data):
    (n,) = struct.unpack_from("<H", data, off)
    packets.append(data[off + 2:off + 2 + n])
    off += 2 + n
gap = 1 / float(sys.argv[6]) if len(sys.argv) > 6 else None  # packets per second
for i, packet in enumerate(packets):
    sock.sendto(packet, dst)
    if gap:
        time.sleep(gap)
    elif i % 4 == 3:
        time.sleep(0.002)
"""


def test_leg_rewrites_during_traffic_never_misdirect_a_copy(pair: Pair, tmp_path) -> None:
    """A preallocated hash map hands a replaced element to the very next update:
    a program still reading it would see another leg's keys and address. Media
    flows on one core while the controller rewrites legs and renews leases on
    the other; no copy may go to another conference's leg, every copy must
    decrypt with its own subscriber's keys, and the publisher's packets must
    never fail authentication."""
    from pyroute2 import netns

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores: traffic on one, the controller on the other")
    pub_spec = _spec(1, PUB, 40000)
    sub_specs = [_spec(2 + i, addr, 40001 + i) for i, addr in enumerate(SUBS)]
    others = [("10.77.0.%d" % (30 + i), 6000 + i) for i in range(6)]  # another conference
    for host, _port in others:
        pair.run("ip", "-n", pair.cli, "addr", "add", f"{host}/24", "dev", "cli0")
        pair.run("ip", "-n", pair.sft, "neigh", "replace", host, "lladdr",
                 pair.run("ip", "-n", pair.cli, "-br", "link", "show", "cli0").split()[2],
                 "dev", "sft0", "nud", "permanent")
    other_specs = [dataclasses.replace(_spec(20 + i, addr, 40100 + i), conference_id=4)
                   for i, addr in enumerate(others)]
    sub_socks = [pair.socket_in(pair.cli, s.remote_addr) for s in sub_specs]
    other_socks = [pair.socket_in(pair.cli, s.remote_addr) for s in other_specs]
    for sock in sub_socks:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    netns.pushns(pair.sft)
    try:
        dp = KernelDataPlane(("sft0",), (40000, 40999), instance=f"rw{os.getpid()}")
    finally:
        netns.popns()
    try:
        for spec in [pub_spec, *sub_specs, *other_specs]:
            dp.add_leg(spec)
        dp.set_publisher(1, (AUDIO_SSRC,), {})
        for spec in sub_specs:
            dp.set_slot(spec.leg_id, StreamKind.AUDIO, 0, SlotSource(1, csrc=AUDIO_SSRC))
        sender = srtp_session(pub_spec.srtp.rx, outbound=True)
        n_packets = 6000
        blob = b"".join(struct.pack("<H", len(p)) + p for p in (
            sender.protect(rtp(seq, seq * 960, AUDIO_SSRC, os.urandom(160)))
            for seq in range(n_packets)))
        (tmp_path / "packets").write_bytes(blob)
        send = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{pair.cli}", "taskset", "-c", "1", sys.executable,
             "-c", SENDER, SFT_IP, "40000", str(tmp_path / "packets"), *map(str, PUB)])
        os.sched_setaffinity(0, {0})
        rewrites = 0
        try:
            dp._lease_renew_ns = 0  # every maintain() renews every lease
            legs = [dp._legs[spec.leg_id] for spec in [pub_spec, *sub_specs, *other_specs]]
            next_maintain = 0.0
            while send.poll() is None:
                for leg in legs:  # what an address change or ICE restart writes
                    dp._write_leg(leg)
                rewrites += len(legs)
                if time.monotonic() >= next_maintain:
                    dp.maintain()
                    next_maintain = time.monotonic() + 0.002
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            send.wait(30)
        assert send.returncode == 0
        dp.maintain()
        receivers = [srtp_session(s.srtp.tx, outbound=False) for s in sub_specs]
        received = 0
        for sock, receiver in zip(sub_socks, receivers):
            sock.settimeout(0.2)
            while True:
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    break
                receiver.unprotect(data)  # raises if another leg's keys were used
                received += 1
        for sock in other_socks:
            sock.settimeout(0.05)
            with pytest.raises(TimeoutError):
                sock.recv(2048)
        counters = dp.read_counters()
        detail = dp.read_kernel_counters()
        assert counters[Counter.DROP_AUTH] == 0, (counters, detail)
        assert received == counters[Counter.TX_PACKETS] > n_packets // 2, (counters, detail)
        print(f"{rewrites} leg rewrites during {n_packets} packets: {received} copies "
              f"delivered, {detail['TC_LEG_REPLACED']} dropped as their leg changed hands")
    finally:
        dp.close()
        for sock in [*sub_socks, *other_socks]:
            sock.close()


def test_keystream_top_ups_go_on_while_the_event_loop_is_blocked(pair: Pair, tmp_path) -> None:
    """sftd's event loop can be busy for a while (joins, DTLS); the keystream rings
    hold a few hundred ms. Top-ups run on the data plane's own thread: a loop
    blocked for 1.5 s must not starve the rings."""
    from pyroute2 import netns

    pub_spec = _spec(1, PUB, 40000)
    sub_specs = [_spec(2 + i, addr, 40001 + i) for i, addr in enumerate(SUBS)]
    sub_socks = [pair.socket_in(pair.cli, s.remote_addr) for s in sub_specs]
    for sock in sub_socks:  # read only at the end: room for every copy
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
    netns.pushns(pair.sft)
    try:  # sftd's ring sizes: a 16-entry audio slot lasts 160 ms at 100 packets/s
        dp = KernelDataPlane(("sft0",), (40000, 40999), instance=f"blk{os.getpid()}",
                             audio_ring=16, video_ring=32)
    finally:
        netns.popns()
    sender = srtp_session(pub_spec.srtp.rx, outbound=True)
    n_packets = 200
    (tmp_path / "packets").write_bytes(b"".join(
        struct.pack("<H", len(p)) + p for p in (
            sender.protect(rtp(seq, seq * 960, AUDIO_SSRC, os.urandom(120)))
            for seq in range(n_packets))))

    async def call() -> None:
        for spec in [pub_spec, *sub_specs]:
            dp.add_leg(spec)  # the first leg starts the maintenance thread
        dp.set_publisher(1, (AUDIO_SSRC,), {})
        for spec in sub_specs:
            dp.set_slot(spec.leg_id, StreamKind.AUDIO, 0, SlotSource(1, csrc=AUDIO_SSRC))
        send = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{pair.cli}", sys.executable, "-c", SENDER, SFT_IP,
             "40000", str(tmp_path / "packets"), *map(str, PUB), "100"])
        time.sleep(1.5)  # the event loop is blocked, as by a long callback
        await asyncio.get_running_loop().run_in_executor(None, send.wait, 30)
        assert send.returncode == 0

    try:
        asyncio.run(call())
        receivers = [srtp_session(s.srtp.tx, outbound=False) for s in sub_specs]
        for sock, receiver in zip(sub_socks, receivers):
            sock.settimeout(0.3)
            got = 0
            while True:
                try:
                    receiver.unprotect(sock.recv(2048))
                except TimeoutError:
                    break
                got += 1
            # the first packet primes the publisher's ring; every other one arrives
            assert got == n_packets - 1, (got, dp.read_kernel_counters())
        assert dp.read_kernel_counters()["TC_TX_KEYSTREAM_MISS"] == 0
    finally:
        dp.close()
        for sock in sub_socks:
            sock.close()
