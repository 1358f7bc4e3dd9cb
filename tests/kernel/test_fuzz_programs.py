"""Fuzzing sft_xdp_ingress and sft_tc_ingress through BPF_PROG_TEST_RUN (issue 6, item 2).

``BPF_FUZZ_PACKETS`` packets (default 1,000,000; ``BPF_FUZZ_SEED`` picks the run) go through
both programs, with maps filled by the real ``KernelDataPlane`` for a small conference:

    A publishes audio (to B and C) and video (to B); B publishes audio (to A);
    C publishes audio to nobody; D publishes audio to A but its lease has expired.

Packets: fully valid SRTP of live legs, and the same with bit flips, truncations,
trailing bytes, wrong IP/UDP lengths, wrong ports, wrong IP version/IHL/fragment
bits/protocol/ethertype, spoofed sources (right 5-tuple, wrong or other legs' keys),
replays, random bytes, valid SRTP from unknown addresses, and authentic packets that
must still not be delivered (no subscriber, expired lease, undeclared SSRC, padding).

The oracle (tests/kernel/fuzzkit.py) models both programs. Per packet, exactly:
  * XDP: the verdict, and its data is unchanged;
  * TC: the verdict; whether the packet was forwarded (the packet left behind was
    rewritten into a copy); a forwarded packet passed HMAC-SHA1-80 with the keys of the
    live leg owning its 5-tuple, at a fresh index; the copy decrypts with the
    subscriber's keys to the original payload; an unauthentic packet's data is unchanged.
Per batch, with exact arithmetic on the per-CPU counter deltas:
  * every counter and kcounter moved exactly as the model predicts packet by packet;
  * XDP identity: each run bumps exactly one XDP_* kcounter, except frames that are not
    ours (not IPv4/UDP, later fragment, bad IHL, short, port outside the media range):
        sum(XDP_* deltas) == runs - not_ours;
  * TC identity: each run ends in exactly one of: one DROP_* counter, TC_PASS_CONTROL,
    forwarded, or an uncounted pass of a frame that is not ours:
        sum(DROP_*) - XDP_DROP_UNKNOWN + TC_PASS_CONTROL + forwarded + not_ours == runs
    and RX_PACKETS counts exactly the runs that reached the SRTP checks:
        RX_PACKETS == forwarded + AUTH + REPLAY + PADDING + NO_ROUTE
                      + (MALFORMED - TC_BAD_VERSION) + UNKNOWN_SSRC + NOT_READY
                      + LEG_REPLACED + ADJUST_FAILED
  * TX_PACKETS == sum of copies (subscribed slots of the publisher's kind) of forwarded
    packets; nothing forwarded that the model did not forward.
"""

from __future__ import annotations

import collections
import errno
import os
import random
import struct
import time
from dataclasses import dataclass, field

from fuzzkit import (
    SFT_MAX_RTP,
    TC_ACT_OK,
    TC_ACT_SHOT,
    FastRunner,
    Genuine,
    ReplayState,
    TcOutcome,
    estimate_index,
    frame,
    ip_csum,
    parse_rtp,
    raw_addr,
    to_a_leg,
    xdp_model,
)
from harness import SFT_IP, Namespace, Peer, one_byte_ext, rtp, srtp_session

from sftd.bpf.dataplane import KernelDataPlane
from sftd.bpf.libbpf import BpfError
from sftd.controller.dataplane import (
    Counter,
    ExtensionIds,
    Layer,
    LegSpec,
    SlotSource,
    SrtpKeys,
    StreamKind,
)

PACKETS = int(os.environ.get("BPF_FUZZ_PACKETS", "1000000"))
SEED = int(os.environ.get("BPF_FUZZ_SEED", "20240606"))
BATCH = int(os.environ.get("BPF_FUZZ_BATCH", "4096"))
PROFILE = "SRTP_AES128_CM_SHA1_80"
IDS = ExtensionIds()
DROPS = [c for c in Counter if c.name.startswith("DROP_")]


@dataclass
class Stream:
    leg_id: int
    ssrc: int
    kind: StreamKind
    next_index: int


@dataclass
class Leg:
    peer: Peer
    addr: tuple[bytes, bytes]
    live: bool = True
    streams: dict[int, Stream] = field(default_factory=dict)
    undeclared: Stream | None = None
    slots: list[tuple[StreamKind, int]] = field(default_factory=list)  # (kind, subscriber leg)


