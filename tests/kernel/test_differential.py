"""Differential test: one packet sequence through both data planes, the same bytes out.

The userspace plane (controller/userspace.py, libsrtp) runs over real UDP sockets on
loopback, as in tests/dataplane/test_contract.py; the kernel plane runs the
real sft_tc_ingress through BPF_PROG_TEST_RUN in a namespace, copies captured on the
veth peer. Both get identical LegSpecs (leg ids, SRTP keys, slot SSRCs) and the very
same SRTP bytes from the publishers. Every subscriber's copies, per slot, must be
byte-identical SRTP.

The planes' free choices are aligned through explicit hooks:
  * the SRTP index of a slot's first packet: ``slot_initial_index`` of both planes
    (near 65535, so the slots' sequence numbers and ROC roll over);
  * the timestamp a slot starts from: 0 in the kernel (``sft_slot_state`` is created
    zeroed), ``slot_initial_ts`` in userspace;
  * the timestamp gap a slot leaves when it switches source: SFT_TS_STEP_AUDIO/VIDEO
    (960 / 3000) in the kernel, by design independent of wall time; userspace uses
    the wall-clock gap unless ``switch_ts_gap`` is given, as here;
  * when a simulcast layer counts as paused (wall time on both planes): never here
    (``layer_paused_after``), the fallback has tests of its own on each plane.

One difference, by design, is kept out of the byte-for-byte sequence: the kernel
drops the first packet of each new publisher SSRC (its AES-CM keystream is computed
once the first packet says where the stream is); the sequence primes every SSRC with
one packet while no slot is subscribed, which both planes drop without touching slot
state. Loss upstream (a gap in a publisher's sequence numbers), reordering and
padding-only packets are in the sequence: both planes keep the gap and the order
and close up after padding. Slots and publishers roll over (ROC at 65535 -> 0); slots
switch source (audio at once, video at a keyframe) and simulcast layer (at the new
layer's keyframe, the old one flowing until then).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from harness import (
    Namespace,
    drain,
    make_peer,
    one_byte_ext,
    rtp,
    srtp_session,
    two_byte_ext,
    udp_frame,
)

from sftd.bpf.dataplane import KernelDataPlane
from sftd.controller.dataplane import Counter, ExtensionIds, Layer, LegSpec, SlotSource, StreamKind
from sftd.controller.userspace import UserspaceDataPlane
from tests.conftest import owned_name

EXT = ExtensionIds()
FD_KEYFRAME, FD_DELTA = 0x80, 0x88
TS_STEP = {StreamKind.AUDIO: 960, StreamKind.VIDEO: 3000}  # SFT_TS_STEP_* of the kernel
NEVER_PAUSED = 3600.0  # seconds: the byte-for-byte sequence does not depend on timing
FIRST_SLOT_INDEX = 65530  # slots roll over after 6 packets

# ---- the scenario, as plane-independent operations ----


@dataclass
class Op:
    kind: str  # "publisher" | "slot" | "packet"
    args: tuple


def _vp8(keyframe: bool, size: int, rng: random.Random) -> bytes:
    # VP8 payload descriptor S=1, PID=0; frame tag P bit clear on keyframes
    return bytes([0x10, 0x00 if keyframe else 0x01]) + rng.randbytes(size)


def scenario(seed: int, gap: bool = False) -> tuple[list[LegSpec], list[Op]]:
    """Three publishers (A: audio + two video layers, B: audio + one VP8 layer, C: audio),
    two pure subscribers; B also subscribes. Returns the legs and the operations.
    ``gap``: loss upstream, padding-only packets and reordering in the sequence."""
    rng = random.Random(seed)
    peers = [make_peer(i, 40000 + i, n_audio=2, n_video=2) for i in range(5)]
    a, b, c, s1, s2 = (p.spec for p in peers)
    aa, ah, al, ba, bv, ca = 0xA0A0A0A0, 0xA1A1A1A1, 0xA2A2A2A2, 0xB0B0B0B0, 0xB1B1B1B1, 0xC0C0C0C0
    ops = [Op("publisher", (a.leg_id, (aa,), {ah: Layer.HIGH, al: Layer.LOW})),
           Op("publisher", (b.leg_id, (ba,), {bv: Layer.HIGH})),
           Op("publisher", (c.leg_id, (ca,), {}))]
    seqs = {aa: 65528, ah: rng.randrange(1 << 16), al: rng.randrange(1 << 16), ba: 100,
            bv: 65534, ca: rng.randrange(1 << 16)}  # A audio and B video roll over
    tss = {ssrc: rng.randrange(1 << 32) for ssrc in seqs}

    def packet(leg: LegSpec, ssrc: int, kind: StreamKind, keyframe: bool = False,
               skip: int = 0, padding_only: bool = False) -> Op:
        seqs[ssrc] = (seqs[ssrc] + 1 + skip) & 0xFFFF
        tss[ssrc] = (tss[ssrc] + TS_STEP[kind] * (1 + skip)) & 0xFFFFFFFF
        csrcs = tuple(rng.randrange(1 << 32) for _ in range(rng.choice([0, 0, 1, 3])))
        padding = rng.choice([0, 0, 0, rng.randrange(1, 12)])
        if kind == StreamKind.AUDIO:
            level = bytes([0x80 | rng.randrange(128)])
            ext = rng.choice([one_byte_ext((EXT.audio_level, level)),
                              two_byte_ext((EXT.audio_level, level), (7, b"xyz")),
                              one_byte_ext((3, b"\x01\x02"), (EXT.audio_level, level)), None])
            payload, pt = rng.randbytes(rng.randrange(20, 200)), 111
        elif ssrc == bv:  # VP8 keyframe detection, no frame descriptor
            ext = rng.choice([None, one_byte_ext((2, b"\x05"))])
            payload, pt = _vp8(keyframe, rng.randrange(50, 1300), rng), 96
        else:  # generic frame descriptor, one- or two-byte form
            fd = bytes([FD_KEYFRAME if keyframe else FD_DELTA, 0, 1, 2])
            ext = rng.choice([one_byte_ext((EXT.frame_descriptor, fd)),
                              two_byte_ext((EXT.frame_descriptor, fd), (9, b"\x00" * 5))])
            payload, pt = rng.randbytes(rng.randrange(50, 1300)), 100
        if padding_only:  # dropped by both planes, without a gap in the slots' sequence
            payload, padding = b"", rng.randrange(1, 200)
        plain = rtp(seqs[ssrc], tss[ssrc], ssrc, payload, pt=pt, marker=rng.random() < 0.2,
                    csrcs=csrcs, ext=ext, padding=padding)
        return Op("packet", (leg.leg_id, plain))

    # every SSRC's first packet, while nothing subscribes (see the module docstring)
    for leg, ssrc, kind in ((a, aa, StreamKind.AUDIO), (a, ah, StreamKind.VIDEO),
                            (a, al, StreamKind.VIDEO), (b, ba, StreamKind.AUDIO),
                            (b, bv, StreamKind.VIDEO), (c, ca, StreamKind.AUDIO)):
        ops.append(packet(leg, ssrc, kind))
    A, V = StreamKind.AUDIO, StreamKind.VIDEO
    ops += [Op("slot", (s1.leg_id, A, 0, SlotSource(a.leg_id, csrc=aa))),
            Op("slot", (s1.leg_id, V, 0, SlotSource(a.leg_id, csrc=ah, layer=Layer.HIGH))),
            Op("slot", (s2.leg_id, V, 0, SlotSource(a.leg_id, csrc=al, layer=Layer.LOW))),
            Op("slot", (s2.leg_id, A, 1, SlotSource(b.leg_id, csrc=ba))),
            Op("slot", (s2.leg_id, V, 1, SlotSource(b.leg_id, csrc=bv))),
            Op("slot", (b.leg_id, A, 0, SlotSource(a.leg_id, csrc=aa)))]
    for n in range(14):
        if n == 6:  # S1 switches: audio at once, video on B's next keyframe
            ops += [Op("slot", (s1.leg_id, A, 0, SlotSource(c.leg_id, csrc=ca))),
                    Op("slot", (s1.leg_id, V, 0, SlotSource(b.leg_id, csrc=bv)))]
        if n == 9:  # S2 moves up a simulcast layer of A, on the high layer's next keyframe
            ops.append(Op("slot", (s2.leg_id, V, 0, SlotSource(a.leg_id, csrc=al,
                                                               layer=Layer.HIGH))))
        ops.append(packet(a, aa, A, skip=2 if gap and n == 3 else 0))
        if gap and n in (4, 10):
            ops.append(packet(a, aa, A, padding_only=True))
        if gap and n == 11:
            ops.append(packet(b, bv, V, padding_only=True))
        ops.append(packet(a, ah, V, keyframe=n in (0, 7, 11)))
        ops.append(packet(a, al, V, keyframe=n in (0, 7, 11)))
        ops.append(packet(b, ba, A))
        ops.append(packet(b, bv, V, keyframe=n in (1, 9)))
        ops.append(packet(c, ca, A))
    if gap:  # reordering: two of A's audio packets, and two of B's video, swapped
        for ssrc, n in ((aa, 8), (bv, 4)):
            at = [i for i, op in enumerate(ops) if op.kind == "packet"
                  and struct.unpack_from("!I", op.args[1], 8)[0] == ssrc][1 + n:3 + n]
            ops[at[0]], ops[at[1]] = ops[at[1]], ops[at[0]]
    return [p.spec for p in peers], ops


class Sequence:
    """The same initial slot indices for both planes, in slot creation order."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.first + (self.calls % 3)  # differ a little between slots


