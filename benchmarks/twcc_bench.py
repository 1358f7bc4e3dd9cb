"""CPU of one second of transport-wide feedback in the controller's thread (not a
test): LEGS legs, each with ARRIVALS arrivals per FEEDBACK_INTERVAL round, as at
200 participants (30 000 media packets/s).

  python  read_transport_arrivals + TransportFeedback.record/send (ArrivalWindow
          and encode_feedback in Python), the path of the userspace and kernel planes;
  native  TransportFeedback.send_from: the engine pops the arrivals into its
          window and writes the packets (engine/src/twcc.c).

Arrivals are real: SRTP packets through NativeDataPlane(workers=0).handle_packet,
untimed; only the feedback rounds are timed (thread CPU).

    .venv/bin/python benchmarks/twcc_bench.py [--legs 200] [--arrivals 15] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sftd.controller import twcc  # noqa: E402
from sftd.controller.dataplane import (  # noqa: E402
    SRTP_AES_CM_128_HMAC_SHA1_80,
    ExtensionIds,
    LegSpec,
    SrtpKeys,
)
from sftd.engine.dataplane import NativeDataPlane  # noqa: E402
from tests.rtpkit import Peer, make_rtp  # noqa: E402


async def measure(mode: str, legs: int, arrivals: int, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    plane = NativeDataPlane(workers=0, dry_run=True)
    transports, peers = [], {}
    ext = ExtensionIds()
    for leg_id in range(1, legs + 1):
        sft_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
        transports.append(sft_t)
        keys = SrtpKeys(SRTP_AES_CM_128_HMAC_SHA1_80, os.urandom(30), os.urandom(30))
        plane.add_leg(LegSpec(leg_id, leg_id, sft_t.get_extra_info("sockname"),
                              ("127.0.0.1", 9), keys, (100,), (200,), ext, sft_t))
        peers[leg_id] = Peer(keys.profile, keys.rx, keys.tx)
    wire = {leg_id: [peer.protect(make_rtp(7, i, i * 960, b"\x01" * 100, pt=111, extensions={
        ext.transport_cc: (i if i % 20 else i + 1).to_bytes(2, "big")}))  # some loss
        for i in range(arrivals * rounds)] for leg_id, peer in peers.items()}
    feedback = twcc.TransportFeedback()
    sent = 0

    def send_rtcp(packet: bytes) -> None:
        nonlocal sent
        sent += 1

    targets = {leg_id: twcc.FeedbackTarget(1, 2, send_rtcp) for leg_id in peers}
    cpu = 0.0
    for r in range(rounds):
        for leg_id, packets in wire.items():
            for data in packets[r * arrivals:(r + 1) * arrivals]:
                plane.handle_packet(leg_id, data)
        started = time.thread_time()
        if mode == "native":
            feedback.send_from(plane, targets.get)
        else:
            feedback.record(plane.read_transport_arrivals())
            feedback.send(targets.get)
        cpu += time.thread_time() - started
    assert sent == legs * rounds, sent
    plane.close()
    for t in transports:
        t.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, default=200)
    parser.add_argument("--arrivals", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for mode in ("python", "native"):
        cpu = min(asyncio.run(measure(mode, args.legs, args.arrivals, args.rounds))
                  for _ in range(3))
        print(f"{mode:7s} {cpu * 1000:7.2f} ms CPU for {args.rounds} rounds of {args.legs} legs "
              f"x {args.arrivals} arrivals")


if __name__ == "__main__":
    main()
