import json

import pytest

from sftd import econn


def _msg(**kw):
    base = {"version": "3.0", "type": "CONFCONN", "sessid": "s", "resp": False}
    base.update(kw)
    return json.dumps(base)


def test_round_trip_keeps_fields_and_omits_empty_ids():
    msg = econn.decode(_msg(src_userid="u", src_clientid="c", vstreams=9))
    assert msg.type == "CONFCONN" and msg.src_userid == "u" and msg.get("vstreams") == 9
    out = json.loads(msg.encode())
    assert out["vstreams"] == 9 and "dest_userid" not in out


@pytest.mark.parametrize("body, reason", [
    (b"{", "not valid JSON"),
    (b"[]", "JSON object"),
    (_msg(version="2.0"), "unsupported version"),
    (_msg(type="NOPE"), "unknown message type"),
    (_msg(type="CONFSTART"), "Wire backend"),
    (json.dumps({"version": "3.0", "type": "CONFCONN", "resp": False}), "sessid"),
    (_msg(resp="yes"), "resp"),
    (_msg(type="SETUP", resp=True), "sdp"),
    (_msg(type="SETUP", resp=True, sdp="v=0"), "props"),
    (_msg(src_userid=5), "src_userid"),
    (b"\xff\xfe", "JSON"),
])
def test_decode_errors_name_the_problem(body, reason):
    with pytest.raises(econn.EconnError, match=reason):
        econn.decode(body)


def test_oversized_message_is_refused():
    with pytest.raises(econn.EconnError, match="exceeds"):
        econn.decode(b" " * (econn.MAX_MESSAGE_BYTES + 1))


def test_encoding_is_byte_for_byte_what_came_in():
    """Compact JSON in the envelope's order, as Wire's sftd and AVS write it,
    re-encodes to the same bytes; fields sftd does not read are kept."""
    wire = (b'{"version":"3.0","type":"CONFPART","sessid":"","src_userid":"sft",'
            b'"src_clientid":"sft","dest_userid":"u","dest_clientid":"c","resp":false,'
            b'"should_start":false,"participants":[{"userid":"u","clientid":"c",'
            b'"authorized":false,"ssrc_audio":"1","muted":false}],"sfts":["http://x"],'
            b'"unknown_to_sftd":{"nested":[1,2.5,null]}}')
    msg = econn.decode(wire)
    assert msg.encode() == wire
    assert isinstance(msg.body, econn.Confpart) and msg.body.participants[0].userid == "u"


def test_typed_bodies_carry_what_the_sft_reads():
    streams = econn.decode(_msg(type="CONFSTREAMS", mode="list", streams=[
        {"userid": "u", "quality": 2}, {"userid": "v", "clientid": "c", "quality": 7}]))
    assert isinstance(streams.body, econn.Confstreams)
    assert [(s.userid, s.clientid, s.layer_wanted) for s in streams.body.streams or []] == [
        ("u", None, 2), ("v", "c", 0)]
    conn = econn.decode(_msg(src_userid="u", src_clientid="c", sessid=None, update=True))
    assert isinstance(conn.body, econn.Confconn) and conn.body.update and conn.sessid == ""
    answer = econn.decode(_msg(type="SETUP", resp=True, sdp="v=0",
                               props={"muted": "true", "x": "y" * 65}))
    assert isinstance(answer.body, econn.Setup) and answer.body.short_props() is None
    assert econn.prop_is_true(answer.body.props, "muted")


@pytest.mark.parametrize("extra, reason", [
    ({"vstreams": 33}, "vstreams must be an integer 0–32"),
    ({"vstreams": True}, "field 'vstreams'"),
    ({"src_clientid": ""}, "CONFCONN needs src_userid and src_clientid"),
    ({"ice_servers": {}}, "field 'ice_servers'"),
    ({"update": "yes"}, "field 'update'"),
])
def test_confconn_problems_are_named(extra, reason):
    with pytest.raises(econn.EconnError, match=reason):
        econn.decode(_msg(**{"src_userid": "u", "src_clientid": "c", **extra}))


@pytest.mark.parametrize("body, reason", [
    (_msg(type="PROPSYNC", props={f"k{i}": "v" for i in range(17)}), "field 'props'"),
    (_msg(type="PROPSYNC", props={"k": 1}), "field 'props"),
    (_msg(type="CONFSTREAMS", mode="loud"), "field 'mode'"),
    (_msg(type="CONFPART", participants=[{"userid": "u"}]), "clientid"),
])
def test_data_channel_problems_are_named(body, reason):
    with pytest.raises(econn.EconnError, match=reason):
        econn.decode(body)
