"""200 concurrent CONFCONNs at a real sftd: every one answered with an offer,
none lost, the server's state matches; p50/p99 offer time printed."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import aiohttp
import pytest

from tests.e2e.helpers import new_convid

pytestmark = pytest.mark.timeout(120)

JOINS = 200


async def test_200_concurrent_confconns_all_get_offers(sftd_factory):
    server = await sftd_factory("--setup-timeout", "60")
    convs = [new_convid() for _ in range(20)]

    async def join(session: aiohttp.ClientSession, i: int) -> float:
        body = {"version": "3.0", "type": "CONFCONN", "sessid": f"s{i}", "src_userid": f"u{i}",
                "src_clientid": "c", "dest_userid": "SFT", "resp": False, "status": 0,
                "update": False, "vstreams": 9, "selective_audio": True,
                "selective_video": True, "ice_servers": []}
        started = time.monotonic()
        async with session.post(f"{server.url}/sft/{convs[i % len(convs)]}", json=body) as r:
            assert r.status == 200, await r.text()
            reply = json.loads(await r.text())
        assert reply["type"] == "SETUP" and reply["sdp"].startswith("v=0")
        return time.monotonic() - started

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        times = sorted(await asyncio.gather(*(join(session, i) for i in range(JOINS))))
    metrics = await server.metrics()
    assert metrics["sft_participants"] == JOINS and metrics["sft_calls"] == len(convs)
    p50, p99 = statistics.median(times), times[int(0.99 * (JOINS - 1))]
    print(f"\n{JOINS} concurrent CONFCONN -> SETUP offer: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")
