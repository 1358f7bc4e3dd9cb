"""XDP steering into AF_XDP on a real veth: the steering program (bpf/src/steer.bpf.c)
on the host end in driver mode, an AF_XDP port (engine/src/xsk.c) on its queue 0,
and a peer in its own network namespace sending with ordinary UDP sockets."""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import udp_frame  # tests/kernel is on sys.path

from sftd.bpf.steer import SteerCounter, Steering
from sftd.engine.xsk import Datagram, UdpTemplate, XskPort
from tests.conftest import owned_name

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

HOST_IP, PEER_IP = "100.77.13.1", "100.77.13.2"
PORTS = (40000, 40099)
MEDIA_PORT = 40010
PEER_PORT, STRANGER_PORT, PEER_SINK_PORT = 5000, 5001, 6000

XDP_PASS, XDP_DROP = 2, 1


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class VethPeer:
    """Host end in this namespace, peer end in a namespace of its own; names xk<pid>*."""

    def __init__(self, tag: str = "") -> None:
        base = f"xk{os.getpid() % 100000}{tag}"
        self.netns, self.host_if, self.peer_if = base, f"{base}h", f"{base}p"

    def __enter__(self) -> VethPeer:
        run("ip", "netns", "add", self.netns)
        try:
            run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if,
                "netns", self.netns)
            run("ip", "addr", "add", f"{HOST_IP}/24", "dev", self.host_if)
            run("ip", "link", "set", self.host_if, "up")
            run("ip", "-n", self.netns, "addr", "add", f"{PEER_IP}/24", "dev", self.peer_if)
            run("ip", "-n", self.netns, "link", "set", self.peer_if, "up")
            run("ip", "-n", self.netns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        self.host_mac = bytes.fromhex(
            Path(f"/sys/class/net/{self.host_if}/address").read_text().strip().replace(":", ""))
        (link,) = json.loads(run("ip", "-n", self.netns, "-j", "link", "show", self.peer_if))
        self.peer_mac = bytes.fromhex(link["address"].replace(":", ""))
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def send(self, items: list[tuple[int, bytes]], dst: tuple[str, int]) -> None:
        """Sends each (source port, payload) from the peer with a UDP socket."""
        code = (
            "import socket, sys, json\n"
            "socks = {}\n"
            "for port, hexdata in json.loads(sys.argv[1]):\n"
            "    if port not in socks:\n"
            "        socks[port] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"        socks[port].bind(('{PEER_IP}', port))\n"
            f"    socks[port].sendto(bytes.fromhex(hexdata), ('{dst[0]}', {dst[1]}))\n")
        payload = json.dumps([(port, data.hex()) for port, data in items])
        run("ip", "netns", "exec", self.netns, sys.executable, "-c", code, payload)

    def receiver(self, port: int, count: int, timeout: float) -> subprocess.Popen[str]:
        """A peer UDP socket printing 'ready', then up to count payloads as one JSON line."""
        code = (
            "import socket, json\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)\n"
            f"s.bind(('{PEER_IP}', {port})); s.settimeout({timeout})\n"
            "print('ready', flush=True)\n"
            "got = []\n"
            "try:\n"
            f"    while len(got) < {count}:\n"
            "        data, src = s.recvfrom(2048); got.append([data.hex(), src[0], src[1]])\n"
            "except socket.timeout:\n"
            "    pass\n"
            "print(json.dumps(got), flush=True)\n")
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", code],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc


@pytest.fixture
def veth() -> Iterator[VethPeer]:
    with VethPeer() as v:
        yield v


@pytest.fixture
def steering(veth: VethPeer) -> Iterator[Steering]:
    with Steering(veth.host_if, PORTS, instance=owned_name("xk")) as s:
        yield s


def rtp(seq: int, size: int = 60, pt: int = 111) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, 0x1234ABCD) + bytes([seq & 0xFF]) * size


STUN = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, b"transaction!")
DTLS = bytes([22, 0xFE, 0xFD]) + bytes(30)
RTCP = bytes([0x80, 200, 0, 6]) + bytes(24)


def receive_xsk(port: XskPort, count: int, timeout: float = 3.0) -> list[Datagram]:
    got: list[Datagram] = []
    poller = select.poll()
    poller.register(port.fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        poller.poll(50)
        got += port.receive()
    return got


def receive_udp(sock: socket.socket, quiet: float = 0.5) -> list[bytes]:
    """Everything that arrives until the socket stays quiet for ``quiet`` seconds."""
    out = []
    sock.settimeout(quiet)
    try:
        while True:
            out.append(sock.recv(2048))
    except TimeoutError:
        return out


def host_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST_IP, MEDIA_PORT))
    return sock


