"""The client's SDP handling against an SFT-style offer, offline (no server, no
network): what aiortc needs changed, and what the answer must say."""

from __future__ import annotations

import pytest

from sftd.sftclient import WireClient
from sftd.sftclient import sdp as sdpmod

from .sample_offer import sample_offer

pytestmark = pytest.mark.timeout(30)


def test_munge_strips_only_extmap_attributes():
    offer = sample_offer()
    munged = sdpmod.munge_offer_for_aiortc(offer)
    assert "vad=on" in offer and "vad=on" not in munged
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n" in munged
    # everything else is untouched, line for line
    assert [line for line in offer.splitlines() if "vad=on" not in line] == \
        [line for line in munged.splitlines() if "ssrc-audio-level" not in line]
    assert munged.endswith("\r\n")


def test_summary_of_offer():
    s = sdpmod.summarize(sample_offer(vstreams=9))
    assert s.bundle[:3] == ["audio", "video", "data"] and len(s.bundle) == 3 + 5 + 9
    assert [m.mid for m in s.slots("audio")] == ["1", "2", "3", "4", "5"]
    assert [m.mid for m in s.slots("video")] == [str(i) for i in range(6, 15)]
    assert s.by_mid("video").rids == ["l", "h"]
    assert s.by_mid("video").extmaps[sdpmod.RID_URI] == 4
    assert len(s.slot_ssrcs()) == 14


async def test_answer_to_sft_offer():
    client = WireClient("http://127.0.0.1:9", "0" * 32, "alice")
    try:
        await client._negotiate(sample_offer(vstreams=9))
        answer = sdpmod.summarize(client.answer)
    finally:
        await client.close()
    assert answer.bundle == sdpmod.summarize(sample_offer()).bundle
    directions = {m.mid: m.direction for m in answer.mlines}
    assert directions["audio"] == "sendrecv" and directions["video"] == "sendrecv"
    assert all(directions[str(i)] == "recvonly" for i in range(1, 15))
    data = answer.by_mid("data")
    assert data.kind == "application" and data.profile == "DTLS/SCTP"
    # upstream SSRCs announced; RID extension answered on the video upstream
    assert answer.by_mid("audio").ssrcs and answer.by_mid("video").ssrcs
    assert answer.by_mid("video").extmaps.get(sdpmod.RID_URI) == 4
    assert answer.by_mid("audio").extmaps.get(sdpmod.AUDIO_LEVEL_URI) == 1
    # host candidates on loopback only, nothing from STUN/TURN
    assert answer.candidates
    assert all(" 127.0.0.1 " in c and "typ host" in c for c in answer.candidates)
    assert "a=setup:active" in client.answer


async def test_answer_without_video():
    client = WireClient("http://127.0.0.1:9", "0" * 32, "bob", video=False)
    try:
        await client._negotiate(sample_offer(vstreams=2))
        answer = sdpmod.summarize(client.answer)
    finally:
        await client.close()
    assert answer.by_mid("audio").direction == "sendrecv"
    assert answer.by_mid("video").direction == "inactive"


def test_econn_messages_come_from_the_codec():
    from sftd import econn

    client = WireClient("http://127.0.0.1:9", "f" * 32, "carol", "c1")
    msg = econn.decode(client.confconn().encode())
    assert msg.type == econn.CONFCONN and msg.resp is False
    assert msg.dest_userid == "SFT" and msg.src_userid == "carol" and msg.src_clientid == "c1"
    for key, value in {"status": 0, "update": False, "selective_audio": True,
                       "selective_video": True, "vstreams": 9, "tool": "sft-probe",
                       "toolver": "0.1.0", "ice_servers": []}.items():
        assert msg.get(key) == value, key
