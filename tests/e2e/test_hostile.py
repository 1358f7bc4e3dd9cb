"""Hostile traffic at a live leg (userspace data plane, loopback): packets
from addresses ICE has not validated are counted and never forwarded, and
spoofed ones from the participant's own address cannot take its leg over."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct

import pytest
from aioice import stun

from tests.rtpkit import make_rtp

from .helpers import frames_from, gets_media, new_convid, wait_until

pytestmark = pytest.mark.timeout(90)

DROP_UNKNOWN = 'sft_dataplane_packets_total{counter="DROP_UNKNOWN_LEG"}'
DROP_AUTH = 'sft_dataplane_packets_total{counter="DROP_AUTH"}'


def leg_port(client) -> int:
    """The SFT's host candidate port from the offer the client got."""
    return int(re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host",
                         client.offer).group(1))


def client_port(client) -> int:
    """The client's end of the nominated pair (its local UDP port)."""
    ice = client.pc.sctp.transport.transport._connection
    return ice._nominated[1].local_candidate.port


def junk_dtls() -> list[bytes]:
    alert = bytes([21, 0xFE, 0xFD, 0, 1]) + os.urandom(6) + struct.pack("!H", 2) + b"\x02\x28"
    hello = bytes([22, 0xFE, 0xFF, 0, 0]) + b"\0" * 6 + struct.pack("!H", 60) + os.urandom(60)
    return [alert, hello, bytes([23, 0xFE, 0xFD]) + os.urandom(100)]


def junk_stun() -> list[bytes]:
    out = []
    for username in ("nobody:nothing", "abcd:efgh"):
        msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        msg.attributes["USERNAME"] = username
        msg.attributes["PRIORITY"] = 1
        msg.add_message_integrity(b"wrong-password")
        msg.add_fingerprint()
        out.append(bytes(msg))
    return out + [b"\x00\x01\x00\x08" + os.urandom(16)]


def junk_media() -> list[bytes]:
    return [make_rtp(0xBADBAD, i, i * 960, os.urandom(80), extensions={1: b"\x00"})
            for i in range(50)] + [bytes([0x80, 0xC8]) + os.urandom(40)]  # RTP and RTCP


async def test_unvalidated_sources_are_dropped_and_the_call_goes_on(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b")
    await wait_until(lambda: gets_media(a, [b]) and gets_media(b, [a]), 20, "media both ways")
    before = await sftd.metrics()

    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    target = ("127.0.0.1", leg_port(a))
    media = junk_media()
    try:
        for packet in media + junk_dtls() + junk_stun() + [os.urandom(n) for n in (1, 50, 1400)]:
            attacker.sendto(packet, target)
    finally:
        attacker.close()

    frames = frames_from(b, a)[1]
    await asyncio.sleep(2)
    after = await sftd.metrics()
    # every media/DTLS packet from the stranger is counted as from no leg
    assert after[DROP_UNKNOWN] - before[DROP_UNKNOWN] >= len(media) + 3
    assert after["sft_participants"] == 2
    assert frames_from(b, a)[1] > frames + 10, "a's media must keep flowing to b"
    assert not b.received.unknown_csrc_packets and not a.received.unknown_csrc_packets


async def test_spoofed_packets_from_the_participants_address_cannot_hijack(sftd, wire_client):
    """A raw socket forges the participant's own 5-tuple: SRTP without its keys
    fails authentication, forged DTLS does not end the leg."""
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b")
    await wait_until(lambda: gets_media(a, [b]) and gets_media(b, [a]), 20, "media both ways")
    before = await sftd.metrics()
    src, dst = client_port(a), leg_port(a)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    forged_media = [make_rtp(0x1234, i, i, os.urandom(120)) + os.urandom(10) for i in range(30)]
    try:
        for payload in forged_media + junk_dtls():
            udp = struct.pack("!HHHH", src, dst, 8 + len(payload), 0) + payload
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64,
                             socket.IPPROTO_UDP, 0, socket.inet_aton("127.0.0.1"),
                             socket.inet_aton("127.0.0.1"))
            raw.sendto(ip + udp, ("127.0.0.1", 0))
    finally:
        raw.close()
    frames = frames_from(b, a)[1]
    await asyncio.sleep(2)
    after = await sftd.metrics()
    assert after[DROP_AUTH] - before[DROP_AUTH] >= len(forged_media)
    assert after["sft_participants"] == 2
    assert frames_from(b, a)[1] > frames + 10, "the forged packets must not break a's leg"
    assert not b.received.unknown_csrc_packets