def test_leg_rtp_goes_to_af_xdp_control_to_the_stack_junk_counted(veth, steering):
    assert steering.native, "veth has driver-mode XDP; generic mode would hide a regression"
    with XskPort(veth.host_if, 0) as port, host_socket() as sock:
        assert not port.zerocopy  # veth offers copy mode only
        port.attach(steering.xskmap_fd)
        steering.add_leg((HOST_IP, MEDIA_PORT), (PEER_IP, PEER_PORT), leg_id=7)

        leg_rtp = [rtp(seq) for seq in range(20)]
        veth.send([(PEER_PORT, p) for p in leg_rtp]
                  + [(STRANGER_PORT, rtp(100 + i)) for i in range(5)]
                  + [(PEER_PORT, STUN), (PEER_PORT, DTLS), (PEER_PORT, RTCP)]
                  + [(PEER_PORT, b"\x42" * 40)] * 3
                  + [(PEER_PORT, b"\x80\x6f\x00")] * 2,
                  (HOST_IP, MEDIA_PORT))

        got = receive_xsk(port, 20)
        assert [d.payload for d in got] == leg_rtp
        assert {(d.remote, d.local) for d in got} == {((PEER_IP, PEER_PORT),
                                                       (HOST_IP, MEDIA_PORT))}
        assert receive_xsk(port, 1, timeout=0.3) == []  # the stranger's RTP did not come
        assert sorted(receive_udp(sock)) == sorted([STUN, DTLS, RTCP])  # and no RTP at all

        counters = steering.counters()
        assert counters[SteerCounter.REDIRECT] == 20
        assert counters[SteerCounter.DROP_UNKNOWN] == 5
        assert counters[SteerCounter.DROP_JUNK] == 3
        assert counters[SteerCounter.DROP_SHORT] == 2
        assert [counters[c] for c in (SteerCounter.PASS_STUN, SteerCounter.PASS_DTLS,
                                      SteerCounter.PASS_RTCP)] == [1, 1, 1]
        assert port.stats()["rx_packets"] == 20


def test_queue_without_socket_and_removed_leg_fall_back(veth, steering):
    with host_socket() as sock:
        steering.add_leg((HOST_IP, MEDIA_PORT), (PEER_IP, PEER_PORT), leg_id=7)
        veth.send([(PEER_PORT, rtp(1))], (HOST_IP, MEDIA_PORT))
        assert receive_udp(sock) == [rtp(1)]  # no AF_XDP socket on queue 0: the stack
        assert steering.counters()[SteerCounter.PASS_NO_SOCKET] == 1

        assert steering.remove_leg((HOST_IP, MEDIA_PORT), (PEER_IP, PEER_PORT))
        veth.send([(PEER_PORT, rtp(2))], (HOST_IP, MEDIA_PORT))
        assert receive_udp(sock, quiet=0.3) == []
        assert steering.counters()[SteerCounter.DROP_UNKNOWN] == 1


def test_transmitted_frames_reach_the_peer_socket(veth, steering):
    with XskPort(veth.host_if, 0) as port:
        template = UdpTemplate(veth.host_mac, veth.peer_mac, (HOST_IP, MEDIA_PORT),
                               (PEER_IP, PEER_SINK_PORT))
        payloads = [bytes([i]) * (1 + i * 9) for i in range(150)]  # 1 .. 1342 bytes
        receiver = veth.receiver(PEER_SINK_PORT, len(payloads), timeout=3.0)
        sent = 0
        while sent < len(payloads):  # more than one ring's worth of descriptors per call
            sent += port.send([(p, template) for p in payloads[sent:]])
        out, _ = receiver.communicate(timeout=30)
        got = json.loads(out)
        assert [bytes.fromhex(h) for h, _, _ in got] == payloads
        assert {(ip, sport) for _, ip, sport in got} == {(HOST_IP, MEDIA_PORT)}
        port.complete()
        assert port.in_flight == 0
        stats = port.stats()
        assert stats["tx_packets"] == len(payloads) and stats["tx_invalid"] == 0
        assert stats["k_tx_invalid_descs"] == 0