class World:
    """The conference, through the real KernelDataPlane verbs, and the model's state."""

    def __init__(self, dp: KernelDataPlane, rng: random.Random) -> None:
        self.dp = dp
        self.rng = rng
        self.sft = raw_addr((SFT_IP, 0))[0]
        self.legs: dict[int, Leg] = {}
        self.by_addr: dict[tuple[bytes, bytes, bytes, bytes], int] = {}
        self.replay: dict[tuple[int, int], ReplayState] = {}
        self.video_source_set = False
        self.accepted: collections.deque[tuple[bytes, Genuine]] = collections.deque(maxlen=512)
        names = "ABCD"
        for i, name in enumerate(names):
            spec = LegSpec(
                leg_id=900 + i, conference_id=7, local_addr=(SFT_IP, 40000 + i),
                remote_addr=(f"10.77.0.{20 + i}", 5000 + i),
                srtp=SrtpKeys(profile=PROFILE, rx=rng.randbytes(30), tx=rng.randbytes(30)),
                audio_slot_ssrcs=(0x5F000000 + i * 16, 0x5F000001 + i * 16),
                video_slot_ssrcs=(0x5F100000 + i * 16,), extensions=IDS)
            dp.add_leg(spec)
            peer = Peer(spec)
            leg = Leg(peer, (raw_addr(spec.remote_addr)))
            self.legs[spec.leg_id] = leg
            self.by_addr[(leg.addr[0], self.sft, leg.addr[1], struct.pack("!H", 40000 + i))] = \
                spec.leg_id
            setattr(self, name, spec.leg_id)
        a, b, c, d = (self.legs[x] for x in (self.A, self.B, self.C, self.D))

        def start() -> int:  # random start, some close to a sequence-number rollover
            return rng.choice([rng.randrange(1, 60000), 65536 - rng.randrange(1, 3000)])

        a.streams = {0xA0A0A0A0: Stream(self.A, 0xA0A0A0A0, StreamKind.AUDIO, start()),
                     0xA1A1A1A1: Stream(self.A, 0xA1A1A1A1, StreamKind.VIDEO, start())}
        b.streams = {0xB0B0B0B0: Stream(self.B, 0xB0B0B0B0, StreamKind.AUDIO, start())}
        c.streams = {0xC0C0C0C0: Stream(self.C, 0xC0C0C0C0, StreamKind.AUDIO, start())}
        d.streams = {0xD0D0D0D0: Stream(self.D, 0xD0D0D0D0, StreamKind.AUDIO, start())}
        b.undeclared = Stream(self.B, 0xBADBAD00, StreamKind.AUDIO, rng.randrange(1, 30000))
        for leg_id, leg in self.legs.items():
            dp.set_publisher(leg_id, tuple(s.ssrc for s in leg.streams.values()
                                           if s.kind == StreamKind.AUDIO),
                             {s.ssrc: Layer.HIGH for s in leg.streams.values()
                              if s.kind == StreamKind.VIDEO})
        for sub, kind, index, pub in ((self.B, StreamKind.AUDIO, 0, self.A),
                                      (self.C, StreamKind.AUDIO, 0, self.A),
                                      (self.B, StreamKind.VIDEO, 0, self.A),
                                      (self.A, StreamKind.AUDIO, 0, self.B),
                                      (self.A, StreamKind.AUDIO, 1, self.D)):
            dp.set_slot(sub, kind, index, SlotSource(pub, csrc=0x12340000 + pub))
            self.legs[pub].slots.append((kind, sub))
        self.expire(self.D)
        self.attacker = srtp_session(rng.randbytes(30), outbound=True)

    def expire(self, leg_id: int) -> None:
        self.dp.set_lease(leg_id, time.monotonic_ns() - 31 * 10**9)
        self.legs[leg_id].live = False

    def maintain(self) -> None:
        self.dp.maintain()
        self.expire(self.D)  # maintain may renew every lease: the test keeps D's expired

    def local(self, leg_id: int) -> tuple[bytes, int]:
        return self.sft, 40000 + (leg_id - 900)

    def remote(self, leg_id: int) -> tuple[bytes, int]:
        addr = self.legs[leg_id].addr
        return addr[0], struct.unpack("!H", addr[1])[0]

    # ---- packets ----

    def plain(self, s: Stream, index: int, *, empty: bool = False,
              bad_padding: bool = False) -> tuple[bytes, bool]:
        rng = self.rng
        seq = index & 0xFFFF
        csrcs = tuple(rng.randrange(1 << 32) for _ in range(rng.choice((0, 0, 0, 1, 2))))
        keyframe = False
        if s.kind == StreamKind.VIDEO:
            fd = rng.choice((0x80, 0x80, 0x88, 0x40))
            keyframe = fd == 0x80
            ext = one_byte_ext((IDS.frame_descriptor, bytes([fd, 0, 1, 2])))
            size = rng.randrange(1, 1200)
            pt = 100
        else:
            ext = (one_byte_ext((IDS.audio_level, bytes([0x80 | rng.randrange(128)])))
                   if rng.random() < 0.6 else None)
            size = rng.randrange(1, 300)
            pt = 111
        payload = b"" if empty else rng.randbytes(min(size, 200) if bad_padding else size)
        padding = 0 if empty or bad_padding else rng.choice((0, 0, 0, rng.randrange(1, 16)))
        out = rtp(seq, index * 960, s.ssrc, payload, pt=pt, marker=rng.random() < 0.2,
                  csrcs=csrcs, ext=ext, padding=padding)
        if bad_padding:  # P set, pad count larger than the payload
            out = bytes([out[0] | 0x20]) + out[1:-1] + bytes([rng.randrange(len(payload), 256)])
        return out, keyframe

    def genuine(self, s: Stream, **kw: bool) -> Genuine:
        plain, keyframe = self.plain(s, s.next_index, **kw)
        srtp = self.legs[s.leg_id].peer.sender.protect(plain)
        return Genuine(s.leg_id, s.ssrc, s.next_index, srtp, plain, keyframe)

    def frame_of(self, g: Genuine, from_leg: int | None = None) -> bytes:
        leg = g.leg_id if from_leg is None else from_leg
        return frame(self.remote(leg), self.local(leg), g.srtp,
                     ip_id=self.rng.randrange(1 << 16))

    # ---- the TC model ----

    def tc_model(self, f: bytes, origin: Genuine | None) -> TcOutcome:
        n = len(f)
        if n < 44:
            return TcOutcome(TC_ACT_OK)
        if f[12:14] != b"\x08\x00" or f[14] != 0x45 or f[23] != 17 or \
                ((f[20] << 8) | f[21]) & 0x3FFF:
            return TcOutcome(TC_ACT_OK)
        if not 40000 <= (f[36] << 8) | f[37] <= 40999:
            return TcOutcome(TC_ACT_OK)
        if not to_a_leg(f[30:34], f[36:38], self.by_addr):
            return TcOutcome(TC_ACT_OK)
        b0, b1 = f[42], f[43]
        if b0 < 128 or b0 > 191:
            if b0 <= 3 or 20 <= b0 <= 63:
                return TcOutcome(TC_ACT_OK, pass_control=True)
            return TcOutcome(TC_ACT_SHOT, "DROP_MALFORMED", "TC_BAD_VERSION")
        if 192 <= b1 <= 223:
            return TcOutcome(TC_ACT_OK, pass_control=True)
        leg_id = self.by_addr.get((f[26:30], f[30:34], f[34:36], f[36:38]))
        if leg_id is None:
            return TcOutcome(TC_ACT_SHOT, "DROP_UNKNOWN_LEG")
        leg = self.legs[leg_id]
        if not leg.live:
            return TcOutcome(TC_ACT_SHOT, "DROP_LEASE_EXPIRED", "TC_LEASE_EXPIRED")
        rtp_len = (((f[16] << 8) | f[17]) - 28) & 0xFFFFFFFF
        out = TcOutcome(TC_ACT_SHOT, rx=True, rx_bytes=n - 42)  # bytes that arrived

        def drop(counter: str, k: str | None = None) -> TcOutcome:
            out.counter, out.kcounter = counter, k
            return out

        if SFT_MAX_RTP < rtp_len < 0x10000:
            return drop("DROP_MALFORMED", "TC_OVERSIZE")
        if rtp_len > SFT_MAX_RTP or rtp_len + 42 > n or rtp_len < 22:
            return drop("DROP_MALFORMED", "TC_TRUNCATED")
        srtp = f[42:42 + rtp_len]
        reason, info = parse_rtp(srtp)
        if reason:
            return drop("DROP_MALFORMED", reason)
        key = (leg_id, info["ssrc"])
        rs = self.replay.get(key)
        index = info["seq"]
        if rs is not None:
            index = estimate_index(rs.highest, info["seq"])
            if rs.seen(index):
                return drop("DROP_REPLAY")
        if origin is None or origin.leg_id != leg_id or origin.srtp != srtp or \
                origin.index != index:
            return drop("DROP_AUTH")
        out.authentic = True
        if rs is None:
            self.replay[key] = ReplayState(index)
        else:
            rs.accept(index)
        stream = leg.streams.get(info["ssrc"])
        if stream is None:
            return drop("DROP_UNKNOWN_SSRC", "TC_UNKNOWN_SSRC")
        payload_len = info["payload_len"]
        if payload_len == 0:
            return drop("DROP_PADDING")
        if info["b0"] & 0x20 and origin.plain[-1] >= payload_len:
            return drop("DROP_PADDING")
        if not leg.slots:
            return drop("DROP_NO_ROUTE")
        sent = 0
        for kind, _sub in leg.slots:
            if kind != stream.kind:
                continue
            if kind == StreamKind.VIDEO and not self.video_source_set:
                if not origin.keyframe:
                    out.extra_k.append("TC_WAIT_KEYFRAME")
                    continue
                self.video_source_set = True
            sent += 1
        if not sent:
            return drop("DROP_NO_ROUTE")
        out.forwarded = sent
        self.out_rtp_len = rtp_len + 4 - 4 * (info["b0"] & 0x0F)
        return out


