"""Contract of controller.dataplane.DataPlane, run on every data plane (the ``h``
fixture: tests/dataplane/planes.py) over real UDP sockets, with libsrtp at both
ends. Where a plane differs by design, the test says so."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from sftd.controller import rtp
from sftd.controller.dataplane import (
    LAYER_PAUSED_AFTER,
    MAX_SSRCS_PER_LEG,
    Counter,
    Layer,
    SlotSource,
    StreamKind,
)
from tests.dataplane.planes import EXT
from tests.rtpkit import make_rtp, vp8_payload

AUDIO_SSRC = 0x1111
VIDEO_SSRC = 0x2222


def audio(seq: int, level: int = 30, payload: bytes = b"\x01" * 100) -> bytes:
    return make_rtp(AUDIO_SSRC, seq, seq * 960, payload,
                    extensions={EXT.audio_level: bytes([level])})


async def audio_call(h, csrc: int) -> None:  # noqa: ANN001
    """Legs 1 and 2; 1 publishes AUDIO_SSRC (its stream open), in slot 0 of 2 as ``csrc``."""
    await h.leg(1)
    await h.leg(2)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    await h.open_stream(1, audio(0))
    h.plane.set_slot(2, StreamKind.AUDIO, 0, SlotSource(1, csrc=csrc))


async def test_audio_rewritten_onto_slot_with_one_csrc(h):
    pub = await h.leg(1)
    sub = await h.leg(2)
    other = await h.leg(3)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    await h.open_stream(1, audio(99))
    h.plane.set_slot(2, StreamKind.AUDIO, 2, SlotSource(publisher=1, csrc=0xCAFE))
    sent = [audio(100 + i, payload=os.urandom(100)) for i in range(10)]
    for packet in sent:
        h.send(1, packet)
    got = await h.received(2)
    assert len(got) == 10
    seqs = []
    for original, packet in zip(sent, got):
        view = rtp.parse(packet)
        assert view.ssrc == sub.audio_slot_ssrcs[2]
        assert view.csrc_count == 1 and struct.unpack_from("!I", packet, 12)[0] == 0xCAFE
        assert packet[view.ext_offset:] == original[12:]  # extension and payload untouched
        seqs.append(view.seq)
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == list(range(10))
    assert await h.received(3) == [] and await h.received(1) == []
    counters = h.plane.read_counters()
    assert counters[Counter.RX_PACKETS] == 10 + h.primers
    assert counters[Counter.TX_PACKETS] == 10
    assert h.plane.read_conference_packets() == {1: 10}
    del pub, other


async def test_existing_csrcs_are_replaced_by_the_slot_csrc(h):
    await audio_call(h, csrc=7)
    h.send(1, make_rtp(AUDIO_SSRC, 1, 1, b"x" * 20, csrcs=(1, 2, 3)))
    (packet,) = await h.received(2)
    assert packet[0] & 0x0F == 1 and struct.unpack_from("!I", packet, 12)[0] == 7
    assert packet[16:] == b"x" * 20


async def test_no_slot_no_media_and_conferences_stay_apart(h):
    await h.leg(1, conference=1)
    await h.leg(2, conference=2)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    await h.open_stream(1, audio(0))
    for i in range(1, 6):
        h.send(1, audio(i))
    assert await h.received(2) == []
    assert h.plane.read_counters()[Counter.DROP_NO_ROUTE] == 5


async def test_bad_packets_are_counted_never_forwarded(h):
    await audio_call(h, csrc=1)
    good = h.send(1, audio(1))
    h.send(1, good, protect=False)  # replayed
    tampered = bytearray(h.legs[1].peer.protect(audio(2)))
    tampered[-1] ^= 1
    h.send(1, bytes(tampered), protect=False)
    h.send(1, b"\x80\x00", protect=False)  # truncated
    h.send(1, b"\x40" + os.urandom(40), protect=False)  # RTP version 1
    h.send(1, make_rtp(AUDIO_SSRC, 3, 3, b"", padding=8))  # padding only
    h.plane.handle_packet(99, good)  # no such leg
    got = await h.received(2)
    assert len(got) == 1
    c = h.plane.read_counters()
    assert (c[Counter.DROP_REPLAY], c[Counter.DROP_AUTH], c[Counter.DROP_PADDING]) == (1, 1, 1)
    if h.sees_every_packet:
        assert (c[Counter.DROP_MALFORMED], c[Counter.DROP_UNKNOWN_LEG]) == (2, 1)
    elif h.junk_dropped_at_interface:  # by design: XDP dropped the two, counted there
        assert (c[Counter.DROP_MALFORMED], c[Counter.DROP_UNKNOWN_LEG]) == (0, 1)
        detail = h.plane.read_detail_counters()
        assert (detail["STEER_DROP_SHORT"], detail["STEER_DROP_JUNK"]) == (1, 1)
    else:  # by design: the non-RTP went to the leg's socket, the media to handle_packet
        assert (c[Counter.DROP_MALFORMED], c[Counter.DROP_UNKNOWN_LEG]) == (0, 0)
        assert h.plane.read_userspace_media_drops()["leg_not_served_yet"] == 1


async def test_video_starts_on_keyframe_and_switches_source_seamlessly(h):
    await h.leg(1)
    await h.leg(3)
    sub = await h.leg(2)
    h.plane.set_publisher(1, (), {VIDEO_SSRC: Layer.HIGH})
    h.plane.set_publisher(3, (), {VIDEO_SSRC + 1: Layer.HIGH})
    h.plane.set_slot(2, StreamKind.VIDEO, 0, SlotSource(1, csrc=0xA))
    h.send(1, make_rtp(VIDEO_SSRC, 10, 0, vp8_payload(False), pt=100))
    assert await h.received(2) == []
    h.send(1, make_rtp(VIDEO_SSRC, 11, 3000, vp8_payload(True), pt=100))
    h.send(1, make_rtp(VIDEO_SSRC, 12, 3000, vp8_payload(False), pt=100))
    first = await h.received(2)
    assert len(first) == 2
    last_seq = rtp.parse(first[-1]).seq
    h.plane.set_slot(2, StreamKind.VIDEO, 0, SlotSource(3, csrc=0xB))
    h.send(3, make_rtp(VIDEO_SSRC + 1, 500, 90000, vp8_payload(False), pt=100))
    h.send(1, make_rtp(VIDEO_SSRC, 13, 6000, vp8_payload(False), pt=100))  # old source: gone
    assert await h.received(2) == []
    h.send(3, make_rtp(VIDEO_SSRC + 1, 501, 93000, vp8_payload(True), pt=100))
    (switched,) = await h.received(2)
    view = rtp.parse(switched)
    assert view.ssrc == sub.video_slot_ssrcs[0] and view.seq == (last_seq + 1) & 0xFFFF
    assert struct.unpack_from("!I", switched, 12)[0] == 0xB


async def test_a_layer_change_keeps_the_current_layer_until_the_new_ones_keyframe(h):
    """The slot moves to the publisher's other layer at that layer's keyframe; the
    current layer flows until then, so the subscriber's video never stalls."""
    await h.leg(1)
    sub = await h.leg(2)
    high, low = 0x70, 0x71
    h.plane.set_publisher(1, (), {low: Layer.LOW, high: Layer.HIGH})
    for ssrc in (high, low):
        await h.open_stream(1, make_rtp(ssrc, 0, 0, vp8_payload(False), pt=100))
    h.plane.set_slot(2, StreamKind.VIDEO, 0, SlotSource(1, csrc=5, layer=Layer.LOW))
    h.send(1, make_rtp(low, 1, 3000, vp8_payload(True), pt=100))
    h.send(1, make_rtp(high, 1, 3000, vp8_payload(True), pt=100))
    assert len(await h.received(2)) == 1
    h.plane.set_slot(2, StreamKind.VIDEO, 0, SlotSource(1, csrc=5, layer=Layer.HIGH))
    h.send(1, make_rtp(high, 2, 6000, vp8_payload(False), pt=100))
    h.send(1, make_rtp(low, 2, 6000, vp8_payload(False), pt=100))
    (still_low,) = await h.received(2)
    h.send(1, make_rtp(high, 3, 9000, vp8_payload(True), pt=100))
    h.send(1, make_rtp(low, 3, 9000, vp8_payload(False), pt=100))
    (now_high,) = await h.received(2)
    assert rtp.is_keyframe(now_high, rtp.parse(now_high), EXT.frame_descriptor)
    seqs = [rtp.parse(p).seq for p in (still_low, now_high)]
    assert (seqs[1] - seqs[0]) & 0xFFFF == 1  # one sequence across the switch
    assert {rtp.parse(p).ssrc for p in (still_low, now_high)} == {sub.video_slot_ssrcs[0]}