def protect_all(specs: list[LegSpec], ops: list[Op]) -> list[Op]:
    """Publishers' SRTP, protected once: both planes get the very same bytes."""
    senders = {spec.leg_id: srtp_session(spec.srtp.rx, outbound=True) for spec in specs}
    return [Op("srtp", (op.args[0], senders[op.args[0]].protect(op.args[1])))
            if op.kind == "packet" else op for op in ops]


Received = dict[tuple[int, int], list[bytes]]  # (subscriber leg, slot SSRC) -> SRTP copies


def _apply(plane, op: Op) -> None:  # noqa: ANN001
    if op.kind == "publisher":
        plane.set_publisher(*op.args)
    elif op.kind == "slot":
        plane.set_slot(*op.args)


# ---- the kernel plane ----


def run_kernel(specs: list[LegSpec], ops: list[Op],
               initial: Callable[[], int]) -> tuple[Received, dict[Counter, int]]:
    received: Received = defaultdict(list)
    by_addr = {spec.remote_addr: spec.leg_id for spec in specs}
    with Namespace() as ns:
        dp = KernelDataPlane((), (40000, 40999), instance=owned_name("diff"),
                             layer_paused_after=NEVER_PAUSED,
                             slot_initial_index=initial)
        try:
            capture = ns.capture()
            for spec in specs:
                dp.add_leg(spec)
            for op in ops:
                if op.kind != "srtp":
                    _apply(dp, op)
                    continue
                leg_id, srtp = op.args
                spec = next(s for s in specs if s.leg_id == leg_id)
                dp.tc_program.test_run(udp_frame(spec.remote_addr, spec.local_addr, srtp))
                dp.maintain()
                for frame in drain(capture, 0, timeout=0.02):
                    assert frame.ip_csum_ok and frame.udp_csum_ok
                    ssrc = struct.unpack_from("!I", frame.payload, 8)[0]
                    received[(by_addr[frame.dst], ssrc)].append(frame.payload)
            for frame in drain(capture, 0, timeout=0.2):
                ssrc = struct.unpack_from("!I", frame.payload, 8)[0]
                received[(by_addr[frame.dst], ssrc)].append(frame.payload)
            return received, dp.read_counters()
        finally:
            dp.close()


