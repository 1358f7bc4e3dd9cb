"""Random and mutated SRTP into ``UserspaceDataPlane.handle_packet`` over real
UDP sockets, libsrtp at both ends (as tests/dataplane): nothing is forwarded
unless it authenticated, and every packet is accounted for exactly once.

Accounting, from ``handle_packet``: each datagram adds 1 to RX_PACKETS and then
ends in exactly one of
  DROP_UNKNOWN_LEG | DROP_MALFORMED (before or after unprotect) | DROP_AUTH |
  DROP_REPLAY | DROP_PADDING | DROP_UNKNOWN_SSRC | DROP_NOT_READY (video no slot
  takes) | DROP_NO_ROUTE (no slot subscribes) | DROP_STALE (its copy older than
  the slot's floor: its switch to the source, a padding shift; per copy) |
  forwarded (≥ 1 copy sent).
A forwarded input adds one TX_PACKETS per copy; DROP_NO_ROUTE is also added per
copy whose subscriber transport is closing (never here). With one subscriber
holding one audio and one video slot on the publisher, every forwarded input
makes exactly one copy, so

    RX_PACKETS == TX_PACKETS + sum(DROP_*)

and the subscriber receives exactly TX_PACKETS packets.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftd.controller import rtp
from sftd.controller.dataplane import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES_CM_128_HMAC_SHA1_80,
    Counter,
    ExtensionIds,
    Layer,
    LegSpec,
    SlotSource,
    SrtpKeys,
    StreamKind,
)
from sftd.controller.userspace import UserspaceDataPlane
from tests.rtpkit import Peer, make_rtp

from .conftest import examples, tally

EXT = ExtensionIds()
AUDIO_SSRC, VIDEO_SSRC, OTHER_SSRC = 0x1111, 0x2222, 0x3333
CSRC_AUDIO, CSRC_VIDEO = 0xA0A0, 0xB0B0
DROPS = [c for c in Counter if c.name.startswith("DROP_")]
PUB, SUB, OTHER, GHOST = 1, 2, 3, 99  # GHOST: a socket whose leg does not exist
MAX_PROTECT_PLAIN = 1500 - (16 + 128)  # pylibsrtp's protect() limit


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data, addr):  # noqa: ANN001
        self.packets.append(data)


class _SftSide(asyncio.DatagramProtocol):
    """What leg.py does with RTP off a leg socket, minus the ICE address check;
    exceptions are recorded instead of going to the event loop."""

    def __init__(self, plane: UserspaceDataPlane, leg_id: int, errors: list) -> None:
        self.plane, self.leg_id, self.errors = plane, leg_id, errors
        self.received = 0

    def datagram_received(self, data, addr):  # noqa: ANN001
        self.received += 1
        try:
            self.plane.handle_packet(self.leg_id, data)
        except Exception as exc:  # noqa: BLE001
            self.errors.append((len(data), exc))


class Plane:
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.plane = UserspaceDataPlane()
        self.errors: list[tuple[int, Exception]] = []
        self.sides: dict[int, _SftSide] = {}
        self.legs: dict[int, tuple] = {}
        self.transports: list[asyncio.BaseTransport] = []
        self.sent = 0
        self.seq = {AUDIO_SSRC: 1000, VIDEO_SSRC: 5000, OTHER_SSRC: 1}
        self.tag = 0
        self.valid: dict[bytes, str] = {}  # tag -> kind, of authentic fresh packets
        self.history: list[bytes] = []  # protected packets already sent (for replays)
        self.got: list[bytes] = []  # what the subscriber decrypted
        self.reported = 0  # oversize errors already reported

    async def add(self, leg_id: int, register: bool = True) -> None:
        loop = asyncio.get_running_loop()
        side = _SftSide(self.plane, leg_id, self.errors)
        sft_t, _ = await loop.create_datagram_endpoint(lambda: side,
                                                       local_addr=("127.0.0.1", 0))
        client_t, client = await loop.create_datagram_endpoint(_Collect,
                                                               local_addr=("127.0.0.1", 0))
        self.transports += [sft_t, client_t]
        key_len = 28 if "GCM" in self.profile else 30
        keys = SrtpKeys(self.profile, rx=os.urandom(key_len), tx=os.urandom(key_len))
        slots = [int.from_bytes(os.urandom(4), "big") | 1 for _ in range(7)]
        spec = LegSpec(leg_id=leg_id, conference_id=1,
                       local_addr=sft_t.get_extra_info("sockname"),
                       remote_addr=client_t.get_extra_info("sockname"), srtp=keys,
                       audio_slot_ssrcs=tuple(slots[:5]), video_slot_ssrcs=tuple(slots[5:]),
                       extensions=EXT, transport=sft_t)
        if register:
            self.plane.add_leg(spec)
        self.sides[leg_id] = side
        self.legs[leg_id] = (spec, Peer(self.profile, keys.rx, keys.tx), client, client_t)

    def send_raw(self, leg_id: int, data: bytes) -> None:
        spec, _, _, client_t = self.legs[leg_id]
        if data:
            client_t.sendto(data, spec.local_addr)
        else:  # asyncio's sendto() silently skips empty datagrams
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"", spec.local_addr)
        self.sent += 1

    def plain(self, kind: str, size: int, keyframe: bool = True, ssrc: int | None = None,
              padding: int = 0, payload: bytes | None = None) -> tuple[bytes, bytes]:
        """A fresh plaintext RTP packet of the publisher with a unique tag."""
        self.tag += 1
        tag = struct.pack("!Q", self.tag)
        if ssrc is None:
            ssrc = AUDIO_SSRC if kind == "audio" else VIDEO_SSRC
        self.seq[ssrc] = self.seq.get(ssrc, 0) + 1
        seq = self.seq[ssrc]
        if payload is None:
            head = bytes([0x10, 0x00 if keyframe else 0x01]) if kind == "video" else b""
            payload = head + tag + os.urandom(max(0, size))
        ext = {EXT.audio_level: bytes([40])} if kind == "audio" else {}
        packet = make_rtp(ssrc, seq, seq * 960, payload, pt=111 if kind == "audio" else 100,
                          extensions=ext, padding=padding)
        return packet, tag

    async def settle(self, timeout: float = 3.0) -> None:
        """Until the SFT sockets got every datagram and the subscriber every copy."""
        deadline = asyncio.get_running_loop().time() + timeout
        client = self.legs[SUB][2]
        while True:
            received = sum(s.received for s in self.sides.values())
            tx = self.plane.read_counters()[Counter.TX_PACKETS]
            if received >= self.sent and len(self.got) + len(client.packets) >= tx:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"datagrams lost on loopback: sent {self.sent}, SFT got "
                                     f"{received}, TX {tx}, subscriber got "
                                     f"{len(self.got) + len(client.packets)}")
            await asyncio.sleep(0.005)
        peer = self.legs[SUB][1]
        for packet in client.packets:
            self.got.append(peer.unprotect(packet))  # must authenticate with SUB's keys
        client.packets.clear()

    def close(self) -> None:
        for t in self.transports:
            t.close()
        self.plane.close()


async def prepare(p: Plane) -> Plane:
    """The fuzz's legs: a publisher, its subscriber, another publisher, a ghost."""
    for leg_id in (PUB, SUB, OTHER):
        await p.add(leg_id)
    await p.add(GHOST, register=False)
    p.plane.set_publisher(PUB, (AUDIO_SSRC,), {VIDEO_SSRC: Layer.HIGH})
    p.plane.set_publisher(OTHER, (OTHER_SSRC,), {})
    p.plane.set_slot(SUB, StreamKind.AUDIO, 0, SlotSource(PUB, CSRC_AUDIO))
    p.plane.set_slot(SUB, StreamKind.VIDEO, 0, SlotSource(PUB, CSRC_VIDEO))
    return p


