"""The session-start sweep (``sweep_dead_test_leftovers`` in tests/conftest.py):
what a killed test process left -- its kernel plane's pins, the TC filter on
``lo``, the XDP program on a veth, its network namespace -- is removed; what a
live test process owns stays."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sftd.bpf import attach, libbpf
from sftd.bpf.dataplane import KernelDataPlane
from tests.conftest import VethTopology, owned_name, sweep_dead_test_leftovers

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]

DEAD_PORTS, LIVE_PORTS = (47100, 47199), (47200, 47299)
ACCEPT_LOCAL = Path("/proc/sys/net/ipv4/conf/lo/accept_local")

# A test process that dies without closing anything: its plane serves lo (TC) and
# the veth (XDP and TC), and it made a namespace; it prints its instance name.
KILLED_TEST = f"""
import os, subprocess, sys
from sftd.bpf.dataplane import KernelDataPlane
instance = f"test-{{os.getpid()}}-sweep"
KernelDataPlane(("lo", sys.argv[1]), {DEAD_PORTS}, instance=instance)
subprocess.run(["ip", "netns", "add", instance], check=True)
print(instance, flush=True)
os._exit(0)
"""


def tc_prog(ifname: str, instance: str) -> int:
    return libbpf.tc_prog_id(socket.if_nametoindex(ifname), attach.tc_handle(instance),
                             attach.TC_PRIORITY)


def xdp_prog(ifname: str) -> int:
    ifindex = socket.if_nametoindex(ifname)
    return max(libbpf.xdp_prog_id(ifindex, mode)
               for mode in (libbpf.XDP_FLAGS_DRV_MODE, libbpf.XDP_FLAGS_SKB_MODE))


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True,
                            text=True).stdout
    return {line.split(" ", 1)[0] for line in listed.splitlines()}


def test_the_sweep_removes_a_dead_test_run_and_keeps_a_live_one(
        topology: VethTopology) -> None:
    accept_local = ACCEPT_LOCAL.read_text()
    live = KernelDataPlane(("lo",), LIVE_PORTS, instance=owned_name("sweeplive"))
    try:
        child = subprocess.run([sys.executable, "-c", KILLED_TEST, topology.host_if],
                               check=True, capture_output=True, text=True, timeout=30)
        dead = child.stdout.strip()
        ACCEPT_LOCAL.write_text(accept_local)  # the dead plane could not restore it
        dead_pins = attach.PIN_ROOT / dead
        assert dead_pins.is_dir() and tc_prog("lo", dead) and tc_prog(topology.host_if, dead)
        assert xdp_prog(topology.host_if) and dead in namespaces()

        removed = sweep_dead_test_leftovers()

        assert f"pins and attached programs of {dead_pins}" in removed, removed
        assert f"network namespace {dead}" in removed, removed
        assert not dead_pins.exists()
        assert tc_prog("lo", dead) == 0 and tc_prog(topology.host_if, dead) == 0
        assert xdp_prog(topology.host_if) == 0
        assert dead not in namespaces()
        # this process lives: its plane, pins and namespace stay
        assert live.pin_dir.is_dir() and tc_prog("lo", live.instance)
        assert topology.netns in namespaces()
        assert not any(live.instance in line or topology.netns in line for line in removed)
    finally:
        live.close()