async def test_a_slot_pointed_away_and_back_starts_again_at_a_keyframe(h):
    """Only a layer move keeps the current stream: a slot emptied and pointed at
    the same publisher again waits for a keyframe like any new source."""
    await h.leg(1)
    await h.leg(2)
    video = 0x74
    h.plane.set_publisher(1, (), {video: Layer.HIGH})
    await h.open_stream(1, make_rtp(video, 0, 0, vp8_payload(False), pt=100))
    source = SlotSource(1, csrc=5, layer=Layer.HIGH)
    h.plane.set_slot(2, StreamKind.VIDEO, 0, source)
    h.send(1, make_rtp(video, 1, 3000, vp8_payload(True), pt=100))
    h.send(1, make_rtp(video, 2, 6000, vp8_payload(False), pt=100))
    assert len(await h.received(2)) == 2
    h.plane.set_slot(2, StreamKind.VIDEO, 0, None)
    h.plane.set_slot(2, StreamKind.VIDEO, 0, source)
    h.send(1, make_rtp(video, 3, 9000, vp8_payload(False), pt=100))
    assert await h.received(2) == []
    h.send(1, make_rtp(video, 4, 12000, vp8_payload(True), pt=100))
    (again,) = await h.received(2)
    assert rtp.is_keyframe(again, rtp.parse(again), EXT.frame_descriptor)