# ---- the userspace plane, over UDP on loopback ----


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
        self.packets.append(data)


class _SftSide(asyncio.DatagramProtocol):
    def __init__(self, plane: UserspaceDataPlane, leg_id: int) -> None:
        self.plane, self.leg_id = plane, leg_id

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
        self.plane.handle_packet(self.leg_id, data)


async def run_userspace(specs: list[LegSpec], ops: list[Op],
                        initial: Callable[[], int]) -> tuple[Received, dict[Counter, int]]:
    plane = UserspaceDataPlane(slot_initial_index=initial, slot_initial_ts=lambda: 0,
                               layer_paused_after=NEVER_PAUSED,
                               switch_ts_gap=lambda kind, _elapsed: TS_STEP[kind])
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    clients: dict[int, tuple[asyncio.DatagramTransport, _Collect, tuple[str, int]]] = {}
    try:
        for spec in specs:
            sft_t, _ = await loop.create_datagram_endpoint(
                lambda leg_id=spec.leg_id: _SftSide(plane, leg_id), local_addr=("127.0.0.1", 0))
            client_t, client = await loop.create_datagram_endpoint(
                _Collect, local_addr=("127.0.0.1", 0))
            transports += [sft_t, client_t]
            local = sft_t.get_extra_info("sockname")
            plane.add_leg(dataclasses.replace(spec, local_addr=local,
                                              remote_addr=client_t.get_extra_info("sockname"),
                                              transport=sft_t))
            clients[spec.leg_id] = (client_t, client, local)
        for op in ops:
            if op.kind != "srtp":
                _apply(plane, op)
                continue
            leg_id, srtp = op.args
            client_t, _client, local = clients[leg_id]
            before = plane.read_counters()[Counter.RX_PACKETS]
            client_t.sendto(srtp, local)
            deadline = time.monotonic() + 2
            while plane.read_counters()[Counter.RX_PACKETS] == before:  # keep the order
                assert time.monotonic() < deadline, "the userspace plane got nothing"
                await asyncio.sleep(0.001)
        expected = plane.read_counters()[Counter.TX_PACKETS]
        deadline = time.monotonic() + 2
        while sum(len(c.packets) for _t, c, _l in clients.values()) < expected:
            assert time.monotonic() < deadline, "copies lost on loopback"
            await asyncio.sleep(0.005)
        received: Received = defaultdict(list)
        for leg_id, (_t, client, _l) in clients.items():
            for data in client.packets:
                received[(leg_id, struct.unpack_from("!I", data, 8)[0])].append(data)
        return received, plane.read_counters()
    finally:
        for t in transports:
            t.close()
        plane.close()


