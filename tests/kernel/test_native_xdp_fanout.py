"""Every copy the native engine sends through AF_XDP must decrypt at its
subscriber: a sustained fan-out (two publishers, audio- and video-sized packets,
many subscribers each) on a real veth pair, with libsrtp decrypting every copy
at the clients. One conference's RTP arrives on the other worker's port and is
handed over. With tiny rings the transmit frames run out in the middle of a
fan-out; the copies that took the legs' sockets then used to overtake the ones
still waiting for a frame's turn (thousands reordered per run). Either way each
subscriber must get each copy once, authentic, in the order it was numbered."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally

import pylibsrtp
import pytest

from sftd.controller.dataplane import Layer, SlotSource, StreamKind
from sftd.engine import xdp_io
from tests.dataplane.planes import NativeXdpHarness
from tests.rtpkit import make_rtp, vp8_payload

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

AUDIO_SSRC, VIDEO_SSRC = 0x1111, 0x2222
SUBSCRIBERS = 16  # per conference
PACKETS = 600  # per stream and publisher
BURST = 24  # packets sent back to back before the clients yield


async def fan_out(h: NativeXdpHarness) -> dict[str, int]:
    """Two conferences of one publisher and SUBSCRIBERS subscribers; every copy
    each subscriber got is decrypted, and failures, replays and reordering are
    counted per (subscriber, slot SSRC)."""
    h.clients_transmit_on_last_queue()  # one worker hands the other its RTP
    publishers = {1: 1, 100: 2}  # publisher leg -> conference
    subscribers: dict[int, list[int]] = {}
    for pub, conference in publishers.items():
        await h.leg(pub, conference=conference)
        h.plane.set_publisher(pub, (AUDIO_SSRC,), {VIDEO_SSRC: Layer.HIGH})
        subscribers[pub] = []
        for sub in range(pub + 1, pub + 1 + SUBSCRIBERS):
            await h.leg(sub, conference=conference)
            h.plane.set_slot(sub, StreamKind.AUDIO, 0, SlotSource(pub, csrc=pub))
            h.plane.set_slot(sub, StreamKind.VIDEO, 0, SlotSource(pub, csrc=pub))
            subscribers[pub].append(sub)
    assert {h.plane._legs[p].worker for p in publishers} == {0, 1}

    counts: Tally[str] = Tally()
    highest: dict[tuple[int, int], int] = {}

    def drain() -> None:
        for subs in subscribers.values():
            for sub in subs:
                leg = h.legs[sub]
                for data in leg.client.packets:
                    ssrc, seq = int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")
                    try:
                        leg.peer.unprotect(data)
                    except pylibsrtp.Error as exc:
                        counts["replayed" if "replay" in str(exc) else "failed"] += 1
                        continue
                    counts["decrypted"] += 1
                    last = highest.get((sub, ssrc))
                    if last is not None and (seq - last) & 0xFFFF >= 0x8000:
                        counts["reordered"] += 1
                    else:
                        highest[(sub, ssrc)] = seq
                leg.client.packets.clear()

    for i in range(PACKETS):
        for pub in publishers:
            h.send(pub, make_rtp(AUDIO_SSRC, i, i * 960, bytes([pub]) * 120))
            h.send(pub, make_rtp(VIDEO_SSRC, i, i * 3000, vp8_payload(i % 100 == 0, 1100),
                                 pt=100))
        if i % BURST == BURST - 1:
            await asyncio.sleep(0.002)
            drain()
    await asyncio.sleep(0.5)
    drain()
    counts["expected"] = 2 * PACKETS * SUBSCRIBERS * len(publishers)
    return dict(counts)


@pytest.mark.parametrize("ring_size", [xdp_io.XSK_RING_SIZE, 64],
                         ids=["production-rings", "tiny-rings"])
async def test_every_af_xdp_copy_decrypts_at_its_subscriber(monkeypatch, ring_size):
    monkeypatch.setattr(xdp_io, "XSK_RING_SIZE", ring_size)
    h = NativeXdpHarness(queues=2)
    try:
        counts = await fan_out(h)
        detail = h.plane.read_detail_counters()
    finally:
        h.close()
    summary = (f"{counts}; XDP_TX {detail['XDP_TX']}, XDP_NO_FRAME {detail['XDP_NO_FRAME']}, "
               f"XDP_HANDOFFS {detail['XDP_HANDOFFS']}, XDP_RX_DROPPED {detail['XDP_RX_DROPPED']}")
    assert counts.get("failed", 0) == 0 and counts.get("replayed", 0) == 0, summary
    assert counts.get("reordered", 0) == 0, summary
    assert detail["XDP_HANDOFFS"] > 0 and detail["XDP_TX"] > 0, summary
