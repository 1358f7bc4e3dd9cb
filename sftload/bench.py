"""``sft-bench``: participants per vCPU, measured side by side (docs/benchmark.md).

For each system (``userspace``/``kernel``/``native``/``native-xdp`` data plane of
sftd -- native with the legs' UDP sockets or with AF_XDP I/O --, ``janus``
VideoRoom as the peer) in the same run: start it in its own network namespace
pinned to core 0, start ``sft-load --control`` in a second namespace pinned to
core 1, ramp the number of participants (whole conferences at a time), and at
each point measure over ``--duration`` seconds, between two drained pauses:

  * CPU-seconds per second on the SFT's core: user+nice+system+irq+softirq of
    that CPU from /proc/stat (kernel fast-path work is softirq, not charged to
    any process), plus the SFT process's own times for comparison;
  * egress packets/s, loss (exact: every sent packet is received, or counted
    lost per video source, per audio slot sequence gap, or at the SFT ingress),
    forwarding latency p50/p99 from sampled, decrypted packets (what the SFT
    adds: from the moment the generator built the packet, just before sending
    it, to the kernel's arrival stamp on the generator's socket; "e2e" is from
    the packet's due time to the generator's read, its own lateness included),
    join time;
  * memory: SFT RSS, BPF map bytes (memlock of the SFT's map fds).

participants per vCPU = N / CPU-seconds-per-second at the largest N whose loss
is <= 0.1 % with every sampled packet decrypting.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Topology

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "sft_bench_results"
LOSS_BAR = 0.001
# A point whose forwarding latency p99 exceeds this is queueing, not keeping up,
# even when nothing is lost yet: it does not count as capacity.
LATENCY_P99_BAR_US = 50_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
NICE = "-20"  # shared machines: keep other tenants from preempting the SFT and generator


# ---------------------------------------------------------------- CPU/memory
def cpu_ticks(cpu: int) -> dict[str, int]:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
                return dict(zip(names, v))
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def busy(t: dict[str, int]) -> int:
    return t["user"] + t["nice"] + t["system"] + t["irq"] + t["softirq"]


def not_idle(a: dict[str, int], b: dict[str, int], wall_ticks: float) -> float:
    """Core time between two samples that was neither idle nor stolen. With tick
    accounting and NO_HZ idle (this kernel), idle and iowait are measured exactly
    while user/system/softirq are sampled by a tick that does not run when an
    interrupt wakes an idle core, serves its softirq and sleeps again, which is
    how the kernel fast path runs: the tick-sampled sum misses most of it."""
    idle = b["idle"] + b["iowait"] + b["steal"] - a["idle"] - a["iowait"] - a["steal"]
    return max(0.0, wall_ticks - idle)


def proc_ticks(pid: int) -> int:
    """utime+stime of a process, all threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError):
        return 0