async def test_simulcast_layer_learned_from_rid(h):
    await h.leg(1)
    await h.leg(2)
    h.plane.set_publisher(1, (), {})
    for ssrc, rid in ((0x50, b"h"), (0x51, b"l")):
        await h.open_stream(1, make_rtp(ssrc, 0, 0, vp8_payload(False), pt=100,
                                        extensions={EXT.rid: rid}))
    h.plane.set_slot(2, StreamKind.VIDEO, 1, SlotSource(1, csrc=5, layer=Layer.LOW))
    for seq in (1, 2):
        for ssrc, rid in ((0x50, b"h"), (0x51, b"l")):
            h.send(1, make_rtp(ssrc, seq, 0, vp8_payload(True), pt=100,
                               extensions={EXT.rid: rid}))
    got = await h.received(2)
    rids = [rtp.find_extension(p, rtp.parse(p), EXT.rid) for p in got]
    # 'h' stands in until the wanted 'l' layer shows up with a keyframe, then only 'l'
    assert rids == [b"h", b"l", b"l"]
    before = h.plane.read_counters()
    h.send(1, make_rtp(0x52, 1, 0, vp8_payload(True), pt=100))  # no RID, not declared
    await asyncio.sleep(0.1)
    after = h.plane.read_counters()
    assert after[Counter.DROP_UNKNOWN_SSRC] == before[Counter.DROP_UNKNOWN_SSRC] + 1
    assert after[Counter.DROP_NOT_READY] == before[Counter.DROP_NOT_READY]


async def test_a_layer_is_learned_from_padding_probes_too(h):
    """A browser probes bandwidth with padding-only packets when a connection
    starts, and stops sending the RID extension once receiver reports ack the
    SSRC: a layer seen only on padding must still be known to later media."""
    await h.leg(1)
    await h.leg(2)
    h.plane.set_publisher(1, (), {})
    probe = 0x58
    await h.open_stream(1, make_rtp(probe, 0, 0, b"", pt=100, padding=200,
                                    extensions={EXT.rid: b"l"}))
    h.send(1, make_rtp(probe, 1, 0, b"", pt=100, padding=200, extensions={EXT.rid: b"l"}))
    h.plane.set_slot(2, StreamKind.VIDEO, 1, SlotSource(1, csrc=5, layer=Layer.LOW))
    before = h.plane.read_counters()
    h.send(1, make_rtp(probe, 2, 3000, vp8_payload(True), pt=100))  # no RID any more
    (got,) = await h.received(2)
    assert rtp.is_keyframe(got, rtp.parse(got), EXT.frame_descriptor)
    after = h.plane.read_counters()
    assert after[Counter.DROP_UNKNOWN_SSRC] == before[Counter.DROP_UNKNOWN_SSRC]


