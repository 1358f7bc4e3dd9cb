"""Error paths of the real Sft: a failing data-plane call while a participant
ends leaves no ghost in the conference and no bound port."""

from __future__ import annotations

import socket

import pytest

from sftd import econn
from sftd.controller.sft import Sft, SftConfig
from sftd.controller.userspace import UserspaceDataPlane

pytestmark = pytest.mark.timeout(30)

CONV = "0123456789abcdef0123456789abcdef"


def confconn(user: str) -> econn.Message:
    return econn.decode(econn.Message(
        type=econn.CONFCONN, sessid="s1", resp=False, src_userid=user, src_clientid="c1",
        fields={"vstreams": 2}).encode().decode())


def started_sft(media_ports: tuple[int, int]) -> tuple[Sft, UserspaceDataPlane]:
    plane = UserspaceDataPlane()
    sft = Sft(SftConfig(url="http://sft.example", media_addresses=["127.0.0.1"],
                        media_ports=media_ports), plane)
    sft.start()
    return sft, plane


async def test_failing_remove_leg_still_frees_port_and_participant():
    sft, plane = started_sft((41500, 41599))
    try:
        for user in ("alice", "bob"):
            result = await sft.handle_econn(CONV, confconn(user))
            assert result.http_status == 200 and result.message.type == econn.SETUP
        alice = next(p for p in sft.participants.values() if p.userid == "alice")
        port = alice.leg.ice.port
        assert port in sft.ports.in_use

        def remove_leg(leg_id: int) -> None:  # the injected fault
            raise RuntimeError("injected: data plane refused remove_leg")

        plane.remove_leg = remove_leg
        await sft.end_participant(alice, "test")
        assert alice.key not in sft.participants and alice.leg.leg_id not in sft.by_leg
        conference = sft.conferences[CONV]
        assert [p.userid for p in conference.participants] == ["bob"]  # no ghost
        assert port not in sft.ports.in_use
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))  # the socket is closed: the port binds again
    finally:
        plane.__dict__.pop("remove_leg", None)
        await sft.stop()


async def test_ended_conference_frees_its_counter_and_id():
    sft, plane = started_sft((41600, 41699))
    try:
        convs = ["a" * 32, "b" * 32, "c" * 32]
        await sft.handle_econn(convs[0], confconn("alice"))
        await sft.handle_econn(convs[1], confconn("bob"))
        first = sft.conferences[convs[0]].conference_id
        plane._conference_packets[first] += 5  # as if it had forwarded
        alice = next(p for p in sft.participants.values() if p.userid == "alice")
        await sft.end_participant(alice, "test")
        assert first not in plane.read_conference_packets()
        await sft.handle_econn(convs[2], confconn("carol"))
        assert sft.conferences[convs[2]].conference_id == first  # ids stay few
    finally:
        await sft.stop()
