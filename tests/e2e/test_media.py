"""Media through a real sftd between real aiortc clients (no mocks)."""

from __future__ import annotations

import pytest

from .helpers import (
    confpart_entry,
    frames_from,
    gets_media,
    media_table,
    new_convid,
    sent_audio_ssrc,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


async def test_three_clients_receive_each_other(sftd_on_plane, wire_client):
    sftd = sftd_on_plane
    conv = new_convid()
    clients = [await wire_client(sftd, conv, f"user{i}") for i in range(3)]

    await wait_until(lambda: all(gets_media(c, [o for o in clients if o is not c])
                                 for c in clients),
                     25, "decoded audio+video from each other participant",
                     lambda: media_table(clients))

    # CONFPART is the same list everywhere, in join order, with distinct SSRCs.
    order = [c.person for c in clients]
    for c in clients:
        assert c.confpart_people() == order
    entries = [confpart_entry(clients[0], c) for c in clients]
    video_ssrcs = [int(e["ssrc_video"]) for e in entries]
    assert len(set(video_ssrcs)) == 3 and 0 not in video_ssrcs
    # ssrc_audio is the client's real audio SSRC.
    for c, e in zip(clients, entries):
        assert int(e["ssrc_audio"]) == sent_audio_ssrc(c)

    # a plane that computes keystream ahead loses what outruns it on a starved host,
    # and counts it (0 on the userspace plane): those gaps are explained
    metrics = await sftd.metrics()
    counted_losses = sum(v for k, v in metrics.items()
                         if "KEYSTREAM_MISS" in k or "KEYSTREAM_OVERWRITTEN" in k)
    for rx in clients:
        rec = rx.received
        # every packet carried exactly the CSRC of someone in the conference
        assert not rec.unknown_csrc_packets, rec.unknown_csrc_packets
        assert not rec.no_csrc_packets, rec.no_csrc_packets
        for tx in clients:
            if tx is rx:
                continue
            e = confpart_entry(rx, tx)
            assert rec.csrc_packets[("audio", int(e["ssrc_audio"]))] > 0
            assert rec.csrc_packets[("video", int(e["ssrc_video"]))] > 0
            stats = rec.by_person[tx.person]
            assert stats.audio_mids <= {"1", "2", "3", "4", "5"}, stats.audio_mids
            assert stats.video_mids and not stats.video_mids & {"1", "2", "3", "4", "5",
                                                               "audio", "video"}
        # continuous sequence numbers on every slot (aiortc senders, no loss on the way)
        packets = sum(rec.csrc_packets.values())
        assert sum(rec.seq_gaps.values()) <= max(2, packets // 100) + counted_losses, (
            dict(rec.seq_gaps),
            {k: v for k, v in metrics.items() if v and ("DROP" in k or "KEYSTREAM" in k)})
        # nothing of our own comes back
        assert rx.person not in rec.by_person
        # data channel: CONFPART received, PING echoed
        assert rec.confparts >= 1
    await wait_until(lambda: all(c.received.pongs >= 1 for c in clients), 6, "PING echoes")

    joins = [c.join_time_video for c in clients]
    print("join times (CONFCONN -> first decoded video) ms:",
          [round(j * 1000) for j in joins if j is not None])


async def test_late_joiner_gets_media(sftd_on_plane, wire_client):
    sftd = sftd_on_plane
    conv = new_convid()
    a = await wire_client(sftd, conv, "early-a")
    b = await wire_client(sftd, conv, "early-b")
    await wait_until(lambda: gets_media(a, [b]) and gets_media(b, [a]), 20,
                     "media between the first two", lambda: media_table([a, b]))

    late = await wire_client(sftd, conv, "late")
    everyone = [a, b, late]
    await wait_until(lambda: gets_media(late, [a, b]), 20, "the late joiner to get media",
                     lambda: media_table(everyone))
    await wait_until(lambda: gets_media(a, [late]) and gets_media(b, [late]), 20,
                     "the early ones to get the late joiner's media",
                     lambda: media_table(everyone))
    assert late.confpart_people() == [a.person, b.person, late.person]
    assert late.join_time_video is not None and late.join_time_video < 10
    print(f"late join time: {late.join_time_video * 1000:.0f} ms; "
          f"a<-late {frames_from(a, late)}")