async def test_a_learned_layer_survives_a_later_set_publisher(h):
    """The controller declares the answer's SSRCs once the leg is up, which may
    be after the first packets taught a RID layer: the learned layer stays (the
    browser sends no RID any more once reports acked the SSRC)."""
    await h.leg(1)
    await h.leg(2)
    learned = 0x5C
    await h.open_stream(1, make_rtp(learned, 0, 0, vp8_payload(False), pt=100,
                                    extensions={EXT.rid: b"l"}))
    h.send(1, make_rtp(learned, 1, 3000, vp8_payload(False), pt=100,
                       extensions={EXT.rid: b"l"}))
    await h.received(2)  # nobody subscribes yet: learned, not forwarded
    h.plane.set_publisher(1, (0x5D,), {})  # audio only declared: the RID-only answer
    h.plane.set_slot(2, StreamKind.VIDEO, 1, SlotSource(1, csrc=5, layer=Layer.LOW))
    h.send(1, make_rtp(learned, 2, 6000, vp8_payload(True), pt=100))  # no RID any more
    (got,) = await h.received(2)
    assert rtp.is_keyframe(got, rtp.parse(got), EXT.frame_descriptor)


async def test_paused_preferred_layer_gives_way_to_the_flowing_one(h):
    """A sender pauses its high layer when its estimate drops: the slot moves to
    the low layer at its next keyframe and back to high at high's keyframe."""
    await h.leg(1)
    await h.leg(2)
    high, low = 0x60, 0x61
    h.plane.set_publisher(1, (), {low: Layer.LOW, high: Layer.HIGH})
    for ssrc in (high, low):
        await h.open_stream(1, make_rtp(ssrc, 0, 0, vp8_payload(False), pt=100))
    h.plane.set_slot(2, StreamKind.VIDEO, 1, SlotSource(1, csrc=5, layer=Layer.HIGH))
    seq = {high: 0, low: 0}

    def send(ssrc: int, key: bool) -> None:
        seq[ssrc] += 1
        h.send(1, make_rtp(ssrc, seq[ssrc], seq[ssrc] * 3000, vp8_payload(key), pt=100))

    send(high, True)
    send(low, True)
    assert [rtp.parse(p).ssrc for p in await h.received(2)] == [h.legs[2].spec.video_slot_ssrcs[1]]
    await asyncio.sleep(LAYER_PAUSED_AFTER + 0.1)  # high pauses, low goes on
    send(low, False)
    assert await h.received(2) == []  # waits for low's keyframe
    send(low, True)
    send(low, False)
    assert len(await h.received(2)) == 2
    send(high, True)  # high resumes with a keyframe: back to high, low no more
    send(low, False)
    got = await h.received(2)
    assert len(got) == 1 and rtp.is_keyframe(got[0], rtp.parse(got[0]), EXT.frame_descriptor)


async def test_receive_stats_count_loss_and_jitter(h):
    """What receiver reports are made of: authentic packets, first and highest
    extended sequence numbers, interarrival jitter (RFC 3550)."""
    await h.leg(1)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    assert h.plane.read_receive_stats(1, AUDIO_SSRC) is None
    for seq in (65534, 65535, 0, 2, 3):  # 1 is lost; the sequence wraps
        h.send(1, make_rtp(AUDIO_SSRC, seq, ((seq - 65534) & 0xFFFF) * 960, b"\x01" * 60))
        await asyncio.sleep(0.03)  # arrival spacing other than the 20 ms the timestamps say
    stats = h.plane.read_receive_stats(1, AUDIO_SSRC)
    assert stats is not None
    assert (stats.received, stats.first_seq, stats.highest_seq) == (5, 65534, 65536 + 3)
    assert stats.jitter > 0
    tampered = bytearray(h.send(1, make_rtp(AUDIO_SSRC, 4, 6 * 960, b"\x01" * 60),
                                protect=True))
    tampered[-1] ^= 1
    h.send(1, bytes(tampered), protect=False)
    await asyncio.sleep(0.1)
    assert h.plane.read_receive_stats(1, AUDIO_SSRC).received == 6  # the tampered copy is not


async def test_audio_level_is_smoothed_per_publisher(h):
    await h.leg(1)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    for i in range(12):
        h.send(1, audio(i, level=20))
    await asyncio.sleep(0.1)
    level = h.plane.read_audio_levels()[1]
    assert 20 <= level < 21


