"""Core time per transmitted packet, by transmit path, on a veth pair (not a test).

Many small UDP datagrams, each to another destination (address and port, round
robin over --ndest), leave one veth end in namespace txl-<pid>-s; the other end,
in txl-<pid>-r, runs bpf/src/txsink.bpf.c in driver mode, which counts and drops
them. A veth runs its peer's NAPI (and that XDP program) on the sending CPU, so
the receiving end's work lands on the sender's core too. Per packet the sink
counted:
  sender  = thread + ksoftirqd: the sending thread's CPU time (CLOCK_THREAD_CPUTIME_ID;
            this kernel has no IRQ_TIME_ACCOUNTING, so softirq work run inline at
            its local_bh_enable, the veth peer's NAPI, is in it) plus the pinned
            core's ksoftirqd time during the run (softirq work deferred there);
  core    = the pinned core's whole busy time (/proc/stat: wall - idle - iowait -
            steal), the project's usual figure, which includes other tenants:
            meaningful only when "background busy" is near 0.

Paths (bpf/native/txpaths.c, each writes every payload into its transmit buffer
as the engine's SRTP output would; no crypto):
  udp-sendmmsg   one unconnected UDP socket, sendmmsg of --batch with a msg_name each
  udp-connected  a connected UDP socket per destination, send() per packet
  udp-per-dest   an unconnected socket per destination (a socket per leg), sendto()
  packet-ring    AF_PACKET, TPACKET_V2 TX ring, PACKET_QDISC_BYPASS, send() per batch
  xsk-copy       AF_XDP in copy mode (engine/src/xsk.c), transmit only
  live           BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES over mmapped slots
                 (bpf/src/txlive.bpf.c), one call per batch (live-1 .. live-256);
                 live-64-nohold: without the attachment that keeps the program in
                 the XDP dispatcher

Then every path sends --verify-packets packets once more with the sink recording
each sequence number: missing, duplicated or differing (length, destination,
hash of the frame -- of the UDP payload where the kernel writes the headers)
packets are counted.

    .venv/bin/python benchmarks/tx_bench.py [--seconds 2] [--rounds 3] [--cpu 1]
                                            [--sizes 100,1200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from sftd.bpf import txlive as tx

CLK_TCK = os.sysconf("SC_CLK_TCK")
# (name, path, batch): batch is packets per system call or flush
CASES = (
    ("udp-sendmmsg", "udp-sendmmsg", 64),
    ("udp-connected", "udp-connected", 64),
    ("udp-per-dest", "udp-per-dest", 64),
    ("packet-ring", "packet-ring", 64),
    ("xsk-copy", "xsk-copy", 64),
    ("live-1", "live", 1),
    ("live-16", "live", 16),
    ("live-64", "live", 64),
    ("live-256", "live", 256),
    ("live-64-nohold", "live", 64),
)


def cpu_idle_ticks(cpu: int) -> int:
    """idle + iowait + steal of one CPU, in clock ticks."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return v[3] + v[4] + v[7]
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def ksoftirqd_ns(cpu: int) -> int:
    """CPU time of the core's ksoftirqd so far: softirq work (the veth peer's NAPI)
    that did not run inline in the sending thread."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != f"ksoftirqd/{cpu}":
                        continue
                with open(f"/proc/{pid}/schedstat") as f:
                    return int(f.read().split()[0])
            except OSError:
                continue
    return 0


def veth_errors(ns: str, ifname: str) -> dict[str, int]:
    """The veth's drop and error counters (ethtool -S)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-S", ifname],
                         capture_output=True, text=True).stdout
    counters = {}
    for line in out.splitlines():
        name, _, value = line.strip().partition(": ")
        # not xdp_drops: the sink's own XDP_DROP verdicts
        if ("err" in name or name.endswith("_drops") and "xdp" not in name) and value.isdigit():
            counters[f"{ifname}:{name}"] = int(value)
    return counters


