"""Fuzzing the steering program (bpf/src/steer.bpf.c) through BPF_PROG_TEST_RUN against
a model written from its contract: valid STUN/DTLS/RTCP/RTP of registered and
unregistered 5-tuples, and the same mutated (truncations, IHL, fragment bits, IP and
UDP lengths, ports, first bytes, random bytes). Per packet the verdict must be the
model's (XDP_REDIRECT for a registered leg's RTP: the queue has an AF_XDP socket);
per batch every counter moved exactly as the model counted.

``STEER_FUZZ_PACKETS`` (default 20,000) and ``STEER_FUZZ_SEED`` choose the run."""

from __future__ import annotations

import collections
import os
import random
import struct

import pytest
from harness import udp_frame  # tests/kernel is on sys.path
from test_xsk_steering import HOST_IP, PEER_IP, PORTS, STUN, VethPeer

from sftd.bpf.steer import SteerCounter, Steering
from sftd.engine.xsk import XskPort
from tests.conftest import owned_name

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

XDP_DROP, XDP_PASS, XDP_REDIRECT = 1, 2, 4
LEGS = {(PEER_IP, 5000, HOST_IP, 40010), (PEER_IP, 5002, HOST_IP, 40099)}


def model(frame: bytes) -> tuple[int, SteerCounter | None]:
    """What steer.bpf.c must do with ``frame`` (its contract, restated independently)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return XDP_PASS, None
    ver_ihl, proto = frame[14], frame[23]
    frag = struct.unpack("!H", frame[20:22])[0]
    ihl = ver_ihl & 0xF
    if ver_ihl >> 4 != 4 or proto != 17 or frag & 0x1FFF or ihl < 5:
        return XDP_PASS, None
    udp = 14 + ihl * 4
    if len(frame) < udp + 8:
        return XDP_PASS, None
    sport, dport, udp_len = struct.unpack("!HHH", frame[udp:udp + 6])
    if not PORTS[0] <= dport <= PORTS[1]:
        return XDP_PASS, None
    if frag & 0x2000:
        return XDP_DROP, SteerCounter.DROP_FRAGMENT
    if ihl != 5:
        return XDP_DROP, SteerCounter.DROP_IP_OPTIONS
    ip_len = struct.unpack("!H", frame[16:18])[0]
    if udp_len < 8 or udp_len + 20 > ip_len or 34 + udp_len > len(frame):
        return XDP_DROP, SteerCounter.DROP_BAD_LENGTH
    size = udp_len - 8

    def needs(minimum: int, counter: SteerCounter) -> tuple[int, SteerCounter]:
        return (XDP_PASS, counter) if size >= minimum else (XDP_DROP, SteerCounter.DROP_SHORT)

    if size < 2:
        return XDP_DROP, SteerCounter.DROP_SHORT
    b0, b1 = frame[42], frame[43]
    if b0 <= 3:
        return needs(20, SteerCounter.PASS_STUN)
    if 20 <= b0 <= 63:
        return needs(13, SteerCounter.PASS_DTLS)
    if not 128 <= b0 <= 191:
        return XDP_DROP, SteerCounter.DROP_JUNK
    if 192 <= b1 <= 223:
        return needs(8, SteerCounter.PASS_RTCP)
    if size < 12:
        return XDP_DROP, SteerCounter.DROP_SHORT
    tuple5 = (socket_ntoa(frame[26:30]), sport, socket_ntoa(frame[30:34]), dport)
    if tuple5 not in LEGS:
        return XDP_DROP, SteerCounter.DROP_UNKNOWN
    return XDP_REDIRECT, SteerCounter.REDIRECT


def socket_ntoa(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def packet(rng: random.Random) -> bytes:
    src = (PEER_IP, rng.choice([5000, 5001, 5002, 6000]))
    dst = (rng.choice([HOST_IP, HOST_IP, "100.77.13.9"]), rng.choice([40010, 40099, 40100, 39999]))
    payload = rng.choice([
        bytes([0x80, rng.choice([0, 96, 111, 127, 200, 206, 207, 224])]) + rng.randbytes(
            rng.choice([0, 6, 10, 20, 160])),
        STUN, STUN[:rng.randrange(20)], bytes([22, 0xFE, 0xFD]) + rng.randbytes(rng.randrange(30)),
        bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(40)),
    ])
    frame = bytearray(udp_frame(src, dst, payload))
    mutation = rng.randrange(10)
    if mutation == 0:  # truncated anywhere
        frame = frame[:rng.randrange(14, len(frame) + 1)]
    elif mutation == 1:  # trailing bytes
        frame += rng.randbytes(rng.randrange(1, 20))
    elif mutation == 2:  # IHL (options or nonsense) and version
        frame[14] = rng.choice([0x40, 0x44, 0x46, 0x4F, 0x65, 0x45]) if rng.random() < 0.8 \
            else rng.randrange(256)
    elif mutation == 3:  # fragment bits
        frame[20:22] = struct.pack("!H", rng.choice([0x2000, 0x0001, 0x2001, 0x4000, 0x8000]))
    elif mutation == 4:  # IP total length
        frame[16:18] = struct.pack("!H", rng.randrange(0, 2000))
    elif mutation == 5:  # UDP length
        frame[38:40] = struct.pack("!H", rng.randrange(0, 300))
    elif mutation == 6:  # protocol, ethertype
        if rng.random() < 0.5:
            frame[23] = rng.choice([6, 1, 17, 255])
        else:
            frame[12:14] = rng.choice([b"\x86\xdd", b"\x08\x06", b"\x81\x00"])
    elif mutation == 7:  # random bytes after the Ethernet header
        frame = frame[:14] + bytearray(rng.randbytes(rng.randrange(0, 120)))
    elif mutation == 8:  # well-formed IP options: the UDP header moves with them
        words = rng.randrange(1, 11)
        frame[14] = 0x45 + words
        frame[16:18] = struct.pack("!H", len(frame) - 14 + 4 * words)
        frame[34:34] = b"\x01" * (4 * words)
    return bytes(frame)


def test_steering_matches_its_model():
    count = int(os.environ.get("STEER_FUZZ_PACKETS", "20000"))
    seed = int(os.environ.get("STEER_FUZZ_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    with VethPeer("f") as veth, \
            Steering(veth.host_if, PORTS, instance=owned_name("xkf")) as steering, \
            XskPort(veth.host_if, 0, ring_size=64) as port:
        port.attach(steering.xskmap_fd)
        for remote_ip, remote_port, local_ip, local_port in LEGS:
            steering.add_leg((local_ip, local_port), (remote_ip, remote_port), leg_id=remote_port)
        prog = steering.obj.program("sft_steer")
        before = steering.counters()
        expected: collections.Counter[SteerCounter] = collections.Counter()
        verdicts: collections.Counter[int] = collections.Counter()
        for i in range(count):
            frame = packet(rng)
            verdict, counter = model(frame)
            got = prog.test_run(frame).retval
            assert got == verdict, f"seed {seed} packet {i}: {frame.hex()} -> {got}, " \
                                   f"model {verdict} ({counter})"
            verdicts[got] += 1
            if counter is not None:
                expected[counter] += 1
        after = steering.counters()
        assert {c: after[c] - before[c] for c in SteerCounter} == \
            {c: expected[c] for c in SteerCounter}, f"seed {seed}"
        # the run reached every branch
        assert all(expected[c] for c in SteerCounter if c != SteerCounter.PASS_NO_SOCKET), \
            f"seed {seed}: {expected}"
        assert verdicts[XDP_REDIRECT] and verdicts[XDP_PASS] and verdicts[XDP_DROP]
