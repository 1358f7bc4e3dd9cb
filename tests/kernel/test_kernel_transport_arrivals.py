"""The kernel plane records transport-wide arrivals (sft_twcc_rings) for the
feedback loop: authentic packets only, padding probes included, per leg, with
a counted drop when a leg's ring is full. Packets go through the real TC
program (BPF_PROG_TEST_RUN); the maps are filled by KernelDataPlane."""

from __future__ import annotations

import os
import struct
import time

from harness import make_peer, one_byte_ext, rtp

from sftd.controller.dataplane import ExtensionIds, Layer

PUB_PORT = 40100
AUDIO_SSRC, VIDEO_SSRC = 0x0A0A0A01, 0x0B0B0B01
TWCC = ExtensionIds().transport_cc


def _twcc(seq: int, *more: tuple[int, bytes]) -> tuple[int, bytes]:
    return one_byte_ext((TWCC, struct.pack("!H", seq & 0xFFFF)), *more)


def _publisher(dp, index: int = 0, extensions: ExtensionIds = ExtensionIds()):  # noqa: ANN001
    peer = make_peer(index, PUB_PORT + index, extensions=extensions)
    dp.add_leg(peer.spec)
    dp.set_publisher(peer.leg_id, (AUDIO_SSRC,), {VIDEO_SSRC: Layer.HIGH})
    return peer


def _send(dp, peer, plain: bytes) -> None:  # noqa: ANN001
    dp.tc_program.test_run(peer.frame(peer.sender.protect(plain)))


def test_authentic_packets_are_recorded_in_order_with_their_arrival(dp):
    pub = _publisher(dp)
    before = time.monotonic_ns()
    # a wrap of the transport sequence, both streams, a padding-only probe
    for i, seq in enumerate((65534, 65535, 0, 1)):
        ssrc = AUDIO_SSRC if i % 2 else VIDEO_SSRC
        _send(dp, pub, rtp(100 + i, 3000 * i, ssrc, os.urandom(60), ext=_twcc(seq)))
    _send(dp, pub, rtp(104, 9000, VIDEO_SSRC, b"", ext=_twcc(2), padding=200))
    after = time.monotonic_ns()
    (records,) = dp.read_transport_arrivals().values()
    assert [seq for seq, _ in records] == [65534, 65535, 0, 1, 2]
    times = [t for _, t in records]
    assert times == sorted(times)
    assert before - 1000 <= times[0] and times[-1] <= after + 1000  # µs-truncated clock
    assert dp.read_transport_arrivals() == {}  # read once


def test_forged_replayed_and_unmarked_packets_are_not_recorded(dp):
    pub = _publisher(dp)
    genuine = pub.sender.protect(rtp(200, 0, VIDEO_SSRC, os.urandom(80), ext=_twcc(7)))
    dp.tc_program.test_run(pub.frame(genuine))
    dp.tc_program.test_run(pub.frame(genuine))  # replay
    forged = bytearray(pub.sender.protect(rtp(201, 0, VIDEO_SSRC, os.urandom(80),
                                              ext=_twcc(8))))
    forged[-1] ^= 1
    dp.tc_program.test_run(pub.frame(bytes(forged)))
    _send(dp, pub, rtp(202, 0, VIDEO_SSRC, os.urandom(80)))  # no extension
    _send(dp, pub, rtp(203, 0, VIDEO_SSRC, os.urandom(80),
                       ext=one_byte_ext((TWCC, b"\x00"))))  # one byte: not a sequence number
    _send(dp, pub, rtp(204, 0, VIDEO_SSRC, os.urandom(80), ext=_twcc(9)))
    assert [seq for seq, _ in dp.read_transport_arrivals()[pub.leg_id]] == [7, 9]


def test_legs_are_kept_apart_and_the_negotiated_id_is_used(dp):
    first = _publisher(dp, 0)
    other_id = ExtensionIds(transport_cc=9)
    second = _publisher(dp, 1, extensions=other_id)
    _send(dp, first, rtp(1, 0, VIDEO_SSRC, os.urandom(50), ext=_twcc(11)))
    _send(dp, second, rtp(1, 0, VIDEO_SSRC, os.urandom(50), ext=_twcc(12)))  # id 3: ignored
    _send(dp, second, rtp(2, 0, VIDEO_SSRC, os.urandom(50),
                          ext=one_byte_ext((9, struct.pack("!H", 13)))))
    got = {leg: [s for s, _ in records] for leg, records in dp.read_transport_arrivals().items()}
    assert got == {first.leg_id: [11], second.leg_id: [13]}


def test_a_full_ring_drops_and_counts_then_recovers(dp):
    pub = _publisher(dp)
    size = dp.abi.consts.SFT_TWCC_RECORDS
    for i in range(size + 5):
        _send(dp, pub, rtp(1000 + i, 0, AUDIO_SSRC, os.urandom(30), ext=_twcc(i)))
    assert dp.read_detail_counters()["TWCC_RECORDS_DROPPED"] == 5
    assert [s for s, _ in dp.read_transport_arrivals()[pub.leg_id]] == list(range(size))
    _send(dp, pub, rtp(2000, 0, AUDIO_SSRC, os.urandom(30), ext=_twcc(size + 10)))
    assert [s for s, _ in dp.read_transport_arrivals()[pub.leg_id]] == [size + 10]


def test_a_reused_ring_starts_empty(dp):
    gone = _publisher(dp, 0)
    for i in range(3):
        _send(dp, gone, rtp(i, 0, AUDIO_SSRC, os.urandom(30), ext=_twcc(i)))
    dp.remove_leg(gone.leg_id)
    assert dp.read_transport_arrivals() == {}
    dp._free_twcc_rings.rotate(1)  # the freed ring comes back next (normally: last)
    fresh = _publisher(dp, 1)
    _send(dp, fresh, rtp(5, 0, AUDIO_SSRC, os.urandom(30), ext=_twcc(500)))
    assert [s for s, _ in dp.read_transport_arrivals()[fresh.leg_id]] == [500]