def _mutate(world: World, kind: str) -> tuple[bytes, Genuine | None]:
    """One fuzz packet of the given class: (frame, the genuine packet it came from)."""
    rng = world.rng
    streams = [s for leg in world.legs.values() for s in leg.streams.values()]
    live = [s for s in streams if world.legs[s.leg_id].live]
    if kind == "valid":
        g = world.genuine(rng.choice(live))
        return world.frame_of(g), g
    if kind == "undeliverable":  # authentic, but must not be forwarded
        which = rng.randrange(5)
        if which == 0:
            s = world.legs[world.C].streams[0xC0C0C0C0]
        elif which == 1:
            s = world.legs[world.D].streams[0xD0D0D0D0]
        elif which == 2:
            s = world.legs[world.B].undeclared
        else:
            g = world.genuine(rng.choice(live), empty=which == 3, bad_padding=which == 4)
            return world.frame_of(g), g
        g = world.genuine(s)
        return world.frame_of(g), g
    if kind == "replay" and world.accepted:
        f, g = rng.choice(world.accepted)
        return f, g
    if kind == "random":
        which = rng.randrange(3)
        if which == 0:
            return rng.randbytes(rng.randrange(14, 1600)), None
        leg_id = rng.choice(list(world.legs))
        body = rng.randbytes(rng.randrange(0, 1500))
        if which == 2 and body:  # RTP-looking, reaches the SRTP checks
            body = bytes([rng.randrange(0x80, 0xC0), rng.choice((111, 100, 0xEF))]) + body[2:]
        return frame(world.remote(leg_id), world.local(leg_id), body), None
    s = rng.choice(streams)
    g = world.genuine(s)
    f = bytearray(world.frame_of(g))
    if kind == "bitflip":
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(f)) if rng.random() < 0.5 else rng.randrange(min(len(f), 60))
            f[pos] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        which = rng.randrange(3)
        if which == 0:
            del f[rng.randrange(14, len(f)):]
        elif which == 1:  # shorter SRTP, lengths consistent
            cut = g.srtp[:rng.randrange(0, len(g.srtp))]
            f = bytearray(frame(world.remote(s.leg_id), world.local(s.leg_id), cut))
        else:  # trailing bytes after the IP packet
            f += rng.randbytes(rng.randrange(1, 200))
    elif kind == "iplen":
        tot = len(f) - 14
        new = rng.choice((rng.randrange(0, 28), rng.randrange(1 << 16),
                          tot + rng.randrange(-40, 41), tot - 1, tot + 1, 28 + 1473))
        struct.pack_into("!H", f, 16, new & 0xFFFF)
        if rng.random() < 0.5:
            struct.pack_into("!H", f, 24, 0)
            struct.pack_into("!H", f, 24, ip_csum(bytes(f[14:34])))
    elif kind == "udplen":
        udp_len = len(f) - 34
        struct.pack_into("!H", f, 38, rng.choice((rng.randrange(0, 12), rng.randrange(1 << 16),
                                                  udp_len + rng.randrange(-30, 31))) & 0xFFFF)
    elif kind == "ports":
        which = rng.randrange(4)
        if which == 0:
            struct.pack_into("!H", f, 34, rng.randrange(1 << 16))
        elif which == 1:
            struct.pack_into("!H", f, 36, rng.randrange(1 << 16))
        elif which == 2:  # another leg's media port
            struct.pack_into("!H", f, 36, 40000 + rng.randrange(8))
        else:
            struct.pack_into("!H", f, 34, (struct.unpack_from("!H", f, 34)[0] + 1) & 0xFFFF)
    elif kind == "iphdr":
        which = rng.randrange(6)
        if which == 0:
            f[14] = (rng.choice((0, 1, 2, 3, 5, 6, 7, 15)) << 4) | 5
        elif which == 1:  # IHL, with or without real options
            ihl = rng.choice((0, 1, 4, 6, 7, 15))
            if ihl > 5 and rng.random() < 0.5:
                opts = b"\x01" * (4 * (ihl - 5))
                f = bytearray(f[:34] + opts + f[34:])
                struct.pack_into("!H", f, 16, len(f) - 14)
            f[14] = 0x40 | ihl
        elif which == 2:
            struct.pack_into("!H", f, 20, rng.choice((0x2000, 0x2000 | rng.randrange(1, 0x2000),
                                                      rng.randrange(1, 0x2000), 0x6000, 0x8000)))
        elif which == 3:
            f[23] = rng.choice((6, 1, 0, 255, 136))
        elif which == 4:
            f[12:14] = rng.choice((b"\x86\xdd", b"\x81\x00", b"\x08\x06", b"\x00\x00"))
        else:  # tos/id/ttl/checksum/DF: fields nobody authenticates
            f[rng.choice((15, 18, 19, 22, 24, 25))] ^= 1 << rng.randrange(8)
            if rng.random() < 0.5:
                f[20] ^= 0x40
    elif kind == "spoof":
        which = rng.randrange(3)
        if which == 0:  # right 5-tuple, a stranger's keys
            srtp = world.attacker.protect(g.plain)
        elif which == 1:  # right 5-tuple, another leg's keys
            other = world.legs[rng.choice([x for x in world.legs if x != s.leg_id])]
            srtp = other.peer.sender.protect(g.plain)
        else:  # right keys, random tag
            srtp = g.srtp[:-10] + rng.randbytes(10)
        f = bytearray(frame(world.remote(s.leg_id), world.local(s.leg_id), srtp))
    elif kind == "stranger":
        ip = bytes([10, 77, 0, rng.randrange(100, 250)])
        if rng.random() < 0.3:
            ip = world.legs[s.leg_id].addr[0]
            port = rng.randrange(1 << 16)
        else:
            port = struct.unpack("!H", world.legs[s.leg_id].addr[1])[0]
        f = bytearray(frame((ip, port), world.local(s.leg_id), g.srtp))
    return bytes(f), g


