"""-T (relay candidates through TURN) is not supported yet: the flag parses, as
Wire's sftd takes it, but sftd refuses to start with it and says what to use; and
without it no TURN server named by a client is ever contacted."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sftd import econn
from sftd.controller.sft import Sft, SftConfig
from sftd.controller.userspace import UserspaceDataPlane
from sftd.signalling import cli
from sftd.signalling.api import ApiConfig, make_app

URL = "http://127.0.0.1:8585"


def test_t_parses_but_sftd_refuses_to_start_with_it(capsys) -> None:
    assert cli.build_parser().parse_args(["-T"]).use_turn
    with pytest.raises(SystemExit) as exc:
        cli.main(["-T", "-O", "lo", "-p", "0", "-r", "0"])
    message = str(exc.value.code)
    assert "-T" in message and "not supported yet" in message
    assert "Start without -T" in message and "own TURN relays" in message


async def test_a_client_named_turn_server_is_never_contacted() -> None:
    """A CONFCONN's ice_servers name a TURN server (here a local socket): sftd as
    started (no -T) makes its offer without sending it anything."""
    turn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    turn.bind(("127.0.0.1", 0))
    turn.setblocking(False)
    lo = random.randrange(20000, 58000)
    sft = Sft(SftConfig(url=URL, media_addresses=["127.0.0.1"], media_ports=(lo, lo + 99)),
              UserspaceDataPlane())
    sft.start()
    client = TestClient(TestServer(make_app(sft, ApiConfig(url=URL))))
    await client.start_server()
    try:
        port = turn.getsockname()[1]
        r = await client.post("/sft/" + "ab" * 16, json={
            "version": "3.0", "type": "CONFCONN", "sessid": "s1", "src_userid": "alice",
            "src_clientid": "c1", "dest_userid": "SFT", "resp": False, "vstreams": 2,
            "tool": "test", "toolver": "7.0.0",
            "ice_servers": [{"urls": [f"turn:127.0.0.1:{port}?transport=udp"],
                             "username": "u", "credential": "p"}]})
        assert r.status == 200
        assert econn.decode(await r.text()).type == econn.SETUP
        await asyncio.sleep(1.0)  # ICE gathering and any allocation would be done
        with pytest.raises(BlockingIOError):
            turn.recv(2048)
    finally:
        await client.close()
        await sft.stop()
        turn.close()
