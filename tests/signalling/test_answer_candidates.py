"""The full-ICE SFT checks only candidates it should: an answer's flood of
candidates, other address families and addresses the media address cannot
reach are refused and counted, through the real HTTP API and ICE agent."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sftd.controller.leg import MAX_REMOTE_CANDIDATES
from sftd.controller.sft import Sft, SftConfig
from sftd.controller.userspace import UserspaceDataPlane
from sftd.signalling.api import ApiConfig, make_app
from tests.fuzz.strategies import confconn, real_answer, setup_answer

pytestmark = pytest.mark.timeout(30)

URL = "http://sft.example"
CONV = "0123456789abcdef0123456789abcdef"


async def test_answer_candidates_are_capped_filtered_and_counted():
    sft = Sft(SftConfig(url=URL, media_addresses=["127.0.0.1"], media_ports=(41700, 41799)),
              UserspaceDataPlane())
    sft.start()
    client = TestClient(TestServer(make_app(sft, ApiConfig(url=URL))))
    await client.start_server()
    try:
        offer = await (await client.post(f"/sft/{CONV}", json=confconn())).json()
        flood = [f"a=candidate:{i} 1 udp {2130706431 - i} 127.0.0.1 {20000 + i} typ host"
                 for i in range(MAX_REMOTE_CANDIDATES + 4)]
        flood += ["a=candidate:90 1 udp 2130706431 ::1 9 typ host",  # another family
                  "a=candidate:91 1 udp 2130706431 192.0.2.9 9 typ host",  # no route from lo
                  "a=candidate:92 1 udp 2130706431 224.0.0.9 9 typ host"]  # multicast
        sdp = re.sub(r"a=candidate:[^\r\n]*\r\n", "", real_answer(offer["sdp"]))
        sdp = sdp.replace("a=ice-ufrag", "\r\n".join(flood) + "\r\na=ice-ufrag", 1)
        r = await client.post(f"/sft/{CONV}", json=setup_answer(sdp))
        assert r.status == 200, await r.text()
        leg = next(iter(sft.participants.values())).leg
        for _ in range(50):
            if sft.refused:
                break
            await asyncio.sleep(0.05)
        assert dict(sft.refused) == {"candidate_excess": 4, "candidate_family": 1,
                                     "candidate_unroutable": 1, "candidate_special": 1}
        checked = {(c.host, c.port) for c in leg.ice.remote_candidates}
        assert len(checked) == MAX_REMOTE_CANDIDATES
        assert all(host == "127.0.0.1" and port < 20000 + MAX_REMOTE_CANDIDATES
                   for host, port in checked)  # the best by priority
    finally:
        await client.close()
        await sft.stop()
