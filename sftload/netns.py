"""Two network namespaces joined by a veth pair: the system under test in one,
the load generator in the other. Created and deleted by their unique names;
the addresses live only inside them.

RPS steers each veth end's receive processing to the core of the process that
owns that namespace, so softirq work lands where it belongs: packets arriving
at the SFT (including any TC/XDP programs on its veth) are processed on the
SFT's core, packets arriving at the generator on the generator's core.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class Topology:
    tag: str
    sft_cpu: int = 0
    gen_cpu: int = 1
    subnet: int = 0  # third octet; derived from the tag when 0

    def __post_init__(self) -> None:
        if not self.subnet:
            self.subnet = 1 + (int(self.tag, 16) % 250)
        self.ns_sft = f"sftb-{self.tag}-s"
        self.ns_gen = f"sftb-{self.tag}-g"
        self.if_sft = f"sfb{self.tag}s"[:15]
        self.if_gen = f"sfb{self.tag}g"[:15]
        self.ip_sft = f"10.213.{self.subnet}.1"
        self.ip_gen = f"10.213.{self.subnet}.2"
        self.created = False

    @classmethod
    def unique(cls) -> Topology:
        return cls(tag=f"{os.getpid() % 0xFFFF:04x}{os.urandom(1).hex()}")

    def exec_prefix(self, ns: str) -> list[str]:
        """Run in the namespace's network only: unlike ``ip netns exec``, nsenter
        keeps the host's mounts, so bpffs (/sys/fs/bpf) stays visible."""
        return ["nsenter", f"--net=/run/netns/{ns}"]

    def create(self) -> Topology:
        _run("ip", "netns", "add", self.ns_sft)
        self.created = True
        _run("ip", "netns", "add", self.ns_gen)
        _run("ip", "link", "add", self.if_sft, "netns", self.ns_sft, "type", "veth",
             "peer", "name", self.if_gen, "netns", self.ns_gen)
        for ns, dev, ip in ((self.ns_sft, self.if_sft, self.ip_sft),
                            (self.ns_gen, self.if_gen, self.ip_gen)):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        ncpu = os.cpu_count() or 1
        for ns, dev, cpu in ((self.ns_sft, self.if_sft, self.sft_cpu),
                             (self.ns_gen, self.if_gen, self.gen_cpu)):
            if cpu < ncpu:
                mask = format(1 << cpu, "x")
                _run("ip", "netns", "exec", ns, "sh", "-c",
                     f"for q in /sys/class/net/{dev}/queues/rx-*; do "
                     f"echo {mask} > $q/rps_cpus; done", check=False)
        return self

    def delete(self) -> None:
        for ns in (self.ns_gen, self.ns_sft):
            _run("ip", "netns", "del", ns, check=False)
        self.created = False

    def __enter__(self) -> Topology:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()