def _payload(plain: bytes) -> bytes:
    """An RTP packet's payload: what neither plane changes."""
    end = len(plain) - (plain[-1] if plain[0] & 0x20 else 0)
    start = 12 + 4 * (plain[0] & 0x0F)
    if plain[0] & 0x10:
        start += 4 + 4 * struct.unpack_from("!H", plain, start + 2)[0]
    return plain[start:end]


def _both(seed: int, gap: bool) -> tuple[list[LegSpec], Received, Received, dict, dict,
                                         dict[bytes, int]]:
    """Both planes' copies and counters, and each sent payload's publisher SSRC."""
    specs, ops = scenario(seed, gap)
    origin = {_payload(op.args[1]): struct.unpack_from("!I", op.args[1], 8)[0]
              for op in ops if op.kind == "packet"}
    ops = protect_all(specs, ops)
    kernel, kernel_counters = run_kernel(specs, ops, Sequence(FIRST_SLOT_INDEX))
    user, user_counters = asyncio.run(run_userspace(specs, ops, Sequence(FIRST_SLOT_INDEX)))
    return specs, kernel, user, kernel_counters, user_counters, origin


@pytest.mark.parametrize(("seed", "gap"), [(0, False), (1, False), (7, True)])
def test_both_planes_send_identical_bytes_to_every_subscriber(seed: int, gap: bool) -> None:
    specs, kernel, user, kc, uc, origin = _both(seed, gap)
    assert set(kernel) == set(user), f"seed {seed}: slots differ"
    # S1 audio (A then C), S1 video (A high then B), S2 video (A low), S2 audio (B),
    # S2 video (B), B audio (A)
    assert len(kernel) == 6
    for key in sorted(kernel):
        assert len(kernel[key]) == len(user[key]), f"seed {seed} slot {key}: count"
        for n, (k, u) in enumerate(zip(kernel[key], user[key])):
            assert k == u, f"seed {seed} slot {key}: copy {n} differs"
    receivers = {spec.leg_id: srtp_session(spec.srtp.tx, outbound=False) for spec in specs}
    for (leg_id, _ssrc), copies in kernel.items():
        for data in copies:
            receivers[leg_id].unprotect(data)  # and they decrypt
    assert kc[Counter.TX_PACKETS] == uc[Counter.TX_PACKETS] == sum(map(len, kernel.values()))
    assert kc[Counter.RX_PACKETS] == uc[Counter.RX_PACKETS]
    # the switches happened: S1's audio slot carries C after A, its video slot B
    s1 = specs[3]
    for slot_ssrc, sources in ((s1.audio_slot_ssrcs[0], {0xA0A0A0A0, 0xC0C0C0C0}),
                               (s1.video_slot_ssrcs[0], {0xA1A1A1A1, 0xB1B1B1B1})):
        # the CSRC is in the clear part of the SRTP header
        csrcs = {struct.unpack_from("!I", d, 12)[0] for d in kernel[(s1.leg_id, slot_ssrc)]}
        assert csrcs == sources
    # the simulcast switch: S2's video slot carries A's low layer until A's high layer
    # has a keyframe, then the high layer; no copy missing in between
    s2 = specs[4]
    rx = srtp_session(s2.srtp.tx, outbound=False)
    layers = [origin[_payload(rx.unprotect(d))] for d in kernel[(s2.leg_id,
                                                                 s2.video_slot_ssrcs[0])]]
    assert layers == [0xA2A2A2A2] * 11 + [0xA1A1A1A1] * 3, layers


