"""SRTP verify → decrypt → rewrite → protect → clone, through BPF_PROG_TEST_RUN.

Every copy a subscriber receives must be byte-identical to what libsrtp
(pylibsrtp) produces for that subscriber's keys and slot state."""

from __future__ import annotations

import os
import random
import time

import pytest
from harness import Namespace, drain, make_peer, one_byte_ext, rtp, two_byte_ext
from model import SlotModel

from sftd.bpf.dataplane import KernelDataPlane
from sftd.controller.dataplane import (
    LAYER_PAUSED_AFTER,
    Counter,
    ExtensionIds,
    Layer,
    SlotSource,
    StreamKind,
)

TC_ACT_OK, TC_ACT_SHOT = 0, 2
PUB_PORT = 40000
AUDIO_SSRC, VIDEO_SSRC, VIDEO_LOW_SSRC = 0x0A0A0A0A, 0x0B0B0B0B, 0x0C0C0C0C
FD_KEYFRAME, FD_DELTA = 0x80, 0x88  # generic frame descriptor: begin of frame, dependencies


class Conference:
    """One publisher and n subscribers, all through the real KernelDataPlane verbs."""

    def __init__(self, dp: KernelDataPlane, ns: Namespace, n_subscribers: int,
                 kind: StreamKind, first_slot_index: int) -> None:
        self.dp = dp
        self.ns = ns
        self.kind = kind
        self.pub = make_peer(0, PUB_PORT)
        self.subs = [make_peer(i + 1, PUB_PORT + 1 + i) for i in range(n_subscribers)]
        for peer in [self.pub, *self.subs]:
            dp.add_leg(peer.spec)
        dp.set_publisher(self.pub.leg_id, (AUDIO_SSRC,),
                         {VIDEO_SSRC: Layer.HIGH, VIDEO_LOW_SSRC: Layer.LOW})
        self.models: dict[tuple[str, int], SlotModel] = {}
        csrc = AUDIO_SSRC if kind == StreamKind.AUDIO else 0x76543210
        for sub in self.subs:
            dp.set_slot(sub.leg_id, kind, 1, SlotSource(self.pub.leg_id, csrc=csrc))
            ssrcs = (sub.spec.audio_slot_ssrcs if kind == StreamKind.AUDIO
                     else sub.spec.video_slot_ssrcs)
            self.models[sub.spec.remote_addr] = SlotModel(sub, ssrcs[1], csrc, first_slot_index,
                                                          int(kind))
        self.capture = ns.capture()

    def send(self, plain: bytes, srtp: bytes | None = None) -> int:
        srtp = srtp if srtp is not None else self.pub.sender.protect(plain)
        verdict = self.dp.tc_program.test_run(self.pub.frame(srtp)).retval
        self.dp.maintain()
        return verdict

    def check_forwarded(self, plain: bytes) -> None:
        frames = drain(self.capture, len(self.subs))
        assert len(frames) == len(self.subs)
        for frame in frames:
            model = self.models[frame.dst]
            assert frame.src == model.subscriber.spec.local_addr
            assert frame.dst_mac == self.ns.cap_mac and frame.src_mac == self.ns.sft_mac
            assert frame.ip_csum_ok and frame.udp_csum_ok
            assert frame.payload == model.expect(plain)
            # and the subscriber can read it
            assert model.subscriber.receiver.unprotect(frame.payload)

    def nothing_forwarded(self) -> None:
        assert drain(self.capture, 0, timeout=0.1) == []


def _prime(conf: Conference, ssrc: int, seq: int, ts: int, ext=None) -> None:
    """The first packet of a stream tells the keystream refill where the stream is."""
    before = conf.dp.read_counters()[Counter.DROP_NOT_READY]
    plain = rtp(seq, ts, ssrc, os.urandom(40), ext=ext)
    assert conf.send(plain) == TC_ACT_SHOT
    assert conf.dp.read_counters()[Counter.DROP_NOT_READY] == before + 1
    conf.nothing_forwarded()