def test_too_long_payload_is_refused_and_counted(veth):
    with XskPort(veth.host_if, 0, ring_size=64) as port:
        template = UdpTemplate(veth.host_mac, veth.peer_mac, (HOST_IP, MEDIA_PORT),
                               (PEER_IP, PEER_SINK_PORT))
        mod = port._mod
        descs = mod.ffi.new("struct xsk_tx_desc[]", 2)
        assert mod.lib.xsk_tx_reserve(port.port, descs, 2) == 2
        capacity = mod.lib.xsk_port_tx_capacity(port.port)
        descs[0].payload_len, descs[0].tmpl = capacity + 1, template.c
        descs[1].payload_len, descs[1].tmpl = 10, mod.ffi.NULL
        assert mod.lib.xsk_tx_submit(port.port, descs, 2) == 0
        assert port.stats()["tx_invalid"] == 2
        # both frames went back: the whole ring can still be reserved
        many = mod.ffi.new("struct xsk_tx_desc[]", 64)
        assert mod.lib.xsk_tx_reserve(port.port, many, 64) == 64


def test_open_errors_say_what_failed(veth):
    with pytest.raises(OSError, match="ring_size 100 is no power of two"):
        XskPort(veth.host_if, 0, ring_size=100)
    with pytest.raises(OSError, match="queue 7 in copy mode .does the queue exist"):
        XskPort(veth.host_if, 7, mode="copy")
    with pytest.raises(OSError, match="zero-copy mode .the driver has no zero-copy"):
        XskPort(veth.host_if, 0, mode="zerocopy")  # veth: copy mode only
    with XskPort(veth.host_if, 0), pytest.raises(OSError, match="another AF_XDP socket"):
        XskPort(veth.host_if, 0)


@pytest.mark.parametrize("case, frame, verdict, counter", [
    ("other port", udp_frame((PEER_IP, 5000), (HOST_IP, 39999), rtp(1)), XDP_PASS, None),
    ("first fragment",
     None, XDP_DROP, SteerCounter.DROP_FRAGMENT),
    ("ip options", None, XDP_DROP, SteerCounter.DROP_IP_OPTIONS),
    ("udp length past the packet", None, XDP_DROP, SteerCounter.DROP_BAD_LENGTH),
    ("truncated frame", udp_frame((PEER_IP, 5000), (HOST_IP, MEDIA_PORT), rtp(1))[:40],
     XDP_PASS, None),
    ("stun too short", udp_frame((PEER_IP, 5000), (HOST_IP, MEDIA_PORT), STUN[:10]), XDP_DROP,
     SteerCounter.DROP_SHORT),
])
def test_bad_input_is_passed_or_counted(veth, steering, case, frame, verdict, counter):
    good = udp_frame((PEER_IP, 5000), (HOST_IP, MEDIA_PORT), rtp(1))
    if case == "first fragment":
        frame = good[:20] + struct.pack("!H", 0x2000) + good[22:]
    elif case == "ip options":  # ihl 6 with a 4-byte NOP option; UDP header moves by 4
        ip = bytearray(good[14:34])
        ip[0] = 0x46
        ip[2:4] = struct.pack("!H", len(good) - 14 + 4)
        frame = good[:14] + bytes(ip) + b"\x01\x01\x01\x01" + good[34:]
    elif case == "udp length past the packet":
        frame = good[:38] + struct.pack("!H", 2000) + good[40:]
    before = steering.counters()
    result = steering.obj.program("sft_steer").test_run(frame)
    assert result.retval == verdict, case
    after = steering.counters()
    changed = {c for c in SteerCounter if after[c] != before[c]}
    assert changed == ({counter} if counter else set()), case



def test_echo_loop_returns_every_packet_of_the_windowed_sender():
    """The C loops of xsk_loop.c as benchmarks/xsk_bench.py runs them, for half a second."""
    from benchmarks.xsk_bench import run as run_bench

    result = run_bench(seconds=0.5, size=100, window=64, ring_size=256)
    assert result["sent"] > 0
    assert result["received"] == result["sent"] == result["echoed"] == result["redirected_a"]


def test_a_crashed_process_program_is_replaced(veth):
    """A process that died without close() left its program attached and pinned."""
    crashed = Steering(veth.host_if, PORTS, instance=owned_name("xk"))
    stale_id = crashed.obj.program("sft_steer").id
    crashed.prog._attachment = None  # as if the process died: nothing is undone
    crashed.obj.close()
    with Steering(veth.host_if, PORTS, instance=owned_name("xk")) as again:
        assert again.native and again.obj.program("sft_steer").id != stale_id
    assert not again.prog.pin_dir.exists()
    out = run("ip", "-j", "link", "show", veth.host_if)
    assert '"xdp"' not in out, out  # and close() detached the new one