async def test_removed_publisher_stops_and_slot_is_freed(h):
    await audio_call(h, csrc=1)
    h.send(1, audio(1))
    assert len(await h.received(2)) == 1
    h.plane.remove_leg(1)
    h.send(1, audio(2))
    assert await h.received(2) == []
    # a plane that leaves unknown addresses' packets to the sockets does not count them
    assert h.plane.read_counters()[Counter.DROP_UNKNOWN_LEG] == int(h.sees_every_packet)


@pytest.mark.parametrize("profile", ["SRTP_AEAD_AES_128_GCM", "SRTP_AEAD_AES_256_GCM"])
async def test_gcm_profiles(h, profile):
    if profile not in h.plane.srtp_profiles:  # by design: the kernel does AES-CM only
        with pytest.raises(Exception, match=f"{profile} is not supported"):
            await h.leg(1, profile=profile)
        return
    await h.leg(1, profile=profile)
    await h.leg(2, profile=profile)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    h.plane.set_slot(2, StreamKind.AUDIO, 0, SlotSource(1, csrc=1))
    h.send(1, audio(1))
    assert len(await h.received(2)) == 1


# Not on the kernel plane: it reads the plane's per-leg state; the kernel plane's
# cap is tested on its maps in tests/kernel/test_ssrc_cap.py.
@pytest.mark.parametrize("h", ["userspace", "native", "native-xdp"], indirect=True)
async def test_ssrcs_past_the_per_leg_cap_are_dropped_without_state(h):
    await h.leg(1)
    await h.leg(2)
    h.plane.set_publisher(1, (AUDIO_SSRC,), {})
    h.plane.set_slot(2, StreamKind.AUDIO, 0, SlotSource(publisher=1, csrc=0xCAFE))
    rid = EXT.rid
    h.send(1, audio(4))
    assert len(await h.received(2)) == 1
    for i in range(MAX_SSRCS_PER_LEG + 4):  # new SSRCs, each announcing a simulcast layer
        h.send(1, make_rtp(0x7000 + i, 1, 90, b"\x10\x00" + b"\x00" * 20,
                           extensions={rid: b"h"}))
    h.send(1, audio(5))  # the stream that had state goes on
    assert len(await h.received(2)) == 1
    seen, video_layers = h.ssrc_state(1)
    assert seen == MAX_SSRCS_PER_LEG and video_layers < MAX_SSRCS_PER_LEG
    counters = h.plane.read_counters()
    # the audio SSRC had state: MAX - 1 new ones got state, the rest none
    assert counters[Counter.DROP_SSRC_LIMIT] == 4 + 1
    # the declared SSRCs of an answer are capped as well, the excess counted
    h.plane.set_publisher(2, (AUDIO_SSRC,), {0x9000 + i: Layer.HIGH for i in range(12)})
    assert h.plane.read_detail_counters()["STREAMS_REFUSED"] == 1 + 12 - MAX_SSRCS_PER_LEG


def _one_srtp_index_each(h, leg_id: int) -> list[bytes]:  # noqa: ANN001
    """What the leg's client received, unprotected in arrival order: every copy must
    decrypt (libsrtp's replay check refuses a second copy at an SRTP index) and no
    two copies may share an SRTP index (sequence number extended with its ROC)."""
    leg = h.legs[leg_id]
    got, leg.client.packets[:] = list(leg.client.packets), []
    plain, indexes, failed = [], [], []
    for packet in got:
        seq = struct.unpack_from("!H", packet, 2)[0]
        if indexes:  # the ROC: the index nearest the previous one
            seq = indexes[-1] + ((seq - indexes[-1] + 0x8000) & 0xFFFF) - 0x8000
        indexes.append(seq)
        try:
            plain.append(leg.peer.unprotect(packet))
        except Exception as exc:  # noqa: BLE001 -- pylibsrtp.Error: replay, authentication
            failed.append((seq, str(exc)))
    assert len(set(indexes)) == len(indexes), f"an SRTP index sent twice: {indexes}"
    assert not failed
    return plain


