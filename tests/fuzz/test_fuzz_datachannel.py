"""Random and mutated data-channel messages from a joined client into a real
``sftd``: the server never dies, the other participants keep receiving media,
and the log shows no traceback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .call import Call, settle, start_call
from .conftest import examples, tally
from .strategies import NASTY, json_values

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def call(sftd, wire_client):
    c = await start_call(sftd, wire_client)
    yield c
    # after all examples: the victims' call goes on, and nothing blew up
    await c.media_continues()
    c.no_tracebacks()


def _envelope(call: Call, msg_type: str, resp: Any, fields: dict) -> dict:
    f = call.fuzzer
    return {"version": "3.0", "type": msg_type, "sessid": f.sessid, "src_userid": f.userid,
            "src_clientid": f.clientid, "resp": resp, **fields}


def _people(call: Call) -> list[dict]:
    return [{"userid": c.userid, "clientid": c.clientid} for c in (call.a, call.b, call.fuzzer)]


@st.composite
def dc_messages(draw: st.DrawFn, call: Call) -> str:
    people = _people(call)
    person = st.sampled_from(people)
    entry = st.one_of(
        person.map(lambda p: {**p, "authorized": True}),
        st.builds(lambda p, k, v: {**p, k: v}, person,
                  st.sampled_from(["userid", "clientid", "authorized", "ssrc_audio",
                                   "quality", "ssrc_video", "timestamp", "muted"]), NASTY),
        NASTY,
    )
    big = st.integers(500, 4000)  # stays under the 256 KiB message limit
    kind = draw(st.sampled_from(["confpart", "confstreams", "propsync", "ping", "json",
                                 "text", "envelope", "deep", "bigpart", "bigstreams"]))
    if kind == "confpart":
        obj = _envelope(call, "CONFPART", draw(st.one_of(st.just(True), NASTY)), {
            "participants": draw(st.one_of(st.lists(entry, max_size=8), NASTY))})
    elif kind == "confstreams":
        stream = st.one_of(
            st.builds(lambda p, q: {"userid": p["userid"], "clientid": p["clientid"],
                                    "quality": q}, person, st.one_of(
                                        st.sampled_from([0, 1, 2, 3, -1, True, 1.5, "1"]),
                                        NASTY)),
            NASTY)
        obj = _envelope(call, "CONFSTREAMS", draw(NASTY), {
            "mode": draw(st.one_of(st.sampled_from(["list", "level", "LIST", ""]), NASTY)),
            "streams": draw(st.one_of(st.lists(stream, max_size=40), NASTY))})
    elif kind == "propsync":
        obj = _envelope(call, "PROPSYNC", draw(NASTY), {"props": draw(st.one_of(
            st.dictionaries(st.sampled_from(["muted", "videosend", "screensend", "x"]),
                            NASTY, max_size=4), NASTY))})
    elif kind == "ping":
        obj = _envelope(call, "PING", draw(st.one_of(st.booleans(), NASTY)),
                        {"sessid": draw(st.one_of(st.text(max_size=20), NASTY))})
    elif kind == "json":
        return json.dumps(draw(json_values))
    elif kind == "text":
        return draw(st.one_of(st.text(max_size=200), st.sampled_from(
            ["", "{", "null", "[]", '{"version":"3.0"}', "\x00" * 10, "1e99999"])))
    elif kind == "envelope":  # other types, impersonation, wrong envelope types
        obj = _envelope(call, draw(st.sampled_from(
            ["SETUP", "UPDATE", "CONFCONN", "CONFKEY", "REJECT", "FOO", "CONFPART"])),
            draw(st.one_of(st.booleans(), NASTY)), draw(st.dictionaries(
                st.sampled_from(["sdp", "props", "src_userid", "src_clientid", "dest_userid",
                                 "version", "sessid"]), NASTY, max_size=4)))
    elif kind == "deep":  # nested as deep as the JSON parser allows, where it is relayed
        depth = draw(st.integers(100, 990))
        inner = draw(st.sampled_from(['"muted"', "0"]))
        props = "[" * depth + inner + "]" * depth
        msg = json.dumps(_envelope(call, draw(st.sampled_from(["PROPSYNC", "CONFPART"])),
                                   True, {"props": 0, "participants": 0}))
        return msg.replace('"props": 0', f'"props": {props}').replace(
            '"participants": 0', f'"participants": {props}')
    elif kind == "bigpart":
        n = draw(big)
        obj = _envelope(call, "CONFPART", True, {"participants": [
            {"userid": f"u{i}", "clientid": "c", "authorized": True} for i in range(n)]
            + [{**p, "authorized": True} for p in people]})
    else:
        n = draw(big)
        obj = _envelope(call, "CONFSTREAMS", False, {"mode": "list", "streams": [
            {"userid": f"u{i}", "quality": 2} for i in range(n)]})
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    try:
        text.encode()
    except UnicodeEncodeError:  # a data channel carries UTF-8 only: escape surrogates
        text = json.dumps(obj)
    return text


@examples(ci=400, long=3000)
@given(data=st.data())
async def test_datachannel_messages(call, data):
    channel = call.fuzzer.channel
    assert channel is not None and channel.readyState == "open", "fuzzer's channel closed"
    for _ in range(data.draw(st.integers(1, 4))):
        text = data.draw(dc_messages(call))
        tally["datachannel: messages"] += 1
        channel.send(text)  # the client's own data channel, raw text
    await settle()
    # behave like a browser under backpressure: unthrottled, aiortc's own SCTP
    # sender times out (T3) after ~40 s of flooding and the leg closes
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while channel.bufferedAmount > 64 * 1024 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    call.alive()
