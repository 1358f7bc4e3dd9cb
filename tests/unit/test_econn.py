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