def rss_bytes(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bpf_map_bytes(pid: int) -> int:
    """memlock of every BPF map the process holds an fd to, each map once (a map
    opened twice, e.g. from the object and from its pin, has two fds)."""
    by_map: dict[int, int] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:bpf-map":
                continue
            info = dict(line.split(":", 1) for line in open(f"/proc/{pid}/fdinfo/{fd.name}")
                        if ":" in line)
            by_map[int(info["map_id"])] = int(info["memlock"])
        except (OSError, KeyError, ValueError):
            continue
    return sum(by_map.values())


def softnet_drops() -> list[int]:
    out = []
    try:
        for line in open("/proc/net/softnet_stat"):
            out.append(int(line.split()[1], 16))
    except OSError:
        pass
    return out


@dataclass
class CpuSample:
    t: float
    sft: dict[str, int]
    gen: dict[str, int]
    proc: int
    softnet: list[int]

    @classmethod
    def take(cls, sft_cpu: int, gen_cpu: int, pid: int) -> CpuSample:
        return cls(time.monotonic(), cpu_ticks(sft_cpu), cpu_ticks(gen_cpu), proc_ticks(pid),
                   softnet_drops())


def cpu_between(a: CpuSample, b: CpuSample) -> dict[str, float]:
    wall = b.t - a.t

    def rate(x: float) -> float:
        return round(x / CLK_TCK / wall, 4)

    softirq = b.sft["softirq"] - a.sft["softirq"] + b.sft["irq"] - a.sft["irq"]
    return {
        # core 0 not idle, exact (see not_idle): what participants per vCPU divides by
        "sft_core_busy": rate(not_idle(a.sft, b.sft, wall * CLK_TCK)),
        "gen_core_busy": rate(not_idle(a.gen, b.gen, wall * CLK_TCK)),
        # tick-sampled: process (user+system, all threads) + irq/softirq of its core
        "sft": rate(b.proc - a.proc + softirq),
        "sft_core": rate(busy(b.sft) - busy(a.sft)),
        "sft_core_softirq": rate(softirq),
        "sft_core_system": rate(b.sft["system"] - a.sft["system"]),
        "sft_core_user": rate(b.sft["user"] + b.sft["nice"] - a.sft["user"] - a.sft["nice"]),
        "sft_process": rate(b.proc - a.proc),
        "gen_core": rate(busy(b.gen) - busy(a.gen)),
        "softnet_drops": sum(b.softnet) - sum(a.softnet) if a.softnet and b.softnet else 0,
        "wall": round(wall, 3),
    }


# ---------------------------------------------------------------- systems
class System:
    name = "?"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path

    def __init__(self, topo: Topology, workdir: Path) -> None:
        self.topo = topo
        self.workdir = workdir

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def load_args(self) -> list[str]:
        raise NotImplementedError

    def memory(self) -> dict[str, int]:
        return {"rss": rss_bytes(self.pid)}

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def load_module(self) -> str:
        """The generator module run with ``--control`` against this system."""
        return "sftd.sftload.load"

    def describe(self) -> dict[str, Any]:
        return {}

    def _spawn(self, argv: list[str], ready: str | Callable[[], bool],
               timeout: float = 30) -> None:
        self.log_path = self.workdir / f"{self.name}.log"
        cmd = [*self.topo.exec_prefix(self.topo.ns_sft), "nice", "-n", NICE, "taskset", "-c",
               str(self.topo.sft_cpu), *argv]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n"
                                   f"{self.log_tail()}")
            if callable(ready):
                if ready():
                    return
            elif ready in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")


# system name -> sftd's --dataplane and its further options
SFT_SYSTEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "userspace": ("userspace", ()),
    "kernel": ("kernel", ()),
    "native": ("native", ("--native-io", "udp")),
    "native-xdp": ("native", ("--native-io", "xdp")),
}


class SftSystem(System):
    def __init__(self, topo: Topology, workdir: Path, name: str) -> None:
        super().__init__(topo, workdir)
        self.name = name
        self.dataplane, self.options = SFT_SYSTEMS[name]
        self.url = f"http://{topo.ip_sft}:8585"
        self.metrics_url = f"http://{topo.ip_sft}:49090/metrics"

    def start(self) -> None:
        self._spawn([str(VENV_BIN / "sftd"), "-I", self.topo.ip_sft, "-p", "8585",
                     "-M", self.topo.ip_sft, "-r", "49090", "-O", self.topo.if_sft,
                     "--media-ports", "20000-60000", "--dataplane", self.dataplane,
                     "--instance", f"bench{self.topo.tag}", "--setup-timeout", "30",
                     *self.options],
                    ready="listening")

    def load_args(self) -> list[str]:
        return ["--url", self.url, "--metrics-url", self.metrics_url]

    def memory(self) -> dict[str, int]:
        out = super().memory()
        if self.dataplane == "kernel":
            out["bpf_map_bytes"] = bpf_map_bytes(self.pid)
        return out


def make_system(name: str, topo: Topology, workdir: Path) -> System:
    if name in SFT_SYSTEMS:
        return SftSystem(topo, workdir, name)
    if name == "janus":
        from .janus import JanusSystem

        return JanusSystem(topo, workdir)
    raise ValueError(f"unknown system {name!r} ({', '.join(SFT_SYSTEMS)}, janus)")