@pytest.fixture(params=[SRTP_AES_CM_128_HMAC_SHA1_80, SRTP_AEAD_AES_128_GCM])
async def plane(request):
    p = await prepare(Plane(request.param))
    yield p
    p.close()


OPS = ["valid", "valid", "valid", "flip", "truncate", "extend", "replay", "random",
       "random_rtp", "other_keys", "other_ssrc", "padding_only", "ghost", "big", "empty",
       "header_only", "rid"]


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    ops = []
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(OPS))
        kind = draw(st.sampled_from(["audio", "video"]))
        size = draw(st.one_of(st.integers(0, 200), st.integers(1100, MAX_PROTECT_PLAIN - 30)))
        ops.append((op, kind, size, draw(st.booleans()),
                    random.Random(draw(st.integers(0, 2**32)))))
    return ops


@examples(ci=150, long=1500)
@given(ops=operations())
async def test_srtp_into_handle_packet(plane, ops):
    p = plane
    pub = p.legs[PUB][1]
    for op, kind, size, flag, rnd in ops:
        tally[f"dataplane: packets ({p.profile})"] += 1
        if op == "valid" or (op == "big" and kind == "audio"):
            if op == "big":  # plaintext near pylibsrtp's limit; the rewrite adds 4 bytes
                size = MAX_PROTECT_PLAIN - 12 - 8 - (8 if kind == "audio" else 2) - rnd.randrange(8)
            packet, tag = p.plain(kind, size, keyframe=flag or kind == "audio")
            data = pub.protect(packet)
            p.valid[tag] = kind
            p.history.append(data)
            p.send_raw(PUB, data)
        elif op in ("flip", "truncate", "extend"):
            packet, _ = p.plain(kind, size, keyframe=True)
            data = bytearray(pub.protect(packet))
            if op == "flip":
                for _ in range(rnd.randint(1, 6)):
                    i = rnd.randrange(len(data))
                    data[i] ^= 1 << rnd.randrange(8)
            elif op == "truncate":
                data = data[:rnd.randrange(len(data))]
            else:
                data += os.urandom(rnd.randint(1, 64))
            p.send_raw(PUB, bytes(data))
        elif op == "replay" and p.history:
            p.send_raw(PUB, rnd.choice(p.history))
        elif op == "random":
            p.send_raw(PUB, os.urandom(rnd.randrange(0, 1600)))
        elif op == "random_rtp":  # looks like RTP of the publisher, forged
            p.send_raw(PUB, bytes([0x80 | rnd.randrange(64), rnd.randrange(256)])
                       + os.urandom(rnd.randrange(10, 400)))
        elif op == "other_keys":  # authentic for leg OTHER, sent on the publisher's leg
            packet, _ = p.plain("audio", size, ssrc=OTHER_SSRC)
            p.send_raw(PUB, p.legs[OTHER][1].protect(packet))
        elif op == "other_ssrc":  # authentic, but an SSRC nobody declared and no RID
            packet, _ = p.plain(kind, size, ssrc=0x5000 + rnd.randrange(16))
            p.send_raw(PUB, pub.protect(packet))
        elif op == "padding_only":
            packet, _ = p.plain("audio", 0, payload=b"", padding=rnd.randint(1, 255))
            p.send_raw(PUB, pub.protect(packet))
        elif op == "ghost":
            packet, _ = p.plain("audio", size)
            p.send_raw(GHOST, pub.protect(packet))
        elif op == "big":  # beyond what pylibsrtp takes in at all
            p.send_raw(PUB, bytes([0x80, 111]) + os.urandom(rnd.randint(1501, 4000)))
        elif op == "empty":
            p.send_raw(PUB, b"")
        elif op == "header_only":
            p.send_raw(PUB, bytes([0x80, 111]) + os.urandom(rnd.randrange(0, 30)))
        elif op == "rid":  # authentic new SSRC announcing a simulcast layer
            p.tag += 1
            tag = struct.pack("!Q", p.tag)
            ssrc = 0x6000 + rnd.randrange(4)
            p.seq[ssrc] = p.seq.get(ssrc, 0) + 1
            packet = make_rtp(ssrc, p.seq[ssrc], 0, bytes([0x10, 0]) + tag, pt=100,
                              extensions={EXT.rid: rnd.choice([b"h", b"l", b"x", b"hh"])})
            p.valid[tag] = "video"  # authentic: forwarding it is allowed, not required
            p.send_raw(PUB, pub.protect(packet))
    await p.settle()
    _check(p)


