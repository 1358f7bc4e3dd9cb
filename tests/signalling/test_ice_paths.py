"""Paths a client's ICE agent checks after ours completed (real sockets on
loopback): a controlled browser picks its own pair for DTLS and media, which
may be one whose check we cancelled when ICE completed. Such a path must get
validated by a check of ours, or the client's DTLS never reaches us."""

from __future__ import annotations

import asyncio

from aioice.ice import CandidatePair

from sftd.controller.leg import LegIceConnection, PortRange
from tests.conftest import free_udp_range


def _agent(addresses: list[str], controlling: bool) -> LegIceConnection:
    agent = LegIceConnection(ports=PortRange(*free_udp_range()), addresses=addresses,
                             advertised=None, on_media=lambda data, protocol: None)
    agent.ice_controlling = controlling
    return agent


async def test_a_path_checked_after_completion_gets_validated() -> None:
    sft = _agent(["127.0.0.1"], controlling=True)
    client = _agent(["127.0.0.1", "127.0.0.2"], controlling=False)
    try:
        await sft.gather_candidates()
        await client.gather_candidates()
        sft.remote_username, sft.remote_password = client.local_username, client.local_password
        client.remote_username, client.remote_password = sft.local_username, sft.local_password
        first, second = client.local_candidates
        await sft.add_remote_candidate(first)  # the path ICE completes on
        await sft.add_remote_candidate(None)
        for candidate in sft.local_candidates:
            await client.add_remote_candidate(candidate)
        await client.add_remote_candidate(None)
        await asyncio.wait_for(asyncio.gather(sft.connect(), client.connect()), 10)

        # the client's other path, as ICE left it when it completed: a check of
        # ours cancelled in progress (aioice never restarts it)
        (protocol,) = sft._protocols
        sft._remote_candidates.append(second)
        stuck = CandidatePair(protocol, second)
        stuck.state = CandidatePair.State.IN_PROGRESS
        sft._check_list.append(stuck)
        other = (second.host, second.port)
        assert not sft.validated(other, protocol)

        # the client checks that path (and would send its DTLS there next)
        client_socket = next(p for p in client._protocols
                             if p.local_candidate.host == "127.0.0.2")
        client_pair = CandidatePair(client_socket, sft.local_candidates[0])
        await asyncio.wait_for(client.check_start(client_pair), 10)
        for _ in range(100):
            if sft.validated(other, protocol):
                break
            await asyncio.sleep(0.02)
        assert sft.validated(other, protocol), [(p, p.state) for p in sft._check_list]
        assert stuck.state == CandidatePair.State.SUCCEEDED
        nominated = sft._nominated[1]
        assert nominated.remote_addr == (first.host, first.port)  # a check, not a nomination
    finally:
        await client.close()
        await sft.close()