@pytest.mark.parametrize("seed", range(4))
def test_video_copies_are_byte_identical_to_libsrtp(dp: KernelDataPlane, netns: Namespace,
                                                    initial_index, seed: int) -> None:
    rng = random.Random(seed)
    initial_index.value = 65536 - 5 + seed  # slot sequence numbers wrap: ROC 0 -> 1
    conf = Conference(dp, netns, 3, StreamKind.VIDEO, initial_index.value)
    ids = ExtensionIds()
    seq = 65530 - seed  # ... and so do the publisher's
    ts = rng.randrange(1 << 32)
    _prime(conf, VIDEO_SSRC, seq, ts, ext=one_byte_ext((ids.rid, b"h")))
    for n in range(1, 12):
        seq += 1
        ts += 3000
        fd = FD_KEYFRAME if n == 1 else rng.choice([FD_DELTA, 0x40])
        variant = rng.randrange(4)
        if variant == 0:
            ext = one_byte_ext((ids.frame_descriptor, bytes([fd, 0, 1, 2])), (ids.rid, b"h"))
        elif variant == 1:
            ext = two_byte_ext((ids.rid, b"h"), (ids.frame_descriptor, bytes([fd, 0, 1, 2])))
        elif variant == 2:
            ext = one_byte_ext((2, b"\x01\x02\x03"), (ids.frame_descriptor, bytes([fd, 0, 9, 9])))
        else:
            ext = one_byte_ext((ids.frame_descriptor, bytes([fd, 0, 1, 2])))
        csrcs = tuple(rng.randrange(1 << 32) for _ in range(rng.choice([0, 0, 1, 2])))
        padding = rng.choice([0, 0, 0, rng.randrange(1, 20)])
        header = 12 + 4 * len(csrcs) + 4 + len(ext[1]) + (-len(ext[1]) % 4)
        # the copy (CC = 1) must fit SFT_MAX_RTP = 1472 with its tag
        ext_len = header - 12 - 4 * len(csrcs)
        size = min(rng.randrange(20, 1401), 1472 - 10 - 16 - ext_len - padding)
        plain = rtp(seq, ts, VIDEO_SSRC, os.urandom(size), pt=100, marker=rng.random() < 0.3,
                    csrcs=csrcs, ext=ext, padding=padding)
        assert conf.send(plain) == TC_ACT_SHOT, f"packet {n}"
        conf.check_forwarded(plain)
    counters = dp.read_counters()
    assert counters[Counter.TX_PACKETS] == 11 * 3
    assert counters[Counter.RX_PACKETS] == 12
    assert dp.read_conference_packets() == {7: 33}


@pytest.mark.parametrize("seed", range(3))
def test_audio_copies_are_byte_identical_to_libsrtp(dp: KernelDataPlane, netns: Namespace,
                                                    initial_index, seed: int) -> None:
    rng = random.Random(100 + seed)
    initial_index.value = rng.randrange(1 << 16)
    conf = Conference(dp, netns, 4, StreamKind.AUDIO, initial_index.value)
    seq, ts = rng.randrange(1 << 16), rng.randrange(1 << 32)
    _prime(conf, AUDIO_SSRC, seq, ts)
    for _ in range(10):
        seq += 1
        ts += 960
        ext = one_byte_ext((1, bytes([0x80 | rng.randrange(128)]))) if rng.random() < 0.7 else None
        plain = rtp(seq, ts, AUDIO_SSRC, os.urandom(rng.randrange(20, 480)), ext=ext)
        assert conf.send(plain) == TC_ACT_SHOT
        conf.check_forwarded(plain)


def test_audio_level_is_smoothed_per_publisher(dp: KernelDataPlane, netns: Namespace,
                                               initial_index) -> None:
    conf = Conference(dp, netns, 1, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 10, 0)
    level = 127.0
    for n, value in enumerate([30, 30, 90, 10], start=11):
        plain = rtp(n, n * 960, AUDIO_SSRC, os.urandom(50),
                    ext=one_byte_ext((1, bytes([0x80 | value]))))
        conf.send(plain)
        level = (level + value) / 2
    assert dp.read_audio_levels()[conf.pub.leg_id] == pytest.approx(level, abs=1 / 128)


def test_tampered_tag_is_dropped_and_counted(dp: KernelDataPlane, netns: Namespace,
                                             initial_index) -> None:
    conf = Conference(dp, netns, 2, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 500, 0)
    plain = rtp(501, 960, AUDIO_SSRC, os.urandom(100))
    srtp = bytearray(conf.pub.sender.protect(plain))
    srtp[-1] ^= 1
    assert conf.send(plain, bytes(srtp)) == TC_ACT_SHOT
    srtp = bytearray(conf.pub.sender.protect(rtp(502, 1920, AUDIO_SSRC, os.urandom(100))))
    srtp[20] ^= 0x40  # payload bit flip
    assert conf.send(plain, bytes(srtp)) == TC_ACT_SHOT
    assert dp.read_counters()[Counter.DROP_AUTH] == 2
    conf.nothing_forwarded()


