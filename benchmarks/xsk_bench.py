"""Packets per second through AF_XDP rx -> tx echo on a veth pair (not a test).

Two veth ends in this namespace (no IP addresses: every packet moves through
AF_XDP). On end A the steering program (bpf/src/steer.bpf.c) redirects a leg's
RTP into an AF_XDP port whose C loop copies each payload into a transmit frame
back towards B (the engine's per-packet I/O work without SRTP). On end B a
second steering program and port send RTP-shaped packets with a bounded window
in flight and count the echoes. Both loops sleep in poll() when idle unless
--busy-poll; the figure includes the kernel's veth work on the same CPUs.

    .venv/bin/python benchmarks/xsk_bench.py [--seconds 5] [--size 200] [--window 256]
                                             [--busy-poll] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sftd.bpf.steer import SteerCounter, Steering
from sftd.engine.xsk import UdpTemplate, XskPort

A_IP, B_IP = "100.77.14.1", "100.77.14.2"
A_PORT, B_PORT = 40000, 5000


def mac(ifname: str) -> bytes:
    return bytes.fromhex(Path(f"/sys/class/net/{ifname}/address").read_text().strip()
                         .replace(":", ""))


def run(seconds: float, size: int, window: int, ring_size: int,
        busy_poll: bool = False) -> dict[str, Any]:
    base = f"xkb{os.getpid() % 100000}"
    a_if, b_if = f"{base}a", f"{base}b"
    subprocess.run(["ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if], check=True)
    try:
        for ifname in (a_if, b_if):
            subprocess.run(["ip", "link", "set", ifname, "up"], check=True)
        with Steering(a_if, (A_PORT, A_PORT), f"{base}a") as steer_a, \
                Steering(b_if, (B_PORT, B_PORT), f"{base}b") as steer_b, \
                XskPort(a_if, 0, ring_size=ring_size) as port_a, \
                XskPort(b_if, 0, ring_size=ring_size) as port_b:
            port_a.attach(steer_a.xskmap_fd)
            port_b.attach(steer_b.xskmap_fd)
            steer_a.add_leg((A_IP, A_PORT), (B_IP, B_PORT), leg_id=1)
            steer_b.add_leg((B_IP, B_PORT), (A_IP, A_PORT), leg_id=1)
            to_b = UdpTemplate(mac(a_if), mac(b_if), (A_IP, A_PORT), (B_IP, B_PORT))
            to_a = UdpTemplate(mac(b_if), mac(a_if), (B_IP, B_PORT), (A_IP, A_PORT))

            duration_ns = int(seconds * 1e9)
            echoed: list[int] = []
            echo = threading.Thread(target=lambda: echoed.append(port_a.echo(
                to_b, duration_ns + 300_000_000, busy_poll)))
            echo.start()
            result = port_b.blast(to_a, size, window, duration_ns, busy_poll)
            echo.join()
            elapsed = result["elapsed_ns"] / 1e9
            return {
                "seconds": round(elapsed, 2), "payload_bytes": size, "window": window,
                "ring_size": ring_size, "busy_poll": busy_poll, "zerocopy": port_a.zerocopy,
                "native_xdp": steer_a.native,
                "sent": result["sent"], "echoed": echoed[0], "received": result["received"],
                "echo_pps": round(result["received"] / elapsed),
                "echo_mbit_s": round(result["received"] * size * 8 / elapsed / 1e6, 1),
                "redirected_a": steer_a.counters()[SteerCounter.REDIRECT],
                "port_a": {k: v for k, v in port_a.stats().items() if v},
                "port_b": {k: v for k, v in port_b.stats().items() if v},
            }
    finally:
        subprocess.run(["ip", "link", "del", a_if], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=200, help="UDP payload bytes (>= 20)")
    parser.add_argument("--window", type=int, default=256, help="packets in flight at most")
    parser.add_argument("--ring-size", type=int, default=2048)
    parser.add_argument("--busy-poll", action="store_true",
                        help="never sleep in poll() (one core per loop; else they share)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("xsk_bench: needs root (XDP, AF_XDP, veth)")
    result = run(args.seconds, args.size, args.window, args.ring_size, args.busy_poll)
    if args.json:
        print(json.dumps(result))
        return
    mode = "zero-copy" if result["zerocopy"] else "copy mode"
    print(f"AF_XDP echo on veth ({mode}, XDP {'driver' if result['native_xdp'] else 'generic'}"
          f" mode, {'busy polling' if result['busy_poll'] else 'poll() when idle'}), "
          f"{result['payload_bytes']}-byte payloads, window {result['window']}:")
    print(f"  {result['echo_pps']:,} packets/s round trip ({result['echo_mbit_s']} Mbit/s "
          f"payload), {result['received']:,} of {result['sent']:,} sent came back "
          f"in {result['seconds']} s")
    print(f"  port A {result['port_a']}")
    print(f"  port B {result['port_b']}")


if __name__ == "__main__":
    main()
