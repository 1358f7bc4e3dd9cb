"""Pure parsers against arbitrary and structure-aware input: they return, or
raise their own named error (SdpError, EconnError, RtpError), nothing else;
plus the properties the data plane relies on."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from sftd import econn
from sftd.controller import rtcp, rtp
from sftd.controller.sdp import SdpError, parse_answer, parse_candidate

from .conftest import examples, tally
from .strategies import (
    econn_json_objects,
    mutated_sdp,
    rtcp_compounds,
    rtp_packets,
    sdp_like_text,
)

# ------------------------------------------------------------------ econn


@examples(ci=800, long=8000)
@given(st.one_of(st.binary(max_size=2048), st.text(max_size=2048)))
def test_econn_decode_arbitrary(data):
    tally["parsers: econn.decode (random)"] += 1
    try:
        msg = econn.decode(data)
    except econn.EconnError as exc:
        assert str(exc)
        return
    # whatever decodes re-encodes to JSON that decodes to the same message
    assert econn.decode(msg.encode()) == msg


@examples(ci=800, long=8000)
@given(econn_json_objects())
def test_econn_decode_structured(obj):
    tally["parsers: econn.decode (structured)"] += 1
    body = json.dumps(obj).encode()
    try:
        msg = econn.decode(body)
    except econn.EconnError as exc:
        assert str(exc)
        return
    assert msg.type in econn.KNOWN_TYPES and isinstance(msg.resp, bool)
    assert isinstance(msg.sessid, str)
    if msg.type in (econn.SETUP, econn.UPDATE):
        assert isinstance(msg.get("sdp"), str) and isinstance(msg.get("props"), dict)
    assert econn.decode(msg.encode()) == msg


@examples(ci=40, long=200)
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from("[{"))
def test_econn_decode_deep_nesting(depth, opener):
    tally["parsers: econn.decode (deep nesting)"] += 1
    body = (('{"a":' if opener == "{" else "[") * depth).encode()
    try:
        econn.decode(body)
    except econn.EconnError:
        pass


# ------------------------------------------------------------------ SDP


@examples(ci=600, long=6000)
@given(st.one_of(st.text(max_size=4096), sdp_like_text()))
def test_parse_answer_arbitrary(text):
    tally["parsers: sdp.parse_answer (random)"] += 1
    try:
        answer = parse_answer(text)
    except SdpError as exc:
        assert type(exc) is SdpError and str(exc)
        return
    _answer_invariants(answer)


@examples(ci=600, long=6000)
@given(mutated_sdp())
def test_parse_answer_mutated_real_answer(text):
    tally["parsers: sdp.parse_answer (mutated aiortc answer)"] += 1
    try:
        answer = parse_answer(text)
    except SdpError as exc:
        assert type(exc) is SdpError and str(exc)
        return
    _answer_invariants(answer)


@examples(ci=400, long=4000)
@given(st.text(max_size=300))
def test_parse_candidate_arbitrary(text):
    tally["parsers: sdp.parse_candidate"] += 1
    try:
        cand = parse_candidate(text)
    except SdpError:
        return
    assert 0 < cand.port < 65536 and cand.component in (1, 2)


def _answer_invariants(answer) -> None:  # noqa: ANN001
    assert answer.media and all(m.mid for m in answer.media)
    assert answer.setup in ("active", "passive") and answer.fingerprints
    for ssrc in answer.audio_ssrcs() + tuple(answer.video_ssrcs()):
        assert 0 <= ssrc <= 0xFFFFFFFF
    ids = answer.extension_ids()
    for value in (ids.audio_level, ids.rid, ids.repaired_rid, ids.frame_descriptor):
        assert 0 <= value <= 255
    for cand in answer.candidates:
        assert cand.transport == "udp" and cand.component == 1


# ------------------------------------------------------------------ RTP


def _rtp_all(data: bytes, ext_id: int) -> None:
    try:
        view = rtp.parse(data)
    except rtp.RtpError as exc:
        assert type(exc) is rtp.RtpError and str(exc)
        return
    assert rtp.RTP_HEADER <= view.ext_offset <= view.payload_offset <= view.payload_end
    assert view.payload_end <= len(data)
    value = rtp.find_extension(data, view, ext_id)
    assert value is None or isinstance(value, bytes)
    rtp.audio_level(data, view, ext_id)
    assert isinstance(rtp.is_keyframe(data, view, ext_id), bool)
    rtp.padding_only(view)


@examples(ci=1200, long=12000)
@given(st.binary(max_size=1600), st.integers(min_value=-2, max_value=300))
def test_rtp_arbitrary_bytes(data, ext_id):
    tally["parsers: rtp.parse/find_extension/is_keyframe (random)"] += 1
    _rtp_all(data, ext_id)


@examples(ci=1200, long=12000)
@given(rtp_packets(), st.integers(min_value=0, max_value=255))
def test_rtp_structured(packet, ext_id):
    tally["parsers: rtp.parse/find_extension/is_keyframe (structured)"] += 1
    data, truth = packet
    _rtp_all(data, ext_id)
    if truth is None:
        return
    view = rtp.parse(data)
    assert (view.ssrc, view.seq, view.timestamp, view.csrc_count) == (
        truth["ssrc"], truth["seq"], truth["ts"], truth["cc"])
    assert data[view.payload_offset:view.payload_end] == truth["payload"]
    for eid, value in truth["extensions"].items():
        assert rtp.find_extension(data, view, eid) == value


@examples(ci=800, long=8000)
@given(st.binary(max_size=64))
def test_vp8_keyframe_arbitrary(payload):
    tally["parsers: rtp.vp8_keyframe"] += 1
    assert isinstance(rtp.vp8_keyframe(payload), bool)


@examples(ci=1200, long=12000)
@given(rtp_packets(valid_only=True), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_rewrite_properties(packet, ssrc, seq, ts, csrc):
    tally["parsers: rtp.rewrite (round trip)"] += 1
    data, truth = packet
    view = rtp.parse(data)
    out = rtp.rewrite(data, view, ssrc, seq, ts, csrc)
    # CC=1 with the slot's CSRC; version, padding, extension, marker, PT kept
    assert out[0] & 0x0F == 1 and out[0] & 0xF0 == data[0] & 0xF0 and out[1] == data[1]
    assert struct.unpack_from("!I", out, 12)[0] == csrc
    # extension and payload (with padding) byte-identical
    assert out[16:] == data[view.ext_offset:]
    again = rtp.parse(out)
    assert (again.ssrc, again.seq, again.timestamp) == (ssrc, seq, ts)
    assert (again.marker, again.payload_type, again.padding, again.extension) == (
        view.marker, view.payload_type, view.padding, view.extension)
    assert out[again.payload_offset:again.payload_end] == \
        data[view.payload_offset:view.payload_end]
    for eid in truth["extensions"]:
        assert rtp.find_extension(out, again, eid) == rtp.find_extension(data, view, eid)
    assert rtp.is_keyframe(out, again, 11) == rtp.is_keyframe(data, view, 11)


# ------------------------------------------------------------------ RTCP


@examples(ci=800, long=8000)
@given(st.one_of(st.binary(max_size=512), rtcp_compounds().map(lambda c: c[0])))
def test_parse_sender_reports_arbitrary(data):
    tally["parsers: rtcp.parse_sender_reports (random)"] += 1
    for report in rtcp.parse_sender_reports(data):
        assert 0 <= report.ssrc <= 0xFFFFFFFF and 0 <= report.ntp_middle <= 0xFFFFFFFF


@examples(ci=600, long=6000)
@given(rtcp_compounds())
def test_parse_sender_reports_finds_every_sr(compound):
    tally["parsers: rtcp.parse_sender_reports (structured)"] += 1
    data, expected = compound
    got = [(r.ssrc, r.ntp_middle) for r in rtcp.parse_sender_reports(data)]
    assert got == expected