def core_busy_fraction(cpu: int, seconds: float) -> float:
    """How busy the core is while this process sleeps: other tenants."""
    i0, t0 = cpu_idle_ticks(cpu), time.monotonic()
    time.sleep(seconds)
    wall = (time.monotonic() - t0) * CLK_TCK
    return max(0.0, wall - (cpu_idle_ticks(cpu) - i0)) / wall


def measure(sender: tx.Sender, sink: tx.TxSink, path: str, traffic: tx.Traffic, cpu: int,
            kernel_batch: int = 0) -> dict[str, Any]:
    sink.reset()
    topo = sender.topo
    e0 = veth_errors(topo.ns_s, topo.if_s) | veth_errors(topo.ns_r, topo.if_r)
    k0, i0, t0 = ksoftirqd_ns(cpu), cpu_idle_ticks(cpu), time.monotonic()
    r = sender.run(path, traffic, kernel_batch)
    wall_s = time.monotonic() - t0
    busy_s = max(0.0, wall_s - (cpu_idle_ticks(cpu) - i0) / CLK_TCK)
    soft = ksoftirqd_ns(cpu) - k0
    time.sleep(0.05)  # whatever the veth still holds reaches the sink
    got = sink.stats()["packets"]
    e1 = veth_errors(topo.ns_s, topo.if_s) | veth_errors(topo.ns_r, topo.if_r)
    return {"sent": r["sent"], "received": got, "errors": r["errors"],
            "syscalls": r["syscalls"], "wall_s": round(wall_s, 3),
            "sender_ns": (r["thread_ns"] + soft) / got if got else None,
            "thread_ns": r["thread_ns"] / got if got else None,
            "ksoftirqd_ns": soft / got if got else None,
            "core_ns": busy_s * 1e9 / got if got else None,
            "call_us": r["elapsed_ns"] / max(1, r["syscalls"]) / 1e3,
            "veth_drops": {k: v - e0.get(k, 0) for k, v in e1.items() if v - e0.get(k, 0)},
            "mpps": got / wall_s / 1e6}