def system_available(name: str) -> tuple[bool, str]:
    if name == "userspace":
        return True, "ok"
    if name == "kernel":
        try:
            sys.path.insert(0, str(ROOT))
            from sftd.bpf.dataplane import kernel_available

            return kernel_available()
        except Exception as exc:  # not built / not importable yet
            return False, f"sftd.bpf.dataplane unavailable: {exc}"
    if name in ("native", "native-xdp"):
        from sftd.engine.dataplane import native_available

        if name == "native-xdp" and os.geteuid() != 0:
            return False, "AF_XDP and XDP need root"
        return native_available()
    if name == "janus":
        from . import janus

        return janus.available()
    return False, "unknown system"


# ---------------------------------------------------------------- generator
def sink_for(system: System, sink: str) -> str:
    """The generator's receive sink for ``system``: Janus's generator has only the
    socket one (the sink changes the generator's cost, never the SFT's)."""
    return sink if system.load_module() == "sftd.sftload.load" else "socket"


class Generator:
    """``sft-load --control`` in the generator namespace, pinned to its core."""

    def __init__(self, topo: Topology, system: System, workdir: Path, conference_size: int,
                 sample_every: int, sink: str = "socket",
                 samples_per_second: float = 0) -> None:
        self.log_path = workdir / f"load-{system.name}.log"
        cmd = [*topo.exec_prefix(topo.ns_gen), "nice", "-n", NICE, "taskset", "-c",
               str(topo.gen_cpu),
               sys.executable, "-m", system.load_module(), "--control",
               "--local-address", topo.ip_gen, "--conference-size", str(conference_size),
               "--sample-every", str(sample_every), *system.load_args()]
        self.sink = sink_for(system, sink)
        if self.sink != "socket":
            cmd += ["--sink", self.sink, "--samples-per-second", str(samples_per_second)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, cwd=ROOT)
        self.expect("ready", 60)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"generator silent for {timeout}s:\n{self.log_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"generator exited:\n{self.log_tail()}")
        return json.loads(line)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        msg = self.read(timeout)
        if msg.get("event") != event:
            raise RuntimeError(f"generator: expected {event}, got {msg}")
        return msg

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send({"cmd": "quit"})
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# ---------------------------------------------------------------- ramp
def ramp_points(max_participants: int, size: int, quick: bool,
                min_participants: int = 0) -> list[int]:
    """Conference counts to reach at each point (the first at least min_participants)."""
    if quick:
        return [1, 2]
    top = max(1, max_participants // size)
    first = min(top, max(1, -(-min_participants // size)))
    pts = [first]
    seq = [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256]
    for k in seq:
        if first < k <= top:
            pts.append(k)
    if pts[-1] != top:
        pts.append(top)
    return pts


@dataclass
class Run:
    system: str
    points: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    stopped: str | None = None


def run_system(name: str, topo: Topology, args: argparse.Namespace, workdir: Path,
               bar: Any) -> Run:
    run = Run(name)
    system = make_system(name, topo, workdir)
    run.config = {**system.describe(), "sink": sink_for(system, args.sink)}
    gen: Generator | None = None
    try:
        system.start()
        gen = Generator(topo, system, workdir, args.conference_size, args.sample_every,
                        args.sink, args.samples_per_second)
        a = CpuSample.take(topo.sft_cpu, topo.gen_cpu, system.pid)
        time.sleep(2)
        run.baseline = cpu_between(a, CpuSample.take(topo.sft_cpu, topo.gen_cpu, system.pid))
        have = 0
        for target in ramp_points(args.max_participants, args.conference_size, args.quick,
                                  args.min_participants):
            bar.set_description(f"{name}: {target * args.conference_size} participants")
            gen.send({"cmd": "add", "conferences": target - have, "warmup": args.warmup})
            added = gen.expect("added", 600)
            have = target
            gen.send({"cmd": "measure", "duration": args.duration})
            gen.expect("window_start", 60)
            a = CpuSample.take(topo.sft_cpu, topo.gen_cpu, system.pid)
            gen.expect("window_end", args.duration + 60)
            b = CpuSample.take(topo.sft_cpu, topo.gen_cpu, system.pid)
            res = gen.expect("result", 120)
            res.pop("event", None)
            cpu = cpu_between(a, b)
            point = summarise_point(res, cpu, added, system.memory())
            run.points.append(point)
            bar.update(1)
            bar.write(point_line(name, point))
            if point["loss"] > 0.01 or added.get("failed"):
                run.stopped = (f"stopped: loss {point['loss']:.2%}, "
                               f"{added.get('failed', 0)} failed joins")
                break
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        bar.write(f"{name}: {run.error}\n{system.log_tail(15)}")
    finally:
        if gen is not None:
            gen.close()
        system.stop()
    return run


def summarise_point(res: dict[str, Any], cpu: dict[str, float], added: dict[str, Any],
                    mem: dict[str, int]) -> dict[str, Any]:
    n = res["participants"]
    core = cpu["sft_core_busy"]
    egress = res["received"]["pps"]
    p99 = res["latency_us"].get("p99")
    ok = (res["loss"] <= LOSS_BAR and res["samples"]["failed"] == 0
          and res["samples"]["decrypted"] > 0 and res["samples"]["route_bad"] == 0
          and p99 is not None and p99 <= LATENCY_P99_BAR_US)
    return {
        "participants": n, "cpu": cpu, "egress_pps": egress, "ingress_pps": res["sent"]["pps"],
        "participants_per_vcpu": round(n / core, 1) if core > 0 else None,
        "egress_pps_per_core": round(egress / core) if core > 0 else None,
        "ns_per_egress_packet": round(core * 1e9 / egress) if egress else None,
        "loss": res["loss"], "ok": ok,
        "latency_us": res["latency_us"], "latency_e2e_us": res.get("latency_e2e_us"),
        "join_ms": res["join_ms"], "memory": mem,
        "ready": f"{added.get('ready')}/{added.get('receivers')}", "detail": res,
    }


def point_line(name: str, p: dict[str, Any]) -> str:
    lat = p["latency_us"]
    join = p["join_ms"]

    def f(v: Any, fmt: str = "{:.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    return (f"{name:9} N={p['participants']:4d} busy={p['cpu']['sft_core_busy']:.3f} "
            f"(sampled: proc {p['cpu']['sft_process']:.3f}, "
            f"softirq {p['cpu']['sft_core_softirq']:.3f}, core {p['cpu']['sft_core']:.3f}) "
            f"gen={p['cpu']['gen_core_busy']:.2f} egress={p['egress_pps']:.0f}/s "
            f"loss={p['loss']:.4%} lat p50/p99={f(lat['p50'])}/{f(lat['p99'])}us "
            f"(e2e p99 {f((p.get('latency_e2e_us') or {}).get('p99'))}us) "
            f"join p50/p99={f(join['p50'])}/{f(join['p99'])}ms ppv={f(p['participants_per_vcpu'])}"
            f"{'' if p['ok'] else ' FAIL'}")


def best_point(run: Run) -> dict[str, Any] | None:
    ok = [p for p in run.points if p["ok"] and p["participants_per_vcpu"]]
    return max(ok, key=lambda p: p["participants"]) if ok else None


# ---------------------------------------------------------------- reporting
def table(runs: list[Run]) -> str:
    head = (f"{'system':10} {'N':>5} {'busy0':>8} {'proc':>8} {'softirq':>8} {'egress/s':>9} "
            f"{'ns/pkt':>7} {'loss':>8} {'lat p50':>8} {'lat p99':>8} {'join p50':>8} "
            f"{'join p99':>8} {'RSS MiB':>8} {'BPF KiB':>8} {'ppv':>6}")
    lines = [head, "-" * len(head)]
    for run in runs:
        for p in run.points:
            lat, join, mem = p["latency_us"], p["join_ms"], p["memory"]

            def f(v: Any, fmt: str = "{:.0f}") -> str:
                return "-" if v is None else fmt.format(v)

            lines.append(
                f"{run.system:10} {p['participants']:5d} {p['cpu']['sft_core_busy']:8.3f} "
                f"{p['cpu']['sft_process']:8.3f} {p['cpu']['sft_core_softirq']:8.3f} "
                f"{p['egress_pps']:9.0f} "
                f"{f(p['ns_per_egress_packet']):>7} {p['loss']:8.4%} {f(lat['p50']):>8} "
                f"{f(lat['p99']):>8} {f(join['p50']):>8} {f(join['p99']):>8} "
                f"{mem.get('rss', 0) / 2**20:8.1f} "
                f"{f(mem.get('bpf_map_bytes') and mem['bpf_map_bytes'] / 1024):>8} "
                f"{f(p['participants_per_vcpu']):>6}{'' if p['ok'] else ' FAIL'}")
        if run.error:
            lines.append(f"{run.system:10} error: {run.error}")
        if run.stopped:
            lines.append(f"{run.system:10} {run.stopped}")
    return "\n".join(lines)


def summary(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for run in runs:
        best = best_point(run)
        out[run.system] = None if best is None else {
            "participants_per_vcpu": best["participants_per_vcpu"],
            "at_participants": best["participants"], "cpu": best["cpu"]["sft_core_busy"],
            "cpu_tick_sampled": best["cpu"]["sft"],
            "egress_pps_per_core": best["egress_pps_per_core"],
            "ns_per_egress_packet": best["ns_per_egress_packet"],
            "latency_us_p50": best["latency_us"]["p50"],
            "latency_us_p99": best["latency_us"]["p99"],
            "join_ms_p50": best["join_ms"]["p50"], "join_ms_p99": best["join_ms"]["p99"],
            "loss": best["loss"]}
    ratios = {}
    for a, b in (("kernel", "userspace"), ("kernel", "janus"), ("userspace", "janus"),
                 ("native", "userspace"), ("native", "kernel"), ("native", "janus"),
                 ("native-xdp", "native"), ("native-xdp", "kernel"),
                 ("native-xdp", "userspace"), ("native-xdp", "janus")):
        if out.get(a) and out.get(b):
            ratios[f"{a}/{b}"] = round(out[a]["participants_per_vcpu"]
                                       / out[b]["participants_per_vcpu"], 2)
    return {"best": out, "ratios": ratios}


def plot(runs: list[Run], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in runs:
        if not run.points:
            continue
        n = [p["participants"] for p in run.points]
        ax1.plot(n, [p["cpu"]["sft_core_busy"] for p in run.points], marker="o",
                 label=run.system)
        ax2.plot(n, [max(p["loss"], 1e-6) * 100 for p in run.points], marker="o",
                 label=run.system)
    ax1.set_xlabel("participants")
    ax1.set_ylabel("CPU-seconds per second on the SFT core")
    ax1.axhline(1.0, color="grey", lw=0.6, ls=":")
    ax2.set_xlabel("participants")
    ax2.set_ylabel("loss %")
    ax2.set_yscale("log")
    ax2.set_ylim(1e-4, 100)
    ax2.axhline(LOSS_BAR * 100, color="red", lw=0.6, ls="--", label="0.1 % bar")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sft-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default="userspace,kernel,janus",
                   help="comma-separated: userspace, kernel, native, native-xdp, janus "
                   "(unavailable ones are "
                   "skipped with the reason)")
    p.add_argument("--quick", action="store_true",
                   help="a handful of participants, short windows (CI): < 2 minutes")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--max-participants", type=int, default=200)
    p.add_argument("--min-participants", type=int, default=0,
                   help="first point (joined in one go), to measure near capacity sooner")
    p.add_argument("--conference-size", type=int, default=10)
    p.add_argument("--sample-every", type=int, default=100,
                   help="the generator decrypts 1 received packet in N per leg (at least N "
                        "with --samples-per-second)")
    p.add_argument("--samples-per-second", type=float, default=400,
                   help="with --sink xdp: sample about this many packets a second in each "
                        "window (0: 1 in --sample-every, whatever the load)")
    p.add_argument("--sink", choices=("socket", "xdp"), default="socket",
                   help="xdp: the generator counts and drops received media in a BPF program "
                        "(TC ingress) and decrypts only the sampled packets, so it is not the "
                        "bottleneck (sft-load --sink; Janus's generator keeps the socket sink)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON + PNG")
    p.add_argument("--name", help="file stem (default: bench-<time>)")
    p.add_argument("--require", default="", help="systems that must run (error if unavailable)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.warmup = min(args.warmup, 6.0)
        args.conference_size = 5 if args.conference_size == 10 else args.conference_size
    return args


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    if os.geteuid() != 0:
        raise SystemExit("sft-bench needs root (network namespaces, pinning, BPF)")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    required = {s.strip() for s in args.require.split(",") if s.strip()}
    skipped: dict[str, str] = {}
    chosen = []
    for s in systems:
        ok, why = system_available(s)
        if ok:
            chosen.append(s)
        elif s in required:
            raise SystemExit(f"sft-bench: {s} required but unavailable: {why}")
        else:
            skipped[s] = why
    workdir = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    topo = Topology.unique()
    points = len(ramp_points(args.max_participants, args.conference_size, args.quick,
                             args.min_participants))
    runs: list[Run] = []
    started = time.time()
    with topo, tqdm(total=points * len(chosen), unit="point", file=sys.stderr) as bar:
        for s in chosen:
            runs.append(run_system(s, topo, args, workdir, bar))
    record = {
        "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), **_cpu_info()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "method": {"sft_cpu": topo.sft_cpu, "generator_cpu": topo.gen_cpu,
                   "cpu": "SFT process user+system (all threads) + irq+softirq of the SFT "
                          "core (/proc/stat); sft_core = whole core busy incl. other tenants",
                   "nice": NICE,
                   "loss_bar": LOSS_BAR},
        "skipped": skipped, "workdir": str(workdir),
        "runs": [{"system": r.system, "config": r.config, "baseline": r.baseline,
                  "error": r.error,
                  "stopped": r.stopped, "points": r.points} for r in runs],
        **summary(runs),
    }
    return {"record": record, "runs": runs}


# CPU features the crypto paths depend on (a VM's "model name" may not tell).
CRYPTO_FLAGS = ("aes", "vaes", "sha_ni", "avx2", "avx512f")


def _cpu_info() -> dict[str, Any]:
    """Model name, family/model/stepping and the crypto flags of the first CPU."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if not line.strip():
                break  # the first CPU is enough
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", "?"),
            "cpu_id": "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "cpu_crypto_flags": [f for f in CRYPTO_FLAGS if f in flags]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = bench(args)
    record, runs = out["record"], out["runs"]
    print(table(runs))
    print()
    for system, best in record["best"].items():
        if best:
            print(f"{system:10} participants per vCPU = {best['participants_per_vcpu']} "
                  f"(N={best['at_participants']}, {best['cpu']:.3f} CPU-s/s, loss "
                  f"{best['loss']:.4%}, latency p50/p99 {best['latency_us_p50']}/"
                  f"{best['latency_us_p99']} us, join p50 {best['join_ms_p50']} ms)")
        else:
            print(f"{system:10} no point with loss <= 0.1 % and correct SRTP")
    for k, v in record["ratios"].items():
        print(f"ratio {k}: {v}x")
    for s, why in record["skipped"].items():
        print(f"skipped {s}: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    plot(runs, args.out / f"{stem}.png",
         f"sft-bench {record['started']}, {record['host']['cpu_model']}, conference size "
         f"{args.conference_size}, {args.duration:g} s per point")
    print(f"wrote {json_path} and {stem}.png")
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