def _check(p: Plane) -> None:
    c = p.plane.read_counters()
    received = sum(s.received for s in p.sides.values())
    oversize = [e for e in p.errors
                if isinstance(e[1], ValueError) and "too long" in str(e[1])]
    fresh = oversize[p.reported:]
    p.reported = len(oversize)
    assert not fresh and not p.errors, f"handle_packet raised: {p.errors[:3]}"
    assert c[Counter.RX_PACKETS] == received
    drops = sum(c[d] for d in DROPS)
    assert c[Counter.RX_PACKETS] == c[Counter.TX_PACKETS] + drops + len(p.errors), (
        {k.name: v for k, v in c.items()}, len(p.errors))
    assert len(p.got) == c[Counter.TX_PACKETS]
    assert c[Counter.DROP_UNKNOWN_LEG] == p.sides[GHOST].received
    # only authentic publisher packets come out, each at most once, rewritten
    tags = []
    for plain in p.got:
        view = rtp.parse(plain)
        payload = plain[view.payload_offset:view.payload_end]
        kind = "audio" if view.payload_type == 111 else "video"
        tag = payload[:8] if kind == "audio" else payload[2:10]
        assert p.valid.get(tag) == kind, "forwarded a packet that never authenticated"
        spec = p.legs[SUB][0]
        slot_ssrc = spec.audio_slot_ssrcs[0] if kind == "audio" else spec.video_slot_ssrcs[0]
        assert view.ssrc == slot_ssrc and view.csrc_count == 1
        assert struct.unpack_from("!I", plain, 12)[0] == (
            CSRC_AUDIO if kind == "audio" else CSRC_VIDEO)
        tags.append(tag)
    assert len(tags) == len(set(tags)), "a packet was forwarded twice (replay)"
    # every authentic audio packet went out (audio always routes), unless it was too
    # big to forward once the CSRC was added (counted as malformed)
    lost_audio = {t for t, k in p.valid.items() if k == "audio"} - set(tags)
    assert len(lost_audio) <= p.plane.read_counters()[Counter.DROP_MALFORMED], \
        f"{len(lost_audio)} valid audio packets lost"