@pytest.mark.parametrize("change", ["audio", "video", "layer"])
async def test_a_copy_from_before_its_slots_switch_never_reuses_an_srtp_index(h, change):
    """A slot continues its sequence from the new source's first copy: a packet of
    the new source older than that one maps to a sequence number the slot already
    sent for the previous source. Sent, it would be encrypted at an SRTP index
    already used (AES-CM keystream, GCM nonce reuse): it is dropped and counted,
    while the new source's later packets, reordered or not, go on."""
    await h.leg(1)
    sub = await h.leg(2)
    await h.leg(3)
    video = change != "audio"
    kind = StreamKind.VIDEO if video else StreamKind.AUDIO
    old, new = (0x70, 0x71) if change == "layer" else (0x1111, 0x3333)
    new_leg = 1 if change == "layer" else 3

    def media(ssrc: int, seq: int, key: bool = False) -> bytes:
        if video:
            return make_rtp(ssrc, seq, seq * 3000, vp8_payload(key), pt=100)
        return make_rtp(ssrc, seq, seq * 960, b"\x01" * 60)

    if change == "layer":
        h.plane.set_publisher(1, (), {old: Layer.LOW, new: Layer.HIGH})
    elif video:
        h.plane.set_publisher(1, (), {old: Layer.HIGH})
        h.plane.set_publisher(3, (), {new: Layer.HIGH})
    else:
        h.plane.set_publisher(1, (old,), {})
        h.plane.set_publisher(3, (new,), {})
    await h.open_stream(1, media(old, 0))
    await h.open_stream(new_leg, media(new, 97))
    h.plane.set_slot(2, kind, 0, SlotSource(1, csrc=5, layer=Layer.LOW))
    for seq in (1, 2, 3):
        h.send(1, media(old, seq, key=seq == 1))
    await asyncio.sleep(0.15)
    assert len(h.legs[2].client.packets) == 3
    h.plane.set_slot(2, kind, 0, SlotSource(new_leg, csrc=5 if change == "layer" else 6,
                                            layer=Layer.HIGH))
    dropped = h.plane.read_counters()[Counter.DROP_STALE]
    # the new source: 100 (the switch: video's keyframe), 102, then 101 (reordered
    # after the switch: sent), 99 (reordered from before it: dropped), 103
    for seq in (100, 102, 101, 99, 103):
        h.send(new_leg, media(new, seq, key=seq == 100))
        await asyncio.sleep(0.03)  # arrival order is the test's order
    await asyncio.sleep(0.15)
    got = _one_srtp_index_each(h, 2)
    assert {rtp.parse(p).ssrc for p in got} == {sub.video_slot_ssrcs[0] if video
                                                else sub.audio_slot_ssrcs[0]}
    seqs = [rtp.parse(p).seq for p in got]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2, 3, 5, 4, 6]  # not 99's 2
    assert h.plane.read_counters()[Counter.DROP_STALE] == dropped + 1


# arrival orders (seq, padding-only) and the copies' sequence numbers relative to the
# first one's: the padding-only 3 or 4 closes up the slot's sequence behind it
_LATE_AROUND_PADDING = {
    # the padding after a newer packet: 5 would land on 4's index
    "padding-late": ([(1, 0), (2, 0), (4, 0), (3, 1), (5, 0), (6, 0)], [0, 1, 3, 4]),
    # a packet older than the padding, after it: 2 would land on 1's index
    "media-late": ([(1, 0), (3, 0), (4, 1), (5, 0), (2, 0), (6, 0)], [0, 2, 3, 4]),
}


@pytest.mark.parametrize("order", list(_LATE_AROUND_PADDING))
async def test_a_copy_after_a_padding_shift_never_reuses_an_srtp_index(h, order):
    """A dropped padding-only packet moves its source's later packets down by one;
    a copy that the move maps onto an index the slot already sent (the padding
    reordered after a newer packet, or a packet older than the padding after it)
    would be encrypted at a used SRTP index (AES-CM keystream, GCM nonce reuse):
    it is dropped and counted, the source's next packets go on."""
    await audio_call(h, csrc=5)
    before = h.plane.read_counters()
    arrivals, expected = _LATE_AROUND_PADDING[order]
    for seq, padding_only in arrivals:
        h.send(1, make_rtp(AUDIO_SSRC, seq, seq * 960, b"", padding=8) if padding_only
               else audio(seq))
        await asyncio.sleep(0.03)  # arrival order is the test's order
    await asyncio.sleep(0.15)
    got = _one_srtp_index_each(h, 2)
    seqs = [rtp.parse(p).seq for p in got]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == expected
    after = h.plane.read_counters()
    assert after[Counter.DROP_PADDING] == before[Counter.DROP_PADDING] + 1
    assert after[Counter.DROP_STALE] == before[Counter.DROP_STALE] + 1
