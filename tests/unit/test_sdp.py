import dataclasses

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from sftd.controller.dataplane import ExtensionIds
from sftd.controller.sdp import (
    Candidate,
    OfferParams,
    SdpError,
    build_offer,
    offers_simulcast,
    parse_answer,
    tool_line,
)

PARAMS = OfferParams(
    session_id=1, ice_ufrag="abcd", ice_pwd="a" * 22,
    fingerprint="sha-256 " + ":".join(["AB"] * 32),
    candidates=(Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 40000, "host"),),
    audio_slot_ssrcs=(11, 12, 13, 14, 15), video_slot_ssrcs=(21, 22),
    slot_labels=tuple(f"label-{i}" for i in range(7)), tool=tool_line("1.2.3"))


def test_offer_has_wire_layout():
    sdp = build_offer(PARAMS)
    assert "a=group:BUNDLE audio video data 1 2 3 4 5 6 7\r\n" in sdp
    assert sdp.count("m=audio") == 6 and sdp.count("m=video") == 3
    assert "m=application 40000 DTLS/SCTP 5000" in sdp
    assert "a=sctpmap:5000 webrtc-datachannel 16" in sdp
    assert "a=setup:actpass" in sdp
    assert "a=rid:l recv\r\na=rid:h recv\r\na=simulcast:recv l;h\r\n" in sdp
    assert "ssrc-audio-level vad=on" in sdp
    assert sdp.count("a=sendonly") == 7
    assert "nack" not in sdp and "goog-remb" not in sdp


def test_offer_announces_sftd_to_wire_clients():
    """Wire's engine reads a=tool: "sftd" then major.minor; selective audio
    needs >= 2.0, selective video >= 2.1."""
    line = next(x for x in build_offer(PARAMS).splitlines() if x.startswith("a=tool:"))
    name, version = line.removeprefix("a=tool:").split(" ")[:2]
    major, minor = (int(x) for x in version.split(".")[:2])
    assert name == "sftd" and (major, minor) >= (2, 1)
    assert "sftd-ebpf/1.2.3" in line


def test_each_slot_is_a_stream_of_its_own():
    sdp = build_offer(PARAMS)
    sections = sdp.split("m=")[4:]  # the slots, after audio, video and data
    assert len(sections) == 7
    for ssrc, label, section in zip((11, 12, 13, 14, 15, 21, 22), PARAMS.slot_labels, sections):
        assert f"a=ssrc:{ssrc} cname:{label}\r\n" in section
        assert f"a=ssrc:{ssrc} msid:{label} {label}\r\n" in section
        assert f"a=msid:{label} {label}\r\n" in section


def test_slots_do_not_ask_for_transport_feedback():
    sections = build_offer(PARAMS).split("m=")
    uplink_video, slots = sections[2], sections[4:]
    assert "a=rtcp-fb:100 transport-cc" in uplink_video and "transport-wide-cc" in uplink_video
    for section in slots:
        assert "transport-cc" not in section and "transport-wide-cc" not in section


@pytest.mark.parametrize("toolver,offered", [
    (None, True), ("0.0.1", True), ("9.9.9", False), ("10.5.8", True), ("11.0", True),
    ("6.2.9", False), ("garbage", True), ("9" * 5000, True), ("²", True)])
def test_simulcast_only_for_engines_that_handle_it(toolver, offered):
    assert offers_simulcast(toolver) is offered
    sdp = build_offer(dataclasses.replace(PARAMS, simulcast=offers_simulcast(toolver)))
    assert ("a=simulcast:recv" in sdp) is offered


async def test_aiortc_answers_our_offer_and_we_read_it():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        offer = build_offer(PARAMS).replace(" vad=on", "")
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        answer = parse_answer(pc.localDescription.sdp)
    finally:
        await pc.close()
    assert answer.setup == "active"
    assert len(answer.audio_ssrcs()) == 1 and len(answer.video_ssrcs()) == 1
    assert answer.by_mid("data").sctp_port == 5000
    assert answer.by_mid("3").direction == "recvonly"
    assert answer.extension_ids().audio_level == 1