def test_replayed_packet_is_dropped_and_counted(dp: KernelDataPlane, netns: Namespace,
                                                initial_index) -> None:
    conf = Conference(dp, netns, 2, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 700, 0)
    plain = rtp(701, 960, AUDIO_SSRC, os.urandom(100))
    srtp = conf.pub.sender.protect(plain)
    assert conf.send(plain, srtp) == TC_ACT_SHOT
    conf.check_forwarded(plain)
    assert conf.send(plain, srtp) == TC_ACT_SHOT
    # older than the 64-packet window
    old = rtp(620, 0, AUDIO_SSRC, os.urandom(100))
    assert conf.send(old) == TC_ACT_SHOT
    assert dp.read_counters()[Counter.DROP_REPLAY] == 2
    conf.nothing_forwarded()
    # a late packet inside the window is still fine, once
    ahead = rtp(703, 2880, AUDIO_SSRC, os.urandom(60))
    late = conf.pub.sender.protect(rtp(702, 1920, AUDIO_SSRC, os.urandom(60)))
    conf.send(ahead)
    conf.check_forwarded(ahead)
    assert conf.send(b"", late) == TC_ACT_SHOT
    assert len(drain(conf.capture, 2)) == 2
    assert conf.send(b"", late) == TC_ACT_SHOT
    assert dp.read_counters()[Counter.DROP_REPLAY] == 3


def test_padding_only_packet_is_dropped(dp: KernelDataPlane, netns: Namespace,
                                        initial_index) -> None:
    conf = Conference(dp, netns, 1, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 1, 0)
    assert conf.send(rtp(2, 960, AUDIO_SSRC, b"", padding=40)) == TC_ACT_SHOT
    assert dp.read_counters()[Counter.DROP_PADDING] == 1
    conf.nothing_forwarded()


def _malformed_cases(conf: Conference) -> list[tuple[str, bytes, int, Counter | None]]:
    good = conf.pub.sender.protect(rtp(3, 0, AUDIO_SSRC, os.urandom(100)))
    return [
        ("truncated", good[:21], TC_ACT_SHOT, Counter.DROP_MALFORMED),
        ("wrong version", bytes([0x40]) + good[1:], TC_ACT_SHOT, Counter.DROP_MALFORMED),
        ("too many CSRCs", bytes([0x8F]) + good[1:40], TC_ACT_SHOT, Counter.DROP_MALFORMED),
        ("extension past end", bytes([0x90]) + good[1:12] + b"\xbe\xde\x00\x40" + good[16:40],
         TC_ACT_SHOT, Counter.DROP_MALFORMED),
        ("oversize", bytes([0x80]) + good[1:12] + os.urandom(1480), TC_ACT_SHOT,
         Counter.DROP_MALFORMED),
        ("junk byte", b"\xff" * 60, TC_ACT_SHOT, Counter.DROP_MALFORMED),
        ("STUN", b"\x00\x01" + os.urandom(30), TC_ACT_OK, None),
        ("DTLS", b"\x17\xfe\xfd" + os.urandom(30), TC_ACT_OK, None),
        ("RTCP", b"\x81\xc8" + os.urandom(40), TC_ACT_OK, None),
    ]


def test_malformed_and_control_packets_are_never_forwarded(dp: KernelDataPlane, netns: Namespace,
                                                           initial_index) -> None:
    conf = Conference(dp, netns, 2, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 1, 0)
    for name, payload, verdict, counter in _malformed_cases(conf):
        before = dp.read_counters()
        assert conf.send(b"", payload) == verdict, name
        after = dp.read_counters()
        if counter is not None:
            assert after[counter] == before[counter] + 1, name
        assert after[Counter.TX_PACKETS] == before[Counter.TX_PACKETS], name
    conf.nothing_forwarded()


def test_unknown_address_is_dropped(dp: KernelDataPlane, netns: Namespace, initial_index) -> None:
    conf = Conference(dp, netns, 1, StreamKind.AUDIO, initial_index.value)
    stranger = make_peer(9, PUB_PORT, remote_ip="10.77.0.99")
    srtp = conf.pub.sender.protect(rtp(1, 0, AUDIO_SSRC, os.urandom(80)))
    assert dp.tc_program.test_run(stranger.frame(srtp)).retval == TC_ACT_SHOT
    assert dp.read_counters()[Counter.DROP_UNKNOWN_LEG] == 1
    # not our port range at all: untouched
    other = make_peer(9, 39999)
    assert dp.tc_program.test_run(other.frame(srtp)).retval == TC_ACT_OK
    conf.nothing_forwarded()


