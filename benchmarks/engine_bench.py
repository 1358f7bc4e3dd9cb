"""CPU per egress copy of the native engine beside the userspace plane (not a test).

One publisher, N subscribers on real loopback UDP sockets; packets are
SRTP-protected up front. Modes:
  userspace      UserspaceDataPlane.handle_packet (Python, libsrtp), as the
                 leg's socket callback calls it;
  native-inline  NativeDataPlane(workers=0).handle_packet: the engine in the
                 caller's thread, copies sent with sendmmsg;
  native-dry     the same without the send syscalls: unprotect, rewrite, protect;
  native-worker  NativeDataPlane(workers=1): the publisher's datagrams go over
                 loopback to the leg's socket, the worker thread reads
                 (recvmmsg), forwards and sends; the worker's CPU is counted
                 (the publisher stays at most BACKLOG packets ahead of it).
  veth-udp       as native-worker, but the publisher and the subscribers' sinks
                 sit in a network namespace behind a veth pair (root);
  veth-xdp       the same with --native-io xdp: the publisher's RTP is steered
                 into the engine's AF_XDP port, copies leave from UMEM frames.
Reports CPU ns per egress copy (unprotect and the per-packet share amortised).
Every leg uses one SRTP profile (--profile: AES-CM/HMAC-SHA1-80 by default).

    .venv/bin/python benchmarks/engine_bench.py [--packets 4000] [--profile gcm128] [--json]
                                                [--modes veth-udp veth-xdp]
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
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
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
from sftd.engine.dataplane import NativeDataPlane  # noqa: E402
from tests.dataplane.planes import (  # noqa: E402
    KERNEL_PORTS,
    namespace_client_socket,
    veth_clients,
)
from tests.rtpkit import Peer, make_rtp, vp8_payload  # noqa: E402

MODES = ("userspace", "native-inline", "native-dry", "native-worker", "veth-udp", "veth-xdp")
DEFAULT_MODES = MODES[:4]  # the veth modes need root
THROUGH_WORKER = ("native-worker", "veth-udp", "veth-xdp")
PROFILES = {"cm": (SRTP_AES_CM_128_HMAC_SHA1_80, 30), "gcm128": (SRTP_AEAD_AES_128_GCM, 28),
            "gcm256": (SRTP_AEAD_AES_256_GCM, 44)}  # name: (profile, master key + salt)
PUBLISHER = 1
# packets the publisher may be ahead of the worker: within a leg socket's buffer
# and an AF_XDP port's 2048-frame receive ring
BACKLOG = 512


def make_plane(mode: str, veth: Any) -> Any:
    if mode == "userspace":
        return UserspaceDataPlane()
    if veth is not None:
        return NativeDataPlane(workers=1, io=mode.removeprefix("veth-"),
                               interfaces=(veth.host_if,), media_ports=KERNEL_PORTS,
                               instance=f"{veth.netns}b")
    return NativeDataPlane(workers=1 if mode == "native-worker" else 0,
                           dry_run=mode == "native-dry")


def sink_socket(veth: Any) -> socket.socket:
    """A socket of the publisher's or a subscriber's host (the namespace on veth)."""
    if veth is not None:
        return namespace_client_socket(veth)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def run(mode: str, fanout: int, payload: int, packets: int,
              profile: str = "cm") -> dict[str, Any]:
    veth = veth_clients("xe") if mode.startswith("veth-") else None
    try:
        return await _run(mode, fanout, payload, packets, profile, veth)
    finally:
        if veth is not None:
            veth.__exit__()


async def _run(mode: str, fanout: int, payload: int, packets: int, profile: str,
               veth: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    plane = make_plane(mode, veth)
    sinks, transports = [], []
    for leg_id in range(1, fanout + 2):  # leg ids start at 1
        local = ("127.0.0.1", 0) if veth is None else (veth.host_ip, KERNEL_PORTS[0] + leg_id)
        sft_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=local)
        # the publisher's BACKLOG must not overflow the leg's socket
        sft_t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        sink = sink_socket(veth)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        sinks.append(sink)
        transports.append(sft_t)
        srtp_profile, master_len = PROFILES[profile]
        keys = SrtpKeys(srtp_profile, os.urandom(master_len), os.urandom(master_len))
        plane.add_leg(LegSpec(leg_id, 1, sft_t.get_extra_info("sockname"), sink.getsockname(),
                              keys, tuple(range(100, 105)), (200,), ExtensionIds(), sft_t))
        if leg_id == PUBLISHER:
            publisher = Peer(keys.profile, keys.rx, keys.tx)
            publisher_sink, publisher_local = sink, sft_t.get_extra_info("sockname")
    video = payload > 200
    plane.set_publisher(PUBLISHER, () if video else (7,), {7: Layer.HIGH} if video else {})
    kind = StreamKind.VIDEO if video else StreamKind.AUDIO
    for sub in range(PUBLISHER + 1, PUBLISHER + fanout + 1):
        plane.set_slot(sub, kind, 0, SlotSource(PUBLISHER, csrc=99))
    body = vp8_payload(True, payload) if video else os.urandom(payload)
    wire = [publisher.protect(make_rtp(7, i, i * 960, body, pt=100 if video else 111,
                                       extensions={1: b"\x20"}))
            for i in range(packets)]
    if hasattr(plane, "sync"):
        plane.sync()
    started_cpu, started_main = time.process_time(), time.thread_time()
    started = time.perf_counter()
    if mode in THROUGH_WORKER:  # through the socket: the main thread only sends
        for i, data in enumerate(wire):
            publisher_sink.sendto(data, publisher_local)
            if i % 64 == 63:  # at most BACKLOG ahead of the worker: nothing is dropped
                while i + 1 - plane.read_counters()[Counter.RX_PACKETS] > BACKLOG and \
                        time.perf_counter() - started < 10:
                    time.sleep(0.0002)
        plane.sync()
        while plane.read_counters()[Counter.RX_PACKETS] < packets and \
                time.perf_counter() - started < 10:
            time.sleep(0.001)
        cpu = (time.process_time() - started_cpu) - (time.thread_time() - started_main)
    else:
        for data in wire:
            plane.handle_packet(PUBLISHER, data)
        cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started
    counters = plane.read_counters()
    details = plane.read_detail_counters()
    plane.close()
    for t in transports:
        t.close()
    for s in sinks:
        s.close()
    copies = counters[Counter.TX_PACKETS]
    return {"mode": mode, "profile": profile, "fanout": fanout, "payload": payload,
            "copies": copies,
            "received": counters[Counter.RX_PACKETS],
            "copies_by_af_xdp": details.get("XDP_TX", 0),
            "af_xdp": {k: v for k, v in details.items() if k.startswith(("XDP_", "STEER_")) and v},
            "cpu_ns_per_copy": cpu / max(copies, 1) * 1e9,
            "wall_ns_per_copy": wall / max(copies, 1) * 1e9,
            # native: copies per sendmmsg (each subscriber is its own socket, so a call
            # carries what one receive batch had for that subscriber)
            "copies_per_send_call": copies / details["TX_BATCHES"]
            if details.get("TX_BATCHES") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=4000)
    parser.add_argument("--fanout", type=int, nargs="*", default=[1, 9, 49])
    parser.add_argument("--modes", nargs="*", default=list(DEFAULT_MODES), choices=MODES)
    parser.add_argument("--profile", default="cm", choices=PROFILES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [asyncio.run(run(mode, fanout, payload, args.packets, args.profile))
            for payload in (100, 1200) for fanout in args.fanout for mode in args.modes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'payload':>8} {'fan-out':>8} {'mode':>14} {'copies':>8} {'CPU ns/copy':>12} "
          f"{'wall ns/copy':>13} {'copies/sendmmsg':>16}")
    for r in rows:
        per_call = r["copies_per_send_call"]
        print(f"{r['payload']:>8} {r['fanout']:>8} {r['mode']:>14} {r['copies']:>8} "
              f"{r['cpu_ns_per_copy']:>12.0f} {r['wall_ns_per_copy']:>13.0f} "
              f"{'-' if per_call is None else f'{per_call:.1f}':>16}")


if __name__ == "__main__":
    main()
