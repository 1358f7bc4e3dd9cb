"""Hostile input on the native plane with its worker threads reading the legs'
sockets: malformed RTP, forged tags, replays, random bytes and media from an
address ICE has not validated. Each is a counted drop or goes back to the leg's
socket protocol (upcall), none is forwarded, nothing crosses conferences, and
the engine keeps forwarding afterwards."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest

from sftd.controller import rtp
from sftd.controller.dataplane import (
    SRTP_AES_CM_128_HMAC_SHA1_80,
    Counter,
    ExtensionIds,
    LegSpec,
    SlotSource,
    SrtpKeys,
    StreamKind,
)
from sftd.engine.dataplane import NativeDataPlane, native_available
from tests.rtpkit import Peer, make_rtp

AVAILABLE, WHY_NOT = native_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)

EXT = ExtensionIds()
SSRC = 0x4242
PUB, SUB, ELSEWHERE = 1, 2, 3  # ELSEWHERE: a subscriber in another conference


class Collect(asyncio.DatagramProtocol):
    """A client socket, or the SFT side of a leg (where upcalls arrive)."""

    def __init__(self) -> None:
        self.packets: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append((data, addr))


async def settle(plane: NativeDataPlane, what: Collect, count: int, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(what.packets) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    plane.sync()
    await asyncio.sleep(0.05)


async def test_hostile_datagrams_are_dropped_or_handed_back():
    loop = asyncio.get_running_loop()
    plane = NativeDataPlane(workers=2)
    transports = []
    legs = {}
    try:
        for leg_id, conference in ((PUB, 1), (SUB, 1), (ELSEWHERE, 2)):
            sft_t, sft_side = await loop.create_datagram_endpoint(
                Collect, local_addr=("127.0.0.1", 0))
            client_t, client = await loop.create_datagram_endpoint(
                Collect, local_addr=("127.0.0.1", 0))
            transports += [sft_t, client_t]
            keys = SrtpKeys(SRTP_AES_CM_128_HMAC_SHA1_80, os.urandom(30), os.urandom(30))
            spec = LegSpec(leg_id, conference, sft_t.get_extra_info("sockname"),
                           client_t.get_extra_info("sockname"), keys, (leg_id * 100 + 1,),
                           (), EXT, sft_t)
            plane.add_leg(spec)
            legs[leg_id] = (spec, Peer(keys.profile, keys.rx, keys.tx), client_t, client,
                            sft_side)
        plane.set_publisher(PUB, (SSRC,), {})
        plane.set_slot(SUB, StreamKind.AUDIO, 0, SlotSource(PUB, csrc=7))
        with pytest.raises(ValueError, match="never crosses conferences"):
            plane.set_slot(ELSEWHERE, StreamKind.AUDIO, 0, SlotSource(PUB, csrc=7))
        spec, peer, client_t, _, pub_side = legs[PUB]
        sub_client = legs[SUB][3]
        rng = random.Random(5)
        sent_tails: set[bytes] = set()
        history: list[bytes] = []
        seq = 1000

        def valid() -> bytes:
            nonlocal seq
            seq += 1
            plain = make_rtp(SSRC, seq, seq * 960, rng.randbytes(rng.randrange(1, 300)),
                             extensions={EXT.audio_level: b"\x20"})
            sent_tails.add(plain[12:])
            data = peer.protect(plain)
            history.append(data)
            return data

        for i in range(1500):
            choice = rng.randrange(8)
            if choice == 0:
                data = valid()
            elif choice == 1:  # forged tag
                data = bytearray(peer.protect(make_rtp(SSRC, seq + 1, 0, b"x" * 50)))
                data[rng.randrange(12, len(data))] ^= 1 << rng.randrange(8)
                data = bytes(data)
            elif choice == 2 and history:
                data = rng.choice(history)  # replay
            elif choice == 3:  # RTP-looking garbage: bad CSRC count, extension lengths
                data = bytes([0x80 | rng.randrange(64), rng.randrange(128)]) + rng.randbytes(
                    rng.randrange(0, 80))
            elif choice == 4:  # truncated or oversized
                data = valid()[:rng.randrange(1, 20)] if rng.random() < 0.5 else \
                    bytes([0x80, 0]) + rng.randbytes(1600)
            else:  # anything, first byte included
                data = rng.randbytes(rng.randrange(1, 200))
            client_t.sendto(data, spec.local_addr)
            if i % 100 == 0:
                await asyncio.sleep(0.005)  # the loopback socket buffer is not endless
        # authentic media of the publisher, but from an address ICE never validated
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stray = valid()
            stranger.sendto(stray, spec.local_addr)
            await settle(plane, pub_side, 1)
            stranger_addr = stranger.getsockname()
        counters = plane.read_counters()
        details = plane.read_detail_counters()
        assert counters[Counter.DROP_AUTH] > 0 and counters[Counter.DROP_REPLAY] > 0
        assert counters[Counter.DROP_MALFORMED] > 0
        # what the engine does not take went back to the leg's protocol, with its source
        upcalled = pub_side.packets
        assert (stray, stranger_addr) in upcalled
        assert all(a == stranger_addr or not 127 < d[0] < 192 or 191 < d[1] < 224
                   for d, a in upcalled)
        assert details["UPCALLS"] == len(upcalled) and details["UPCALLS_DROPPED"] == 0
        assert details["USERSPACE_MEDIA"] == 0
        # only authentic packets reached the subscriber, once each; none elsewhere
        await settle(plane, sub_client, counters[Counter.TX_PACKETS])
        got = [legs[SUB][1].unprotect(d) for d, _ in sub_client.packets]
        assert len(got) == counters[Counter.TX_PACKETS] > 0
        tails = [p[16:] for p in got]
        assert set(tails) <= sent_tails and len(tails) == len(set(tails))
        assert all(rtp.parse(p).csrc_count == 1 for p in got)
        assert legs[ELSEWHERE][3].packets == [] and legs[PUB][3].packets == []
        # still forwarding
        before = len(sub_client.packets)
        client_t.sendto(valid(), spec.local_addr)
        await settle(plane, sub_client, before + 1)
        assert len(sub_client.packets) == before + 1
    finally:
        for t in transports:
            t.close()
        plane.close()
