"""The HTTP API against the real Sft and userspace data plane, in process."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sftd import econn
from sftd.controller.sft import SftConfig
from sftd.signalling.api import ApiConfig
from sftd.signalling.auth import Blacklist, make_token
from sftd.signalling.server import ServerConfig, build_server

CONV = "0123456789abcdef0123456789abcdef"
SECRET = b"topsecret"
URL = "http://sft.example/sfts/sftd-0"


def confconn(user="alice", client="c1", **extra):
    msg = {"version": "3.0", "type": "CONFCONN", "sessid": "s1", "src_userid": user,
           "src_clientid": client, "dest_userid": "SFT", "resp": False, "status": 0,
           "update": False, "vstreams": 2, "selective_audio": True, "selective_video": True,
           "tool": "test", "toolver": "7.0.0"}
    msg.update(extra)
    return msg


async def _client(**api):
    server = build_server(ServerConfig(
        sft=SftConfig(url=URL, media_addresses=["127.0.0.1"], media_ports=(41000, 41999),
                      **api.pop("sft", {})),
        api=ApiConfig(url=URL, **api), dataplane="userspace"))
    server.sft.start()
    client = TestClient(TestServer(server.api_app))
    await client.start_server()
    return server.sft, client


@pytest.fixture
async def api():
    sft, client = await _client()
    yield sft, client
    await client.close()
    await sft.stop()


async def test_url_and_status(api):
    _, client = api
    r = await client.get("/sft/url")
    assert r.status == 200 and (await r.text()) == URL + "\r\n"
    assert (await client.get("/whatever/status")).status == 200


@pytest.mark.parametrize("path", ["/sft", "/a/b/c", "/"])
async def test_path_must_have_two_segments(api, path):
    _, client = api
    r = await client.post(path, data=b"{}")
    assert r.status == 400 and "two segments" in await r.text()


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not valid JSON"),
    (json.dumps({**confconn(), "type": "FOO"}).encode(), "unknown message type"),
    (json.dumps({**confconn(), "version": "2.0"}).encode(), "unsupported version"),
    (json.dumps({k: v for k, v in confconn().items() if k != "sessid"}).encode(), "sessid"),
    (json.dumps({**confconn(), "vstreams": 99}).encode(), "vstreams"),
])
async def test_bad_requests_get_400_and_server_keeps_serving(api, body, reason):
    _, client = api
    r = await client.post(f"/sft/{CONV}", data=body)
    assert r.status == 400 and reason in await r.text()
    r = await client.post(f"/sft/{CONV}", json=confconn())
    offer = await r.json()
    assert r.status == 200 and offer["type"] == "SETUP" and offer["url"] == URL


async def test_confconn_gets_offer_then_answer_rules(api):
    sft, client = api
    offer = await (await client.post(f"/sft/{CONV}", json=confconn())).json()
    assert offer["sdp"].startswith("v=0") and offer["src_userid"] == "sft"
    assert offer["dest_userid"] == "alice" and offer["resp"] is False
    setup = {"version": "3.0", "type": "SETUP", "sessid": "s1", "src_userid": "alice",
             "src_clientid": "c1", "sdp": "v=0\r\n", "props": {}}
    r = await client.post(f"/sft/{CONV}", json={**setup, "resp": False})
    assert r.status == 400 and "resp:true" in await r.text()
    r = await client.post(f"/sft/{CONV}", json={**setup, "resp": True})
    assert r.status == 400 and "bad SDP" in await r.text()
    r = await client.post(f"/sft/{CONV}", json={**setup, "resp": True, "src_userid": "bob"})
    assert r.status == 400 and "unknown participant" in await r.text()
    assert sft.state()["participants"] == 1 and sft.state()["calls"] == 1


async def test_recreate_moves_participant_to_the_end(api):
    sft, client = api
    for user in ("alice", "bob"):
        await client.post(f"/sft/{CONV}", json=confconn(user))
    await client.post(f"/sft/{CONV}", json=confconn("alice", update=False))
    order = [p.userid for p in sft.conferences[CONV].participants]
    assert order == ["bob", "alice"]
    assert sft.state()["participants"] == 2 and sft.participants_total == 3


async def test_draining_refuses_new_participants_with_303(api):
    sft, client = api
    sft.drain()
    r = await client.post(f"/sft/{CONV}", json=confconn())
    assert r.status == 303


async def test_cors_preflight_and_headers():
    sft, client = await _client(allow_origin="https://app.example")
    try:
        r = await client.options(f"/sft/{CONV}")
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        r = await client.get("/sft/url")
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    finally:
        await client.close()
        await sft.stop()


@pytest.fixture
async def auth_api():
    sft, client = await _client(auth_secret=SECRET, blacklist=Blacklist("<6.2.9"))
    yield sft, client
    await client.close()
    await sft.stop()


def _tokens(expiry_offset=60, may_start=True, secret=SECRET):
    user, cred = make_token(secret, int(time.time()) + expiry_offset, may_start)
    return {"username": user, "credential": cred}


async def _status(client, **extra):
    r = await client.post(f"/sft/{CONV}", json=confconn(**extra))
    assert r.status == 200
    body = await r.json()
    return body.get("status") if body["type"] == "CONFCONN" else "offer"


async def test_auth_outcomes(auth_api):
    sft, client = auth_api
    assert await _status(client) == econn.STATUS_AUTH_INVALID  # no token at all
    assert await _status(client, **_tokens(secret=b"wrong")) == econn.STATUS_AUTH_INVALID
    assert await _status(client, **_tokens(expiry_offset=-5)) == econn.STATUS_AUTH_EXPIRED
    assert await _status(client, **_tokens(may_start=False)) == econn.STATUS_JOIN_ONLY
    assert sft.state()["calls"] == 0
    assert await _status(client, **_tokens()) == "offer"
    # once the conference exists, a join-only token may join it
    assert await _status(client, user="bob", **_tokens(may_start=False)) == "offer"
    assert sft.state()["participants"] == 2


async def test_blacklisted_version(auth_api):
    _, client = auth_api
    assert await _status(client, toolver="6.2.8", **_tokens()) == econn.STATUS_BLACKLISTED
    assert await _status(client, toolver="6.2.9", **_tokens()) == "offer"


async def test_participant_limit_is_status_4():
    sft, client = await _client(sft={"max_participants": 1})
    try:
        assert await _status(client) == "offer"
        assert await _status(client, user="bob") == econn.STATUS_LIMIT
    finally:
        await client.close()
        await sft.stop()


async def test_unanswered_offer_times_out():
    sft, client = await _client(sft={"setup_timeout": 0.5})
    try:
        assert await _status(client) == "offer"
        import asyncio
        await asyncio.sleep(1.5)
        assert sft.state()["participants"] == 0 and sft.state()["calls"] == 0
        assert not sft.ports.in_use  # the leg's UDP port went back to the range
    finally:
        await client.close()
        await sft.stop()


async def test_confconn_rate_limit_per_source_address():
    sft, client = await _client(confconn_rate=0.5, confconn_burst=2)
    try:
        assert await _status(client, user="u1") == "offer"
        assert await _status(client, user="u2") == "offer"
        r = await client.post(f"/sft/{CONV}", json=confconn(user="u3"))
        assert r.status == 429 and "too many" in await r.text()
        # a known participant's answer is not rate limited
        r = await client.post(f"/sft/{CONV}", json={
            "version": "3.0", "type": "SETUP", "sessid": "s1", "src_userid": "u1",
            "src_clientid": "c1", "resp": True, "sdp": "v=0\r\n", "props": {}})
        assert r.status == 400 and "bad SDP" in await r.text()
    finally:
        await client.close()
        await sft.stop()


async def test_oversized_body_is_refused():
    sft, client = await _client()
    try:
        r = await client.post(f"/sft/{CONV}", data=b"x" * (econn.MAX_MESSAGE_BYTES + 10))
        assert r.status == 413
        assert await _status(client) == "offer"
    finally:
        await client.close()
        await sft.stop()


async def test_body_limit_is_configurable():
    sft, client = await _client(max_body_bytes=2000)
    try:
        r = await client.post(f"/sft/{CONV}", json=confconn(padding="x" * 3000))
        assert r.status == 413 and "--max-body-bytes" in await r.text()
        assert await _status(client) == "offer"
    finally:
        await client.close()
        await sft.stop()


async def test_ports_exhausted_is_a_clear_503():
    sft, client = await _client()
    sft.ports.low = sft.ports.high = 41500
    try:
        assert await _status(client, user="first") == "offer"
        r = await client.post(f"/sft/{CONV}", json=confconn(user="second"))
        text = await r.text()
        assert r.status == 503 and "--media-ports" in text
        assert sft.state()["participants"] == 1
    finally:
        await client.close()
        await sft.stop()


async def test_slow_client_gets_408_and_others_are_served():
    """A client that never finishes its body is cut off at --request-timeout
    while other requests go through."""
    import asyncio

    sft, client = await _client(request_timeout=0.5)
    try:
        host, port = client.server.host, client.server.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /sft/{CONV} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     "\r\nContent-Length: 500\r\n\r\n{\"version\":".encode())
        await writer.drain()
        assert await _status(client) == "offer"  # served meanwhile
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert b" 408 " in status_line, status_line
        writer.close()
    finally:
        await client.close()
        await sft.stop()


def _answer(user="alice", sessid="s1", msg_type="SETUP"):
    return {"version": "3.0", "type": msg_type, "sessid": sessid, "src_userid": user,
            "src_clientid": "c1", "resp": True, "sdp": "v=0\r\n", "props": {}}


async def test_stranger_cannot_kick_restart_or_answer_for_someone_else(auth_api):
    """-a: the identity (convid, userid, clientid) is public through CONFPART;
    without a token nobody can re-create, restart or answer for it."""
    sft, client = auth_api
    assert await _status(client, **_tokens()) == "offer"
    alice = sft.participants[next(iter(sft.participants))]
    leg_id = alice.leg.leg_id
    assert await _status(client, update=False) == econn.STATUS_AUTH_INVALID  # kick
    assert await _status(client, update=True) == econn.STATUS_AUTH_INVALID  # restart
    r = await client.post(f"/sft/{CONV}", json=_answer(sessid="stranger"))
    assert r.status == 409 and "sessid" in await r.text()
    assert sft.participants[alice.key] is alice and alice.leg.leg_id == leg_id
    assert alice.state == "offered" and not alice.restarting and sft.participants_total == 1
    # the same person re-authenticating from a new session may take over
    assert await _status(client, sessid="s2", **_tokens()) == "offer"
    assert sft.participants[alice.key] is not alice and sft.participants_total == 2


async def test_without_auth_only_the_same_session_may_touch_a_participant(api):
    sft, client = api
    assert await _status(client) == "offer"
    alice = sft.participants[next(iter(sft.participants))]
    r = await client.post(f"/sft/{CONV}", json=confconn(sessid="other"))
    assert r.status == 409 and "session" in await r.text()
    r = await client.post(f"/sft/{CONV}", json=_answer(sessid="other"))
    assert r.status == 409
    assert sft.participants[alice.key] is alice and sft.participants_total == 1
    r = await client.post(f"/sft/{CONV}", json=_answer())  # its own session: processed
    assert r.status == 400 and "bad SDP" in await r.text()
    assert await _status(client) == "offer"  # its own session may re-create
    assert sft.participants_total == 2


async def test_every_confconn_is_rate_limited():
    sft, client = await _client(confconn_rate=0.01, confconn_burst=2)
    try:
        assert await _status(client) == "offer"
        assert await _status(client) == "offer"  # the same participant re-created
        r = await client.post(f"/sft/{CONV}", json=confconn(update=True))
        assert r.status == 429
    finally:
        await client.close()
        await sft.stop()


async def test_update_confconn_gets_an_update_offer_and_its_update_answer_is_taken(api):
    """A client that rejoins with update:true is in its update state: it gets
    an UPDATE offer, and its UPDATE answer is processed like a SETUP answer."""
    sft, client = api
    offer = await (await client.post(f"/sft/{CONV}", json=confconn(update=True))).json()
    assert offer["type"] == "UPDATE" and offer["sdp"].startswith("v=0")
    r = await client.post(f"/sft/{CONV}", json=_answer(msg_type="UPDATE"))
    assert r.status == 400 and "bad SDP" in await r.text()
    assert sft.conferences[CONV].started  # nobody is told to start a rejoined call


async def test_simulcast_follows_the_client_engine_version(api):
    _, client = api
    for user, toolver, offered in (("old", "9.1.0", False), ("new", "10.5.8", True)):
        offer = await (await client.post(f"/sft/{CONV}", json=confconn(
            user, toolver=toolver))).json()
        assert ("a=simulcast:recv l;h" in offer["sdp"]) is offered
