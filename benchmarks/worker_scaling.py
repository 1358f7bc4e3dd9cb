"""How the native engine scales with workers (`-w N`), on the cores this machine has (not a test).

W workers, one conference per worker (the engine places a conference's legs on
one worker), each with one publisher and F subscribers. The main thread hands
every publisher's SRTP packets to the engine round robin (``handle_packet``),
at most BACKLOG per worker ahead of it; each worker unprotects, rewrites and
protects a copy per subscriber, without the send system calls (``dry_run``),
so the figure is the engine's own work and what its workers share: the
placement, the command queues, the leg table, memory. Reported per W:

  copies/s (wall)     what the workers produced together, the feeder included;
  worker ns/copy      the workers' CPU per copy (process CPU minus the feeder's);
  scaling             copies/s against W = 1, and W x (ns/copy at W = 1 ÷ ns/copy
                      at W): the second removes the feeder, which shares the cores.

    .venv/bin/python benchmarks/worker_scaling.py [--workers 1 2] [--fanout 9]
                                                  [--payload 1200] [--packets 100000]
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
from typing import Any

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
from sftd.engine.dataplane import NativeDataPlane  # noqa: E402
from tests.rtpkit import Peer, make_rtp, vp8_payload  # noqa: E402

BACKLOG = 256  # packets a worker may be behind the feeder


async def run(workers: int, fanout: int, payload: int, packets: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    plane = NativeDataPlane(workers=workers, dry_run=True)
    transports, sinks, publishers = [], [], []
    video = payload > 200
    try:
        for conf in range(workers):
            first = conf * (fanout + 1) + 1
            for leg_id in range(first, first + fanout + 1):
                t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=("127.0.0.1", 0))
                sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sink.bind(("127.0.0.1", 0))
                transports.append(t)
                sinks.append(sink)
                keys = SrtpKeys(SRTP_AES_CM_128_HMAC_SHA1_80, os.urandom(30), os.urandom(30))
                plane.add_leg(LegSpec(leg_id, conf + 1, t.get_extra_info("sockname"),
                                      sink.getsockname(), keys, tuple(range(100, 105)), (200,),
                                      ExtensionIds(), t))
                if leg_id == first:
                    publisher = Peer(keys.profile, keys.rx, keys.tx)
            plane.set_publisher(first, () if video else (7,),
                                {7: Layer.HIGH} if video else {})
            kind = StreamKind.VIDEO if video else StreamKind.AUDIO
            for sub in range(first + 1, first + fanout + 1):
                plane.set_slot(sub, kind, 0, SlotSource(first, csrc=99))
            body = vp8_payload(True, payload) if video else os.urandom(payload)
            wire = [publisher.protect(make_rtp(7, i, i * 960, body, pt=100 if video else 111,
                                               extensions={1: b"\x20"}))
                    for i in range(packets)]  # each once: SRTP refuses replays
            publishers.append((first, wire))
        plane.sync()
        placed = sorted(plane._legs[first].worker for first, _ in publishers)
        if placed != list(range(workers)):
            raise RuntimeError(f"conferences placed on workers {placed}, not one each")
        sent = 0
        started_cpu, started_main = time.process_time(), time.thread_time()
        started = time.perf_counter()
        for i in range(packets):
            for first, wire in publishers:
                plane.handle_packet(first, wire[i])
            sent += len(publishers)
            if i % 32 == 31:
                while sent - plane.read_counters()[Counter.RX_PACKETS] > BACKLOG * workers:
                    time.sleep(0.0001)
        plane.sync()
        wall = time.perf_counter() - started
        worker_cpu = (time.process_time() - started_cpu) - (time.thread_time() - started_main)
        copies = plane.read_counters()[Counter.TX_PACKETS]
        return {"workers": workers, "fanout": fanout, "payload": payload, "packets": sent,
                "copies": copies, "drops": sent * fanout - copies, "copies_per_s": copies / wall,
                "worker_ns_per_copy": worker_cpu / max(copies, 1) * 1e9,
                "worker_cpu_per_s": worker_cpu / wall}
    finally:
        plane.close()
        for t in transports:
            t.close()
        for s in sinks:
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--fanout", type=int, default=9)
    parser.add_argument("--payload", type=int, default=1200)
    parser.add_argument("--packets", type=int, default=100_000, help="per publisher")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [asyncio.run(run(w, args.fanout, args.payload, args.packets)) for w in args.workers]
    base = rows[0]
    for r in rows:
        r["scaling_wall"] = r["copies_per_s"] / base["copies_per_s"]
        r["scaling_cpu"] = r["workers"] / base["workers"] * \
            base["worker_ns_per_copy"] / r["worker_ns_per_copy"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'workers':>7} {'copies/s':>10} {'worker ns/copy':>15} {'worker CPU':>11} "
          f"{'scaling (wall)':>15} {'scaling (CPU)':>14}")
    for r in rows:
        print(f"{r['workers']:>7} {r['copies_per_s']:>10.0f} {r['worker_ns_per_copy']:>15.0f} "
              f"{r['worker_cpu_per_s']:>11.2f} {r['scaling_wall']:>15.2f} "
              f"{r['scaling_cpu']:>14.2f}")


if __name__ == "__main__":
    main()