CLASSES = {"valid": 20, "bitflip": 18, "truncate": 8, "iplen": 6, "udplen": 4, "ports": 5,
           "iphdr": 8, "spoof": 8, "replay": 5, "random": 8, "stranger": 5, "undeliverable": 5}


def _counters(dp: KernelDataPlane) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for c, v in dp.read_counters().items():
        out[c.name] = v
    for name, v in dp.read_kernel_counters().items():
        out["K_" + name] = v
    return out


def _prime(world: World, xdp: FastRunner, tc: FastRunner) -> None:
    """The first packet of each stream is dropped while its keystream is computed."""
    for leg in world.legs.values():
        if not leg.live:
            continue
        for s in leg.streams.values():
            before = _counters(world.dp)
            g = world.genuine(s)
            verdict, _ = tc.run(world.frame_of(g))
            after = _counters(world.dp)
            assert verdict == TC_ACT_SHOT
            assert after["DROP_NOT_READY"] - before["DROP_NOT_READY"] == 1
            assert after["K_TC_RX_KEYSTREAM_MISS"] - before["K_TC_RX_KEYSTREAM_MISS"] == 1
            world.replay[(s.leg_id, s.ssrc)] = ReplayState(g.index)
            s.next_index += 1
            world.maintain()


def _check_copy(world: World, out: bytes, g: Genuine) -> None:
    """A forwarded packet's copy (the last slot's, left in the test run's output)."""
    assert out[12:14] == b"\x08\x00" and out[26:30] == world.sft, out[:42].hex()
    dst = (out[30:34], out[36:38])
    sub = next(x for x in world.legs.values() if x.addr == dst)
    tot = struct.unpack_from("!H", out, 16)[0]
    plain = sub.peer.receiver.unprotect(out[42:14 + tot])
    cc = g.plain[0] & 0x0F
    assert plain[0] & 0x0F == 1 and plain[12:16] == struct.pack("!I", 0x12340000 + g.leg_id)
    assert plain[16:] == g.plain[12 + 4 * cc:]