def test_video_switches_layer_only_on_keyframe(dp: KernelDataPlane, netns: Namespace,
                                               initial_index) -> None:
    conf = Conference(dp, netns, 1, StreamKind.VIDEO, initial_index.value)
    ids = ExtensionIds()

    def video(ssrc: int, seq: int, fd: int, rid: bytes) -> bytes:
        return rtp(seq, seq * 3000, ssrc, os.urandom(300), pt=100,
                   ext=one_byte_ext((ids.rid, rid), (ids.frame_descriptor, bytes([fd, 0, 0, 0]))))

    _prime(conf, VIDEO_LOW_SSRC, 100, 0, ext=one_byte_ext((ids.rid, b"l")))
    # the slot prefers HIGH, but only LOW exists: forwarded from its first keyframe
    delta = video(VIDEO_LOW_SSRC, 101, FD_DELTA, b"l")
    assert conf.send(delta) == TC_ACT_SHOT
    conf.nothing_forwarded()
    key = video(VIDEO_LOW_SSRC, 102, FD_KEYFRAME, b"l")
    conf.send(key)
    conf.check_forwarded(key)
    # HIGH appears: LOW keeps flowing until HIGH has a keyframe
    _prime(conf, VIDEO_SSRC, 500, 0, ext=one_byte_ext((ids.rid, b"h")))
    for _seq, packet in ((501, video(VIDEO_SSRC, 501, FD_DELTA, b"h")),):
        conf.send(packet)
        conf.nothing_forwarded()
    low = video(VIDEO_LOW_SSRC, 103, FD_DELTA, b"l")
    conf.send(low)
    conf.check_forwarded(low)
    high_key = video(VIDEO_SSRC, 502, FD_KEYFRAME, b"h")
    conf.send(high_key)
    conf.check_forwarded(high_key)
    low = video(VIDEO_LOW_SSRC, 104, FD_DELTA, b"l")
    conf.send(low)
    conf.nothing_forwarded()
    assert dp.read_kernel_counters()["TC_WAIT_KEYFRAME"] >= 1


def test_paused_preferred_layer_gives_way_to_the_flowing_one(
        dp: KernelDataPlane, netns: Namespace, initial_index) -> None:
    """A sender pauses its high layer when its estimate drops: the slot moves to
    the low layer at its next keyframe and back to high at high's keyframe."""
    conf = Conference(dp, netns, 1, StreamKind.VIDEO, initial_index.value)
    ids = ExtensionIds()

    def video(ssrc: int, seq: int, fd: int) -> bytes:
        rid = b"h" if ssrc == VIDEO_SSRC else b"l"
        return rtp(seq, seq * 3000, ssrc, os.urandom(300), pt=100,
                   ext=one_byte_ext((ids.rid, rid), (ids.frame_descriptor, bytes([fd, 0, 0, 0]))))

    _prime(conf, VIDEO_SSRC, 500, 0)
    _prime(conf, VIDEO_LOW_SSRC, 100, 0)
    high_key = video(VIDEO_SSRC, 501, FD_KEYFRAME)
    conf.send(high_key)
    conf.check_forwarded(high_key)
    time.sleep(LAYER_PAUSED_AFTER + 0.1)  # high pauses, low goes on
    assert conf.send(video(VIDEO_LOW_SSRC, 101, FD_DELTA)) == TC_ACT_SHOT
    conf.nothing_forwarded()  # waits for low's keyframe
    for packet in (video(VIDEO_LOW_SSRC, 102, FD_KEYFRAME), video(VIDEO_LOW_SSRC, 103, FD_DELTA)):
        conf.send(packet)
        conf.check_forwarded(packet)
    high_key = video(VIDEO_SSRC, 502, FD_KEYFRAME)  # high resumes: back to high
    conf.send(high_key)
    conf.check_forwarded(high_key)
    conf.send(video(VIDEO_LOW_SSRC, 104, FD_DELTA))
    conf.nothing_forwarded()


def test_cleared_slot_stops_forwarding(dp: KernelDataPlane, netns: Namespace,
                                       initial_index) -> None:
    conf = Conference(dp, netns, 2, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 1, 0)
    for sub in conf.subs:
        dp.set_slot(sub.leg_id, StreamKind.AUDIO, 1, None)
    assert conf.send(rtp(2, 960, AUDIO_SSRC, os.urandom(50))) == TC_ACT_SHOT
    assert dp.read_counters()[Counter.DROP_NO_ROUTE] == 1
    conf.nothing_forwarded()


