"""Differential test: one packet sequence through the userspace plane (Python,
libsrtp) and the native plane (the C engine), the same bytes out.

Both planes get identical LegSpecs (keys, slot SSRCs) over real UDP sockets on
loopback (the contract suite's harnesses, tests/dataplane/planes.py) and the very
same SRTP bytes from the publishers, through ``handle_packet`` so the order is
the same. Every subscriber's copies must be
byte-identical, the counters equal, and libsrtp at the subscriber decrypts every
copy to what the publisher sent (rewritten header, same extension and payload).

The planes' free choices are aligned by their hooks: the first SRTP index of each
slot (near 65535: slots and their ROC roll over), the first slot timestamp, a
fixed timestamp gap at source switches, and layers that never count as paused.
The sequence has upstream loss, reordering, padding-only packets, replays, bad
tags, a publisher sequence rolling over 65535 -> 0 (ROC 1), simulcast layers
declared and learned from RIDs, a layer switch at a keyframe, source switches
and one- and two-byte header extensions.
"""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import dataclass
from typing import Any

import pytest

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
from sftd.engine.dataplane import NativeDataPlane, native_available
from tests.dataplane.planes import Harness, NativeHarness, UserspaceHarness
from tests.rtpkit import Peer, make_rtp

AVAILABLE, WHY_NOT = native_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)

EXT = ExtensionIds()
TS_STEP = {StreamKind.AUDIO: 960, StreamKind.VIDEO: 3000}
NEVER_PAUSED = 3600.0
FIRST_SLOT_INDEX = 65530  # slots roll over after a few packets
A, V = StreamKind.AUDIO, StreamKind.VIDEO
FD_KEYFRAME, FD_DELTA = 0x80, 0x88  # generic frame descriptor: begin of frame, (in)dependent


@dataclass
class Op:
    kind: str  # "publisher" | "slot" | "srtp"
    args: tuple[Any, ...]