def verify(sender: tx.Sender, sink: tx.TxSink, path: str, size: int, batch: int,
           packets: int, ndest: int) -> dict[str, Any]:
    t = tx.Traffic(payload_len=size, batch=batch, ndest=ndest, packets=packets)
    sink.configure(True, tx.hash_from(path), (t.dport_base, t.dport_base + ndest - 1))
    sink.reset()
    try:
        sender.run(path, t)
        time.sleep(0.05)
        return tx.compare(sender, sink, path, t)
    finally:
        sink.configure(False, 0, (t.dport_base, t.dport_base + ndest - 1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.sched_setaffinity(0, {args.cpu})
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
    except OSError:
        pass
    pattern = os.urandom(tx.PATTERN_LEN)
    cases = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict[str, Any] = {"cpu": args.cpu, "ndest": args.ndest, "seconds": args.seconds,
                           "rounds": args.rounds, "kernel": os.uname().release, "cases": {}}
    with tx.VethNamespaces(f"txl-{os.getpid()}") as topo:
        with tx.entered(topo.ns_r):
            sink = tx.TxSink(socket.if_nametoindex(topo.if_r))
        try:
            sink.configure(False, 0, (20000, 20000 + args.ndest - 1))
            out["sink_program_ns"] = {
                size: sink.program_ns(tx.expected_frame(topo.mac_s, topo.mac_r, topo.sender_ip,
                                                        "10.79.0.1", 5000, 20000, bytes(size)))
                for size in sizes}
            out["background_busy"] = round(core_busy_fraction(args.cpu, 1.0), 3)
            with tx.entered(topo.ns_s):
                lo = socket.if_nametoindex("lo")
                with tx.TxLive(hold_ifindex=lo) as held, tx.TxLive() as unheld:
                    senders = {True: tx.Sender(topo, pattern, held),
                               False: tx.Sender(topo, pattern, unheld)}
                    for name, path, batch in cases:
                        sender = senders["nohold" not in name]
                        for size in sizes:
                            traffic = tx.Traffic(payload_len=size, batch=batch, ndest=args.ndest,
                                                 seconds=args.seconds)
                            rounds = [measure(sender, sink, path, traffic, args.cpu)
                                      for _ in range(args.rounds)]
                            checked = (verify(sender, sink, path, size, batch,
                                              args.verify_packets, args.ndest)
                                       if args.verify_packets else None)
                            out["cases"][f"{name}/{size}"] = summarize(rounds, checked)
                            print(f"  {name:15} {size:5} B  {row(out['cases'][f'{name}/{size}'])}",
                                  file=sys.stderr, flush=True)
        finally:
            with tx.entered(topo.ns_r):
                sink.close()
    return out


def summarize(rounds: list[dict[str, Any]], checked: dict[str, Any] | None) -> dict[str, Any]:
    def med(key: str) -> float | None:
        vals = [r[key] for r in rounds if r[key] is not None]
        return round(statistics.median(vals), 1) if vals else None

    sent, got = sum(r["sent"] for r in rounds), sum(r["received"] for r in rounds)
    drops: dict[str, int] = {}
    for r in rounds:
        for k, v in r["veth_drops"].items():
            drops[k] = drops.get(k, 0) + v
    result: dict[str, Any] = {
        "sender_ns": med("sender_ns"),
        "sender_ns_min": round(min(r["sender_ns"] or 0 for r in rounds), 1),
        "thread_ns": med("thread_ns"), "ksoftirqd_ns": med("ksoftirqd_ns"),
        "core_ns": med("core_ns"), "call_us": med("call_us"),
        "mpps": round(statistics.median(r["mpps"] for r in rounds), 3), "veth_drops": drops,
        "sent": sent, "received": got, "lost": sent - got,
        "errors": sum(r["errors"] for r in rounds),
        "packets_per_syscall": round(sent / max(1, sum(r["syscalls"] for r in rounds)), 1)}
    if checked is not None:
        result["verify"] = {k: checked[k] for k in ("packets", "missing", "duplicated", "wrong")}
        result["verified"] = checked["missing"] == checked["duplicated"] == checked["wrong"] == 0
    return result


def row(c: dict[str, Any]) -> str:
    v = c.get("verify")
    check = ("-" if v is None else "ok" if c["verified"] else
             f"BAD m{v['missing']} d{v['duplicated']} w{v['wrong']}")
    return (f"{c['sender_ns'] or 0:7.0f} {c['sender_ns_min']:7.0f} {c['thread_ns'] or 0:7.0f} "
            f"{c['ksoftirqd_ns'] or 0:6.0f} {c['core_ns'] or 0:7.0f} {c['mpps']:6.3f} "
            f"{c['packets_per_syscall']:6.1f} {c['call_us'] or 0:8.1f} {c['lost']:7} {check}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=1, help="the sender's (and veth's) core")
    parser.add_argument("--sizes", default="100,1200", help="UDP payload bytes")
    parser.add_argument("--ndest", type=int, default=256, help="distinct destinations")
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--verify-packets", type=int, default=20000,
                        help="packets of the correctness pass per case (0: none)")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("tx_bench: needs root (BPF, network namespaces, AF_XDP, AF_PACKET)")
    print(f"sending core cpu{args.cpu}; columns: sender ns/pkt (median, min), of it thread "
          "and ksoftirqd, core busy ns/pkt, Mpps, packets/call, us/call, lost, verified",
          file=sys.stderr)
    result = run(args)
    if not args.json:
        print(f"\nTransmit paths on veth, {result['ndest']} destinations, kernel "
              f"{result['kernel']}, core cpu{result['cpu']} (background busy "
              f"{result['background_busy']:.1%} before the runs); sink program "
              + ", ".join(f"{s} B: {ns} ns" for s, ns in result["sink_program_ns"].items()))
        print(f"{'path':18} {'bytes':>5}  {'sender':>7} {'min':>7} {'thread':>7} {'ksoft':>6} "
              f"{'core':>7} {'Mpps':>6} {'pk/call':>6} {'us/call':>8} {'lost':>7} verified")
        for key, c in result["cases"].items():
            name, size = key.rsplit("/", 1)
            print(f"{name:18} {size:>5}  {row(c)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
