"""CONFCONN update:true on a connected participant is an ICE restart, not a
re-join: a new UPDATE offer with new ICE credentials on the same port, the same
participant, and the running call going on until the answer comes. As in
Wire's sftd the participant goes to the end of the key-generator order and is
authorised afresh (its peers answer the new CONFPART)."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from .helpers import frames_from, gets_media, new_convid, wait_until

pytestmark = pytest.mark.timeout(60)


async def test_update_true_reoffers_new_credentials_on_the_same_leg(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b")
    await wait_until(lambda: gets_media(a, [b]) and gets_media(b, [a]), 20, "media both ways")
    body = a.confconn(update=True).to_dict()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sftd.url}/sft/{conv}", json=body) as r:
            assert r.status == 200
            offer = await r.json()
    assert offer["type"] == "UPDATE"

    def ice(sdp: str) -> tuple[str, str]:
        return (re.search(r"a=ice-ufrag:(\S+)", sdp).group(1),
                re.search(r" udp \d+ \S+ (\d+) typ host", sdp).group(1))

    old_ufrag, old_port = ice(a.offer)
    new_ufrag, new_port = ice(offer["sdp"])
    assert new_ufrag != old_ufrag and new_port == old_port
    assert re.search(r"^o=- \d+ 3 IN", offer["sdp"], re.M), "session version must grow"
    await wait_until(lambda: _order(b) == ["b", "a"], 5, "a at the end of the key-generator order")
    frames = frames_from(b, a)[1]
    await asyncio.sleep(2)
    assert frames_from(b, a)[1] > frames + 10, "the call goes on until the answer arrives"
    metrics = await sftd.metrics()
    assert metrics["sft_participants"] == 2 and metrics["sft_participants_total"] == 2
    assert "ICE restart offered" in sftd.log_text()


def _order(client) -> list[str]:  # noqa: ANN001
    confpart = client.received.confpart
    return [p["userid"] for p in (confpart.get("participants") if confpart else [])]


async def test_update_answered_from_a_new_connection_gets_a_new_leg(sftd, wire_client):
    """Wire's engine re-creates its peer connection (camera back on, network
    change) and answers the UPDATE offer with a new DTLS fingerprint: the
    participant keeps its identity, gets a new leg, and media flows both ways."""
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b")
    await wait_until(lambda: gets_media(a, [b]) and gets_media(b, [a]), 20, "media both ways")
    await a.reconnect()
    before = frames_from(b, a)
    a_before = frames_from(a, b)
    await wait_until(lambda: frames_from(b, a)[1] > before[1] + 10
                     and frames_from(a, b)[1] > a_before[1] + 10, 20,
                     "media both ways on the new connection",
                     lambda: (before, frames_from(b, a), a_before, frames_from(a, b),
                              a.received.confparts, _order(a), _order(b)))
    assert _order(b) == ["b", "a"]
    metrics = await sftd.metrics()
    assert metrics["sft_participants"] == 2 and metrics["sft_participants_total"] == 2
    assert "reconnects from a new connection" in sftd.log_text()