def test_removed_subscriber_gets_nothing(dp: KernelDataPlane, netns: Namespace,
                                         initial_index) -> None:
    conf = Conference(dp, netns, 2, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 1, 0)
    gone = conf.subs.pop()
    dp.remove_leg(gone.leg_id)
    plain = rtp(2, 960, AUDIO_SSRC, os.urandom(50))
    conf.send(plain)
    conf.check_forwarded(plain)


def test_expired_lease_stops_the_leg(dp: KernelDataPlane, netns: Namespace,
                                     initial_index) -> None:
    conf = Conference(dp, netns, 1, StreamKind.AUDIO, initial_index.value)
    _prime(conf, AUDIO_SSRC, 1, 0)
    dp.set_lease(conf.pub.leg_id, time.monotonic_ns() - 31 * 10**9)
    before = dp.read_counters()
    assert dp.tc_program.test_run(conf.pub.frame(conf.pub.sender.protect(
        rtp(2, 960, AUDIO_SSRC, os.urandom(50))))).retval == TC_ACT_SHOT
    assert dp.read_kernel_counters()["TC_LEASE_EXPIRED"] == 1
    after = dp.read_counters()  # its own reason, not "not ready"
    assert after[Counter.DROP_LEASE_EXPIRED] == before[Counter.DROP_LEASE_EXPIRED] + 1
    assert after[Counter.DROP_NOT_READY] == before[Counter.DROP_NOT_READY]
    conf.nothing_forwarded()


def test_video_ssrc_learned_from_rid(dp: KernelDataPlane, netns: Namespace, initial_index) -> None:
    conf = Conference(dp, netns, 2, StreamKind.VIDEO, initial_index.value)
    dp.set_publisher(conf.pub.leg_id, (AUDIO_SSRC,), {})  # no video declared
    ids = ExtensionIds()
    learned = 0x0D0D0D0D
    _prime(conf, learned, 40, 0, ext=one_byte_ext((ids.rid, b"h")))
    key = rtp(41, 3000, learned, os.urandom(200), pt=100,
              ext=one_byte_ext((ids.rid, b"h"), (ids.frame_descriptor, b"\x80\0\0\0")))
    assert conf.send(key) == TC_ACT_SHOT
    conf.check_forwarded(key)


def test_vp8_keyframe_without_frame_descriptor(dp: KernelDataPlane, netns: Namespace,
                                               initial_index) -> None:
    conf = Conference(dp, netns, 1, StreamKind.VIDEO, initial_index.value)
    rid = one_byte_ext((ExtensionIds().rid, b"h"))
    _prime(conf, VIDEO_SSRC, 7, 0, ext=rid)
    # X=1, S=1, PID=0; I=1 with a 15-bit picture id; VP8 header P bit 1 = delta frame
    delta = rtp(8, 3000, VIDEO_SSRC, b"\x90\x80\x81\x02\x01" + os.urandom(100), pt=100, ext=rid)
    assert conf.send(delta) == TC_ACT_SHOT
    conf.nothing_forwarded()
    key = rtp(9, 6000, VIDEO_SSRC, b"\x90\x80\x81\x03\x00" + os.urandom(100), pt=100, ext=rid)
    assert conf.send(key) == TC_ACT_SHOT
    conf.check_forwarded(key)


def test_receive_stats_count_loss_and_jitter(dp: KernelDataPlane, netns: Namespace,
                                             initial_index) -> None:
    """What receiver reports are made of: authentic packets, first and highest
    extended sequence numbers, interarrival jitter (RFC 3550)."""
    conf = Conference(dp, netns, 1, StreamKind.AUDIO, initial_index.value)
    assert dp.read_receive_stats(conf.pub.leg_id, AUDIO_SSRC) is None
    _prime(conf, AUDIO_SSRC, 65534, 0)
    for seq in (65535, 0, 2, 3):  # 1 is lost; the sequence wraps
        conf.send(rtp(seq, ((seq - 65534) & 0xFFFF) * 960, AUDIO_SSRC, os.urandom(60)))
        time.sleep(0.03)  # arrival spacing other than the 20 ms the timestamps say
    stats = dp.read_receive_stats(conf.pub.leg_id, AUDIO_SSRC)
    assert stats is not None
    assert (stats.received, stats.first_seq, stats.highest_seq) == (5, 65534, 65536 + 3)
    assert stats.jitter > 0
    tampered = bytearray(conf.pub.sender.protect(rtp(4, 6 * 960, AUDIO_SSRC, os.urandom(60))))
    tampered[-1] ^= 1
    conf.send(b"", bytes(tampered))
    assert dp.read_receive_stats(conf.pub.leg_id, AUDIO_SSRC).received == 5  # not authentic