def fuzz(dp: KernelDataPlane, packets: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    world = World(dp, rng)
    xdp, tc = FastRunner(dp.xdp_program), FastRunner(dp.tc_program)
    _prime(world, xdp, tc)
    classes, weights = list(CLASSES), list(CLASSES.values())
    outcomes: collections.Counter[str] = collections.Counter()
    thrown: collections.Counter[str] = collections.Counter()
    forwarded_by_class: collections.Counter[str] = collections.Counter()
    since_maintain = 0
    done = 0
    conf_total = 0
    start_counters = _counters(dp)
    while done < packets:
        n = min(BATCH, packets - done)
        before = _counters(dp)
        expect: collections.Counter[str] = collections.Counter()
        xdp_not_ours = tc_not_ours = tc_forwarded = tc_refused = 0
        for kind in rng.choices(classes, weights, k=n):
            f, origin = _mutate(world, kind)
            thrown[kind] += 1
            # XDP
            verdict, out = xdp.run(f)
            want_v, want_k = xdp_model(f, world.by_addr)
            assert verdict == want_v, (kind, f.hex())
            assert out == f, (kind, f.hex())
            if want_k is None:
                xdp_not_ours += 1
                outcomes["XDP:not_ours"] += 1
            else:
                expect["K_" + want_k] += 1
                outcomes["XDP:" + want_k] += 1
                if want_k == "XDP_DROP_UNKNOWN":
                    expect["DROP_UNKNOWN_LEG"] += 1
            # TC
            try:
                verdict, out = tc.run(f)
            except BpfError as exc:
                # the kernel's test run itself refuses frames shorter than their L3 header
                assert exc.errno == errno.EINVAL and (
                    (f[12:14] == b"\x08\x00" and len(f) < 34) or
                    (f[12:14] == b"\x86\xdd" and len(f) < 54)), (kind, f.hex())
                outcomes["TC:refused_by_test_run"] += 1
                tc_refused += 1
                continue
            want = world.tc_model(f, origin)
            assert verdict == want.verdict, (kind, want, f.hex())
            changed = out != f
            if want.forwarded:
                assert changed, (kind, f.hex())
                try:
                    _check_copy(world, out, origin)
                except Exception as exc:
                    raise AssertionError((kind, f.hex(), out.hex())) from exc
                tc_forwarded += 1
                expect["TX_PACKETS"] += want.forwarded
                expect["TX_BYTES"] += want.forwarded * world.out_rtp_len
                conf_total += want.forwarded
                world.accepted.append((f, origin))
                outcomes["TC:forwarded"] += 1
                forwarded_by_class[kind] += 1
            elif not want.authentic:
                # never forwarded, never touched: the packet left behind is the packet
                assert not changed, (kind, want, f.hex())
            if want.authentic:
                s = world.legs[origin.leg_id].streams.get(origin.ssrc) or \
                    world.legs[origin.leg_id].undeclared
                s.next_index = max(s.next_index, origin.index + 1)
                since_maintain += 1
            if want.counter:
                expect[want.counter] += 1
                outcomes["TC:" + want.counter + (f"/{want.kcounter}" if want.kcounter else "")] += 1
            if want.kcounter:
                expect["K_" + want.kcounter] += 1
            for k in want.extra_k:
                expect["K_" + k] += 1
            if want.pass_control:
                expect["K_TC_PASS_CONTROL"] += 1
                outcomes["TC:pass_control"] += 1
            elif want.verdict == TC_ACT_OK:
                tc_not_ours += 1
                outcomes["TC:not_ours"] += 1
            if want.rx:
                expect["RX_PACKETS"] += 1
                expect["RX_BYTES"] += want.rx_bytes
            if since_maintain >= 6:  # keystream rings stay ahead (stream 19, slot 25)
                world.maintain()
                since_maintain = 0
        after = _counters(dp)
        delta = collections.Counter({k: after[k] - before[k] for k in after})
        expect_full = collections.Counter({k: expect.get(k, 0) for k in after})
        assert delta == expect_full, {k: (delta[k], expect_full[k]) for k in after
                                      if delta[k] != expect_full[k]}
        # the accounting identities, on the measured deltas
        xdp_sum = sum(delta[k] for k in delta if k.startswith("K_XDP_"))
        assert xdp_sum == n - xdp_not_ours
        drops = sum(delta[c.name] for c in DROPS) - delta["K_XDP_DROP_UNKNOWN"]
        assert drops + delta["K_TC_PASS_CONTROL"] + tc_forwarded + tc_not_ours == n - tc_refused
        assert delta["RX_PACKETS"] == (
            tc_forwarded + delta["DROP_AUTH"] + delta["DROP_REPLAY"] + delta["DROP_PADDING"]
            + delta["DROP_NO_ROUTE"] + delta["DROP_MALFORMED"] - delta["K_TC_BAD_VERSION"]
            + delta["DROP_UNKNOWN_SSRC"] + delta["DROP_NOT_READY"] + delta["DROP_LEG_REPLACED"]
            + delta["DROP_ADJUST_FAILED"])
        done += n
    total = _counters(dp) - start_counters
    assert sum(dp.read_conference_packets().values()) == conf_total
    print(f"\nfuzz: {done} packets (seed {seed}) through sft_xdp_ingress and sft_tc_ingress; "
          f"thrown {dict(sorted(thrown.items()))}; forwarded by class "
          f"{dict(sorted(forwarded_by_class.items()))}; outcomes "
          f"{dict(sorted(outcomes.items()))}; TX_PACKETS {total['TX_PACKETS']}")
    return dict(outcomes)


def test_fuzz_both_programs(dp: KernelDataPlane, netns: Namespace) -> None:
    t0 = time.monotonic()
    outcomes = fuzz(dp, PACKETS, SEED)
    assert sum(v for k, v in outcomes.items() if k.startswith("XDP:")) == PACKETS
    assert sum(v for k, v in outcomes.items() if k.startswith("TC:")) == PACKETS
    if PACKETS >= 10000:
        assert outcomes["TC:forwarded"] > PACKETS // 10
    print(f"fuzz: {time.monotonic() - t0:.1f} s")


def test_rx_bytes_not_inflated_by_ip_total_length_below_28(dp: KernelDataPlane,
                                                          netns: Namespace) -> None:
    world = World(dp, random.Random(1))
    g = world.genuine(world.legs[world.A].streams[0xA0A0A0A0])
    f = bytearray(world.frame_of(g))
    struct.pack_into("!H", f, 16, 20)  # IPv4 total length: just the IP header
    xdp, tc = FastRunner(dp.xdp_program), FastRunner(dp.tc_program)
    assert xdp.run(bytes(f))[0] == 2  # XDP_PASS (XDP_PASS_RTP)
    before = dp.read_counters()
    assert tc.run(bytes(f))[0] == TC_ACT_SHOT  # dropped as truncated: correct
    after = dp.read_counters()
    assert after[Counter.DROP_MALFORMED] == before[Counter.DROP_MALFORMED] + 1
    assert after[Counter.RX_BYTES] - before[Counter.RX_BYTES] <= len(f)
