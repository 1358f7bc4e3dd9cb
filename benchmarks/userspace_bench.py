"""CPU cost of the userspace data plane per forwarded packet (not a test).

One publisher, N subscribers on real loopback UDP sockets; packets are
SRTP-protected up front, then fed to ``UserspaceDataPlane.handle_packet``
(what the leg's socket callback does). Reports process CPU µs per forwarded
packet: unprotect once + per copy rewrite, protect and ``sendto``.

    .venv/bin/python benchmarks/userspace_bench.py [--packets 3000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sftd.controller.dataplane import (  # noqa: E402
    SRTP_AES_CM_128_HMAC_SHA1_80,
    Counter,
    ExtensionIds,
    Layer,
    LegSpec,
    SlotSource,
    SrtpKeys,
    StreamKind,
)
from sftd.controller.userspace import UserspaceDataPlane  # noqa: E402
from tests.rtpkit import Peer, make_rtp, vp8_payload  # noqa: E402


async def run(fanout: int, payload: int, packets: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    plane = UserspaceDataPlane()
    sinks = []
    transports = []
    for leg_id in range(fanout + 1):
        sft_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        sinks.append(sink)
        transports.append(sft_t)
        keys = SrtpKeys(SRTP_AES_CM_128_HMAC_SHA1_80, os.urandom(30), os.urandom(30))
        plane.add_leg(LegSpec(leg_id, 1, sft_t.get_extra_info("sockname"), sink.getsockname(),
                              keys, tuple(range(100, 105)), (200,), ExtensionIds(), sft_t))
        if leg_id == 0:
            publisher = Peer(keys.profile, keys.rx, keys.tx)
    video = payload > 200
    plane.set_publisher(0, () if video else (7,), {7: Layer.HIGH} if video else {})
    kind = StreamKind.VIDEO if video else StreamKind.AUDIO
    for sub in range(1, fanout + 1):
        plane.set_slot(sub, kind, 0, SlotSource(0, csrc=99))
    body = vp8_payload(True, payload) if video else os.urandom(payload)
    wire = [publisher.protect(make_rtp(7, i, i * 960, body, pt=100 if video else 111,
                                       extensions={1: b"\x20"}))
            for i in range(packets)]
    started_cpu, started = time.process_time(), time.perf_counter()
    for data in wire:
        plane.handle_packet(0, data)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    forwarded = plane.read_counters()
    for t in transports:
        t.close()
    for s in sinks:
        s.close()
    sent = forwarded[Counter.TX_PACKETS]
    return {"fanout": fanout, "payload": payload, "forwarded": sent,
            "cpu_us_per_forwarded": cpu / sent * 1e6, "wall_us_per_forwarded": wall / sent * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [asyncio.run(run(fanout, payload, args.packets))
            for payload in (100, 1200) for fanout in (1, 9, 49)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'payload':>8} {'fan-out':>8} {'forwarded':>10} {'CPU µs/pkt':>11} {'wall µs/pkt':>12}")
    for r in rows:
        print(f"{r['payload']:>8} {r['fanout']:>8} {r['forwarded']:>10} "
              f"{r['cpu_us_per_forwarded']:>11.2f} {r['wall_us_per_forwarded']:>12.2f}")


if __name__ == "__main__":
    main()