def two_byte_ext(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(bytes([eid, len(v)]) + v for eid, v in elements)
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!HH", 0x1000, len(body) // 4) + body


def with_ext(packet: bytes, ext: bytes) -> bytes:
    """``packet`` (no extension, no CSRC) with the raw extension block ``ext``."""
    return bytes([packet[0] | 0x10]) + packet[1:12] + ext + packet[12:]


def scenario(seed: int, profile: str
             ) -> tuple[list[LegSpec], list[Op], dict[int, Peer], set[bytes]]:
    """Publishers A (audio, simulcast high declared + low learned by RID), B (audio,
    VP8 video), C (audio); subscribers S1, S2; B subscribes too. Also returns the
    client ends and what each published packet carries after its CSRCs."""
    rng = random.Random(seed)
    key_len = 30 if profile == SRTP_AES_CM_128_HMAC_SHA1_80 else 28
    specs, peers = [], {}
    for leg_id in range(1, 6):
        keys = SrtpKeys(profile, rx=rng.randbytes(key_len), tx=rng.randbytes(key_len))
        slots = [rng.randrange(1, 1 << 32) for _ in range(7)]
        specs.append(LegSpec(leg_id=leg_id, conference_id=1, local_addr=("127.0.0.1", 0),
                             remote_addr=("127.0.0.1", 0), srtp=keys,
                             audio_slot_ssrcs=tuple(slots[:5]),
                             video_slot_ssrcs=tuple(slots[5:]), extensions=EXT))
        peers[leg_id] = Peer(profile, keys.rx, keys.tx)
    a, b, c, s1, s2 = range(1, 6)
    aa, ah, al, ba, bv, ca = 0xA0A0A0A0, 0xA1A1A1A1, 0xA2A2A2A2, 0xB0B0B0B0, 0xB1B1B1B1, 0xC0C0C0C0
    owner = {aa: a, ah: a, al: a, ba: b, bv: b, ca: c}
    seqs = {aa: 65400, ah: 65530, al: rng.randrange(1 << 16), ba: 100, bv: 65500,
            ca: rng.randrange(1 << 16)}  # A's audio, A's high layer and B's video roll over
    tss = {ssrc: rng.randrange(1 << 32) for ssrc in seqs}
    ops = [Op("publisher", (a, (aa,), {ah: Layer.HIGH})),  # A's low layer: learned from RID
           Op("publisher", (b, (ba,), {bv: Layer.HIGH})),
           Op("publisher", (c, (ca,), {}))]
    held: list[Op] = []  # reordering: a packet sent after its successor
    tails: set[bytes] = set()

    def packet(ssrc: int, kind: StreamKind, keyframe: bool = False,
               padding_only: bool = False) -> list[Op]:
        skip = 1 if rng.random() < 0.05 else 0  # upstream loss
        seqs[ssrc] = (seqs[ssrc] + 1 + skip) & 0xFFFF
        tss[ssrc] = (tss[ssrc] + TS_STEP[kind] * (1 + skip)) & 0xFFFFFFFF
        csrcs = tuple(rng.randrange(1 << 32) for _ in range(rng.choice([0, 0, 1, 3])))
        padding = rng.choice([0, 0, 0, rng.randrange(1, 12)])
        exts: dict[int, bytes] = {EXT.transport_cc: rng.randbytes(2)}
        raw_ext = None
        if kind == A:
            exts[EXT.audio_level] = bytes([0x80 | rng.randrange(128)])
            payload, pt = rng.randbytes(rng.randrange(20, 200)), 111
            if rng.random() < 0.3:
                raw_ext = two_byte_ext((EXT.audio_level, exts[EXT.audio_level]), (7, b"xyz"))
        elif ssrc == bv:  # VP8 keyframe detection, no frame descriptor
            payload = bytes([0x10, 0x00 if keyframe else 0x01]) + rng.randbytes(
                rng.randrange(50, 1250))
            pt = 96
        else:  # generic frame descriptor; A's low layer names its RID
            exts[EXT.frame_descriptor] = bytes([FD_KEYFRAME if keyframe else FD_DELTA, 0, 1, 2])
            if ssrc == al:
                exts[EXT.rid] = b"l"
            payload, pt = rng.randbytes(rng.randrange(50, 1250)), 100
        if padding_only:
            payload, padding = b"", rng.randrange(1, 200)
        if raw_ext is not None:
            plain = with_ext(make_rtp(ssrc, seqs[ssrc], tss[ssrc], payload, pt=pt,
                                      padding=padding), raw_ext)
        else:
            plain = make_rtp(ssrc, seqs[ssrc], tss[ssrc], payload, pt=pt, csrcs=csrcs,
                             extensions=exts, padding=padding, marker=rng.random() < 0.2)
        tails.add(plain[rtp.parse(plain).ext_offset:])
        srtp = peers[owner[ssrc]].protect(plain)
        out = [Op("srtp", (owner[ssrc], srtp))]
        if rng.random() < 0.03:  # a forgery first (its index is new: the tag decides)
            out.insert(0, Op("srtp", (owner[ssrc], srtp[:-1] + bytes([srtp[-1] ^ 1]))))
        if rng.random() < 0.03:
            out.append(Op("srtp", (owner[ssrc], srtp)))  # replayed
        if not padding_only and rng.random() < 0.05:
            held.extend(out)  # goes out after the next packet of any stream
            return []
        out += held
        held.clear()
        return out

    slot = lambda *args: Op("slot", args)  # noqa: E731
    ops += [slot(s1, A, 0, SlotSource(a, csrc=aa)),
            slot(s1, A, 1, SlotSource(c, csrc=ca)),
            slot(s1, V, 0, SlotSource(a, csrc=ah, layer=Layer.HIGH)),
            slot(s2, V, 0, SlotSource(a, csrc=al, layer=Layer.LOW)),
            slot(s2, A, 1, SlotSource(b, csrc=ba)),
            slot(s2, V, 1, SlotSource(b, csrc=bv)),
            slot(b, A, 0, SlotSource(a, csrc=aa)),
            slot(b, V, 1, SlotSource(a, csrc=ah, layer=Layer.LOW))]
    for n in range(160):
        if n == 60:  # S1: audio slot 0 to C at once; video slot 0 to A's low layer
            ops += [slot(s1, A, 0, SlotSource(c, csrc=ca)),
                    slot(s1, V, 0, SlotSource(a, csrc=ah, layer=Layer.LOW))]
        if n == 100:  # S2's video slot 0 to B (on B's next keyframe), audio slot 1 emptied
            ops += [slot(s2, V, 0, SlotSource(b, csrc=bv)), slot(s2, A, 1, None)]
        ops += packet(aa, A)
        if n % 37 == 5:
            ops += packet(aa, A, padding_only=True)
        ops += packet(ah, V, keyframe=n % 40 == 0)
        ops += packet(al, V, keyframe=n % 40 in (0, 20))
        if n % 23 == 7:
            ops += packet(ah, V, padding_only=True)
        ops += packet(ba, A)
        ops += packet(bv, V, keyframe=n % 30 == 1)
        ops += packet(ca, A)
    ops += held
    return specs, ops, peers, tails


class Initial:
    """The same first slot indices for both planes, in slot creation order."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return FIRST_SLOT_INDEX + self.calls % 3


async def run(harness: Harness, specs: list[LegSpec], ops: list[Op]) -> dict[int, list[bytes]]:
    """Every op on the harness's plane; the SRTP copies each leg's client got, in order."""
    plane = harness.plane
    for spec in specs:
        await harness.add_leg(spec)
    for i, op in enumerate(ops):
        if op.kind == "publisher":
            plane.set_publisher(*op.args)
        elif op.kind == "slot":
            plane.set_slot(*op.args)
        else:
            plane.handle_packet(*op.args)
        if i % 20 == 0:
            if hasattr(plane, "sync"):
                plane.sync()
            await asyncio.sleep(0)  # let the clients read
    if hasattr(plane, "sync"):
        plane.sync()
    clients = [leg.client for leg in harness.legs.values()]
    total = -1
    while total != sum(len(c.packets) for c in clients):
        total = sum(len(c.packets) for c in clients)
        await asyncio.sleep(0.2)
    return {leg_id: leg.client.packets for leg_id, leg in harness.legs.items()}


@pytest.mark.parametrize("profile", [SRTP_AES_CM_128_HMAC_SHA1_80, SRTP_AEAD_AES_128_GCM])
@pytest.mark.parametrize("workers", [0, 2])
async def test_same_bytes_as_the_userspace_plane(profile: str, workers: int) -> None:
    specs, ops, peers, tails = scenario(seed=12, profile=profile)
    userspace = UserspaceHarness(UserspaceDataPlane(
        slot_initial_index=Initial(), slot_initial_ts=lambda: 0,
        switch_ts_gap=lambda kind, _elapsed: TS_STEP[kind], layer_paused_after=NEVER_PAUSED))
    native = NativeHarness(NativeDataPlane(
        workers=workers, slot_initial_index=Initial(), slot_initial_ts=lambda: 0,
        fixed_ts_gap=TS_STEP, layer_paused_after=NEVER_PAUSED))
    try:
        expected = await run(userspace, specs, ops)
        got = await run(native, specs, ops)
        expected_counters = userspace.plane.read_counters()
        got_counters = native.plane.read_counters()
        expected_stats = {(leg, ssrc): userspace.plane.read_receive_stats(leg, ssrc)
                          for leg in range(1, 6) for ssrc in range(0xA0A0A0A0, 0xC0C0C0C1,
                                                                   0x01010101)}
        got_stats = {key: native.plane.read_receive_stats(*key) for key in expected_stats}
    finally:
        userspace.close()
        native.close()

    assert sum(map(len, expected.values())) > 1000
    for leg_id, copies in expected.items():
        assert len(got[leg_id]) == len(copies), f"leg {leg_id}"
        for i, (want, have) in enumerate(zip(copies, got[leg_id])):
            assert have == want, f"leg {leg_id}, copy {i} of {len(copies)} differs"
    assert got_counters == expected_counters
    for key, stats in expected_stats.items():  # jitter depends on arrival times
        have = got_stats[key]
        assert (stats is None) == (have is None), key
        if stats is not None and have is not None:
            assert (have.received, have.first_seq, have.highest_seq) == \
                (stats.received, stats.first_seq, stats.highest_seq), key
    c = expected_counters
    assert c[Counter.DROP_REPLAY] and c[Counter.DROP_AUTH] and c[Counter.DROP_PADDING]

    # libsrtp at each subscriber decrypts every copy to what a publisher sent
    for leg_id, copies in got.items():
        for copy in copies:
            plain = peers[leg_id].unprotect(copy)
            view = rtp.parse(plain)
            assert view.csrc_count == 1 and plain[16:] in tails