def test_publisher_loss_and_reordering_stay_and_padding_leaves_no_gap() -> None:
    """Publisher A's audio skips two sequence numbers (loss upstream): both planes keep
    the gap in the slot's sequence, so the subscriber can NACK it; A's padding-only
    packets are dropped without a gap; two swapped packets of A's audio and of B's
    video are forwarded as they come, each with its own number, for the receiver's
    jitter buffer to reorder. Identical bytes, checked above; here the steps."""
    specs, kernel, _user, kc, uc, _origin = _both(7, gap=True)

    def steps(leg: LegSpec, slot_ssrc: int) -> list[int]:
        rx = srtp_session(leg.srtp.tx, outbound=False)
        seqs = [struct.unpack_from("!H", rx.unprotect(d), 2)[0]
                for d in kernel[(leg.leg_id, slot_ssrc)]]
        return [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)]

    b, s1, s2 = specs[1], specs[3], specs[4]
    s1_audio = steps(s1, s1.audio_slot_ssrcs[0])  # A's audio, before the swap
    assert sorted(set(s1_audio)) == [1, 3] and s1_audio.count(3) == 1, s1_audio
    b_audio = steps(b, b.audio_slot_ssrcs[0])  # A's audio: the gap, then the swap
    assert sorted(b_audio) == [1] * 9 + [2, 2, 3, 0xFFFF], b_audio
    assert b_audio.index(3) < b_audio.index(0xFFFF)
    s2_video = steps(s2, s2.video_slot_ssrcs[1])  # B's video, with its swap
    assert sorted(s2_video) == [1] * 9 + [2, 2, 0xFFFF], s2_video
    assert kc[Counter.DROP_PADDING] == uc[Counter.DROP_PADDING] == 3
