"""One leg cannot fill the node's kernel maps: new SSRCs past the per-leg cap are
dropped and counted in BPF without a stream entry, keystream rings are made only
for what admission reserved, and a join the kernel could not serve is refused
(CONFCONN status 4) before any leg exists."""

from __future__ import annotations

import struct

import pytest
from harness import make_peer, one_byte_ext, rtp

from sftd import econn
from sftd.bpf.dataplane import KernelDataPlane
from sftd.controller.dataplane import MAX_SSRCS_PER_LEG, Counter, Layer
from sftd.controller.sft import Sft, SftConfig
from tests.conftest import owned_name

pytestmark = pytest.mark.timeout(60)


def stream_states(dp: KernelDataPlane, leg_id: int) -> int:
    return sum(1 for key in dp.maps["sft_stream_state"].keys()
               if struct.unpack_from("<I", key)[0] == leg_id)


def test_new_ssrcs_past_the_cap_get_no_kernel_state(dp, netns):
    pub, other = make_peer(0, 40000), make_peer(1, 40001)
    dp.add_leg(pub.spec)
    dp.add_leg(other.spec)
    dp.set_publisher(pub.leg_id, (0xA0,), {})
    rid = pub.spec.extensions.rid
    for i in range(MAX_SSRCS_PER_LEG + 6):  # each one a new, authentic, RID'd SSRC
        packet = rtp(1, 90, 0x7000 + i, b"\x10\x00" + bytes(30), pt=96,
                     ext=one_byte_ext((rid, b"h" if i % 2 else b"l")))
        dp.tc_program.test_run(pub.frame(pub.sender.protect(packet)))
        dp.maintain()
    assert stream_states(dp, pub.leg_id) == MAX_SSRCS_PER_LEG
    assert dp.read_counters()[Counter.DROP_SSRC_LIMIT] == 6
    # keystream rings only for what admission reserved: one audio, one video per layer
    kinds = [kind for kind, _layer, _ring in dp._legs[pub.leg_id].streams.values()]
    assert len(kinds) == 1 + 2
    assert dp.read_detail_counters()["STREAMS_REFUSED"] == MAX_SSRCS_PER_LEG - 2
    # another leg is not affected
    dp.tc_program.test_run(other.frame(other.sender.protect(rtp(1, 960, 0xB0, bytes(40)))))
    assert stream_states(dp, other.leg_id) == 1
    dp.remove_leg(pub.leg_id)
    assert stream_states(dp, pub.leg_id) == 0
    # declared streams past the reservation get no ring either
    dp.set_publisher(other.leg_id, (0xB0, 0xB1), {0xC0 + i: Layer.HIGH for i in range(5)})
    assert len(dp._legs[other.leg_id].streams) == 3


def confconn(user: str, vstreams: int) -> econn.Message:
    return econn.decode(econn.Message(
        type=econn.CONFCONN, sessid="s1", resp=False, src_userid=user, src_clientid="c1",
        fields={"vstreams": vstreams}).encode().decode())


async def test_join_the_kernel_cannot_serve_gets_status_limit(netns):
    # rings of alice (5 audio + 2 video slots, 1 audio + 2 video streams) end at 2048,
    # bob's would end at 4096, carol's (no video slots) at 3584
    plane = KernelDataPlane((), (40000, 40999), instance=owned_name("admit"),
                            keystream_entries=3600)
    sft = Sft(SftConfig(url="http://sft.example", media_addresses=["127.0.0.1"],
                        media_ports=(42000, 42099)), plane)
    sft.start()
    try:
        assert sft.state()["capacity_remaining"] == 1  # keystream room, not ports or CPU
        conv = "0123456789abcdef0123456789abcdef"
        first = await sft.handle_econn(conv, confconn("alice", 2))
        assert first.http_status == 200 and first.message.type == econn.SETUP
        assert sft.state()["capacity_remaining"] == 0  # alice is reserved, not yet added
        second = await sft.handle_econn(conv, confconn("bob", 2))
        assert second.message.type == econn.CONFCONN
        assert second.message.get("status") == econn.STATUS_LIMIT
        assert len(sft.participants) == 1  # bob got no leg, no port
        assert len(sft.ports.in_use) == 1
        # a smaller join still fits beside alice: the check counts what is asked
        third = await sft.handle_econn(conv, confconn("carol", 0))
        assert third.message.type == econn.SETUP
    finally:
        await sft.stop()
