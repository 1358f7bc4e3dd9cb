"""End to end through real interfaces: programs attached to a veth in one
namespace, plain UDP sockets in another acting as legs with pylibsrtp."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from harness import PROFILE, SFT_IP, rtp, srtp_session

from bpf.dataplane import KernelDataPlane
from controller.dataplane import Counter, LegSpec, SlotSource, SrtpKeys, StreamKind

AUDIO_SSRC = 0x0A0A0A0A
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