CHROME_LIKE = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE audio video data\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=candidate:1 1 udp 2122260223 192.168.1.2 50000 typ host generation 0\r
a=candidate:2 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active\r
a=ice-ufrag:wxyz\r
a=ice-pwd:bbbbbbbbbbbbbbbbbbbbbbbb\r
a=fingerprint:sha-256 CD:CD\r
a=setup:active\r
a=mid:audio\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=sendrecv\r
a=ssrc:1001 cname:x\r
m=video 9 UDP/TLS/RTP/SAVPF 100\r
a=mid:video\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 http://www.webrtc.org/experiments/rtp-hdrext/generic-frame-descriptor-00\r
a=sendrecv\r
a=rid:h send\r
a=rid:l send\r
a=simulcast:send h;l\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
a=mid:data\r
a=sctp-port:5000\r
"""


def test_chrome_style_answer_with_simulcast():
    answer = parse_answer(CHROME_LIKE)
    assert answer.audio_ssrcs() == (1001,)
    assert answer.video_ssrcs() == []  # learned from RIDs at run time
    assert [c.port for c in answer.candidates] == [50000]  # TCP candidates are not ours
    assert answer.extension_ids() == ExtensionIds(audio_level=1, rid=4, repaired_rid=0,
                                                  frame_descriptor=11, transport_cc=0)


def test_transport_cc_id_is_taken_from_the_answer():
    sdp = CHROME_LIKE.replace("a=mid:video\r\n", "a=mid:video\r\na=extmap:7 "
                              "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-"
                              "extensions-01\r\n")
    assert parse_answer(sdp).extension_ids().transport_cc == 7


def test_sim_group_orders_layers_and_excludes_rtx():
    sdp = CHROME_LIKE.replace("a=rid:h send\r\n", "a=ssrc-group:SIM 5 6\r\n"
                              "a=ssrc-group:FID 5 7\r\na=ssrc:5 cname:x\r\na=ssrc:7 cname:x\r\n")
    assert parse_answer(sdp).video_ssrcs() == [5, 6]
    sdp = CHROME_LIKE.replace("a=rid:h send\r\n", "a=ssrc-group:FID 5 7\r\n"
                              "a=ssrc:5 cname:x\r\na=ssrc:7 cname:x\r\n")
    assert parse_answer(sdp).video_ssrcs() == [5]


@pytest.mark.parametrize("mutate, reason", [
    (lambda s: "hello", "x=value"),
    (lambda s: s.replace("v=0\r\n", ""), "no 'v='"),
    (lambda s: s.replace("a=ice-ufrag:wxyz\r\n", ""), "ice-ufrag"),
    (lambda s: s.replace("a=ice-pwd:bbbbbbbbbbbbbbbbbbbbbbbb", "a=ice-pwd:short"), "ufrag/pwd"),
    (lambda s: s.replace("a=fingerprint:sha-256 CD:CD\r\n", ""), "fingerprint"),
    (lambda s: s.replace("a=setup:active", "a=setup:actpass"), "setup"),
    (lambda s: s.replace("typ host generation", "typ"), "unknown type"),
    (lambda s: s.replace("typ host generation", "host"), "bad candidate"),
    (lambda s: s.replace("50000 typ", "99999 typ"), "port"),
    (lambda s: s.replace("a=ssrc:1001", "a=ssrc:x1"), "SSRC"),
    (lambda s: s.replace("a=mid:video\r\n", ""), "a=mid"),
    (lambda s: s.replace("m=video 9 UDP", "m=video x UDP"), "m= line"),
    (lambda s: s + "garbage\r\n", "x=value"),
    (lambda s: s.split("m=audio")[0], "no m="),
    (lambda s: s.replace("a=extmap:4 ", "a=extmap:400 "), "extmap"),
    (lambda s: s * 1000, "exceeds"),
    # what only aiortc's parser refuses names the m-section: an fmtp without rtpmap
    (lambda s: s.replace("a=mid:audio\r\n", "a=mid:audio\r\na=fmtp:96 x=1\r\n"),
     "m-section of line 6 "),
])
def test_bad_answers_say_what_is_wrong(mutate, reason):
    with pytest.raises(SdpError, match=reason):
        parse_answer(mutate(CHROME_LIKE))
