"""Regression tests for the bugs the fuzzing found (KB1–KB6), each a
deterministic reproduction that failed before its fix."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sftd.controller.dataplane import SRTP_AES_CM_128_HMAC_SHA1_80, Counter, SlotSource, StreamKind
from tests.e2e.helpers import new_convid
from tests.rtpkit import make_rtp

from .call import Call
from .strategies import confconn
from .test_fuzz_dataplane import AUDIO_SSRC, PUB, SUB, Plane
from .test_fuzz_http import CONVS, _start

pytestmark = pytest.mark.timeout(90)


async def test_kb1_bad_recreate_is_refused_before_ending_the_participant():
    api = await _start()
    try:
        r = await api.client.post(f"/sft/{CONVS[0]}", json=confconn("alice"))
        assert r.status == 200
        r = await api.client.post(f"/sft/{CONVS[0]}", json=confconn("alice", vstreams=99))
        assert r.status == 400  # refused, and alice's participant is untouched
        assert len(api.sft.participants) == 1
        assert [c for c in api.sft.conferences.values() if not c.participants] == []
    finally:
        await api.client.close()
        await api.sft.stop()


@pytest.mark.parametrize("case", ["rewrite-exceeds-protect", "datagram-over-1500"])
async def test_kb2_big_packets_are_counted_not_raised(case):
    p = Plane(SRTP_AES_CM_128_HMAC_SHA1_80)
    try:
        for leg in (PUB, SUB):
            await p.add(leg)
        p.plane.set_publisher(PUB, (AUDIO_SSRC,), {})
        p.plane.set_slot(SUB, StreamKind.AUDIO, 0, SlotSource(PUB, 1))
        if case == "rewrite-exceeds-protect":
            # 1356 bytes of plaintext: protect()'s maximum; CC 0 -> 1 adds 4 bytes
            data = p.legs[PUB][1].protect(make_rtp(AUDIO_SSRC, 1, 1, b"x" * 1344))
        else:
            data = bytes([0x80, 111]) + bytes(1600)
        p.plane.handle_packet(PUB, data)  # raised ValueError("packet is too long") before
        c = p.plane.read_counters()
        assert c[Counter.RX_PACKETS] == c[Counter.TX_PACKETS] + sum(
            v for k, v in c.items() if k.name.startswith("DROP_"))
    finally:
        p.close()


async def _call(sftd, wire_client, n: int = 2) -> list:
    conv = new_convid()
    clients = [await wire_client(sftd, conv, f"u{i}") for i in range(n)]
    return clients


def _leg_port(client) -> tuple[str, int]:  # noqa: ANN001
    import re
    m = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", client.offer)
    return m.group(1), int(m.group(2))


async def test_kb3_malformed_stun_attribute_leaves_no_traceback(sftd, wire_client):
    (a,) = await _call(sftd, wire_client, 1)
    await a.wait_datachannel()
    # Binding request, PRIORITY (0x0024) with a 2-byte value: struct.error in aioice
    body = b"\x00\x24\x00\x02\x00\x01\x00\x00"
    packet = b"\x00\x01" + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12) + body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, _leg_port(a))
    await asyncio.sleep(0.5)
    assert sftd.alive
    assert not Call(sftd, a, a, a).tracebacks(), sftd.log_tail(30)


async def test_kb4_empty_datagram_from_anywhere_does_not_end_a_participant(sftd, wire_client):
    a, b = await _call(sftd, wire_client, 2)
    await a.wait_datachannel()
    await b.wait_datachannel()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # any address will do
        s.sendto(b"", _leg_port(a))
    await asyncio.sleep(2)
    assert "ended: connection closed" not in sftd.log_text(), sftd.log_tail(30)


@pytest.mark.parametrize("ice_servers", [5, True, 1.5])
async def test_kb5_client_turn_with_non_list_ice_servers_is_400(ice_servers):
    api = await _start(sft={"use_client_turn": True})
    try:
        r = await api.client.post(f"/sft/{CONVS[0]}",
                                  json=confconn("alice", ice_servers=ice_servers))
        assert r.status == 400 and "ice_servers" in await r.text()
    finally:
        await api.client.close()
        await api.sft.stop()


async def test_kb6_dotted_ids_are_distinct_participants():
    api = await _start()
    try:
        for user, client in (("a.b", "c"), ("a", "b.c")):
            r = await api.client.post(f"/sft/{CONVS[0]}", json=confconn(user, client))
            assert r.status == 200
        # two different (userid, clientid) pairs; before, the second kicked the first out
        assert len(api.sft.participants) == 2, list(api.sft.participants)
    finally:
        await api.client.close()
        await api.sft.stop()
