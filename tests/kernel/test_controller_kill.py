"""A SIGKILLed controller: forwarding stops within the legs' 30 s lease (in practice
within a second or two, when the keystream the dead controller precomputed runs out;
the lease is the guarantee and is seen to fire 20..30 s after the kill), and the next
``sftd`` of the same ``--instance`` removes the stale programs and pins and serves a
new call.

A real ``sftd --dataplane kernel`` on a veth, two aiortc participants (one sft-probe
process, ``--count 2``) in another network namespace. Counters are read from the
pinned maps under /sys/fs/bpf/sftd/<instance>/, which outlive the process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, VethTopology

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

LEASE_S = 30.0


class Topology(VethTopology):
    """A VethTopology whose namespace name is also the kernel-plane instance; the
    pins a killed sftd of that instance left go with it."""

    @property
    def instance(self) -> str:
        return self.netns

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)  # deleting the device detaches whatever is still attached
        from sftd.bpf.dataplane import PIN_ROOT
        shutil.rmtree(PIN_ROOT / self.instance, ignore_errors=True)


@pytest.fixture
def topology() -> Iterator[Topology]:
    with Topology() as topo:
        yield topo


def pinned_counters(pin_dir: Path) -> dict[str, int]:
    """TX/RX packets and lease/keystream detail counters, from the pinned maps."""
    from sftd.bpf import abi as abi_mod
    from sftd.bpf import libbpf

    consts = abi_mod.load().consts
    out = {}
    for map_name, names in (("sft_counters", {"TX_PACKETS": consts.SFT_CTR_TX_PACKETS,
                                              "RX_PACKETS": consts.SFT_CTR_RX_PACKETS}),
                            ("sft_kcounters", {"LEASE_EXPIRED": consts.SFT_K_TC_LEASE_EXPIRED,
                                               "TX_MISS": consts.SFT_K_TC_TX_KEYSTREAM_MISS,
                                               "RX_MISS": consts.SFT_K_TC_RX_KEYSTREAM_MISS})):
        fd = libbpf.obj_get(pin_dir / map_name)
        try:
            m = libbpf.Map(map_name, fd, 4, 8, 0, libbpf.BPF_MAP_TYPE_PERCPU_ARRAY)
            for name, key in names.items():
                out[name] = sum(struct.unpack("<Q", v)[0]
                                for v in m.lookup_percpu(struct.pack("<I", key)))
        finally:
            os.close(fd)
    return out


def pinned_prog_ids(pin_dir: Path) -> set[int]:
    from sftd.bpf import libbpf

    ids = set()
    for pin in pin_dir.glob("prog_*"):
        fd = libbpf.obj_get(pin)
        try:
            ids.add(libbpf.prog_id_of_fd(fd))
        finally:
            os.close(fd)
    return ids


def attached_prog_ids(host_if: str, instance: str) -> dict[str, int]:
    from sftd.bpf import libbpf
    from sftd.bpf.dataplane import TC_PRIORITY

    ifindex = int(Path(f"/sys/class/net/{host_if}/ifindex").read_text())
    handle = (zlib.crc32(instance.encode()) & 0xFFFF) or 1
    ids = {"tc": libbpf.tc_prog_id(ifindex, handle, TC_PRIORITY)}
    for mode_name, mode in (("xdp_drv", libbpf.XDP_FLAGS_DRV_MODE),
                            ("xdp_skb", libbpf.XDP_FLAGS_SKB_MODE)):
        try:
            ids[mode_name] = libbpf.xdp_prog_id(ifindex, mode)
        except libbpf.AttachFailed:
            ids[mode_name] = 0
    return ids


def prog_exists(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)],
                          capture_output=True).returncode == 0


async def probe(topology: Topology, url: str, duration: float) -> asyncio.subprocess.Process:
    """Two participants in one fresh conference, from the client namespace."""
    return await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topology.netns, str(ROOT / ".venv/bin/sft-probe"), url,
        "--count", "2", "--duration", str(duration), "--local-address", topology.client_ip,
        "--vstreams", "2", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def kernel_forwarding(pin_dir: Path, server: Any) -> None:
    """Waits until media flows through the kernel (copies counted in the pinned maps)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if pin_dir.exists() and pinned_counters(pin_dir)["TX_PACKETS"] > 200:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"no kernel forwarding\n{server.log_tail(40)}")


async def test_sigkilled_controller_stops_within_lease_and_restart_cleans_up(
        topology: Topology, sftd_factory) -> None:
    from sftd.bpf.dataplane import PIN_ROOT, kernel_available

    ok, reason = kernel_available()
    assert ok, reason
    pin_dir = PIN_ROOT / topology.instance
    args = ("-I", topology.host_ip, "-O", topology.host_if, "--dataplane", "kernel",
            "--instance", topology.instance)
    server = await sftd_factory(*args)
    url = f"http://{topology.host_ip}:{server.port}"
    first = await probe(topology, url, 90)
    try:
        await kernel_forwarding(pin_dir, server)

        old_pinned = pinned_prog_ids(pin_dir)
        old_attached = attached_prog_ids(topology.host_if, topology.instance)
        assert old_attached["tc"] in old_pinned
        assert {old_attached["xdp_drv"], old_attached["xdp_skb"]} & old_pinned

        assert server.proc is not None
        os.kill(server.proc.pid, 9)  # SIGKILL, by PID
        server.proc.wait(5)
        killed_at = time.monotonic()
        at_kill = pinned_counters(pin_dir)

        # The programs stay attached. Copies keep flowing only while the keystream the
        # dead controller wrote lasts (a fraction of a second to ~1 s at these rates:
        # nobody refills the rings); the lease is the guarantee: at most 30 s after
        # the last renewal, every packet of the legs is refused as expired.
        last_tx, last_change, lease_fired = at_kill["TX_PACKETS"], killed_at, None
        while time.monotonic() - killed_at < LEASE_S + 3:
            await asyncio.sleep(0.25)
            now = pinned_counters(pin_dir)
            if now["TX_PACKETS"] != last_tx:
                last_tx, last_change = now["TX_PACKETS"], time.monotonic()
            if lease_fired is None and now["LEASE_EXPIRED"] > at_kill["LEASE_EXPIRED"]:
                lease_fired = time.monotonic() - killed_at
            if lease_fired is not None and time.monotonic() - last_change > 1:
                break
        end = pinned_counters(pin_dir)
        stopped_after = last_change - killed_at
        print(f"after SIGKILL: {end['TX_PACKETS'] - at_kill['TX_PACKETS']} copies forwarded, "
              f"the last {stopped_after:.1f} s after the kill (keystream "
              f"misses {end['TX_MISS'] - at_kill['TX_MISS']} tx / "
              f"{end['RX_MISS'] - at_kill['RX_MISS']} rx); lease expired after "
              f"{lease_fired} s")
        assert lease_fired is not None, f"the lease never expired: {end}"
        # renewed every 10 s: it expires 20..30 s after the kill (+ one poll)
        assert 18 <= lease_fired <= LEASE_S + 0.5, lease_fired
        assert stopped_after <= lease_fired + 0.5
        assert end["RX_PACKETS"] > at_kill["RX_PACKETS"]  # media still arrived, refused
        assert attached_prog_ids(topology.host_if, topology.instance) == old_attached
    finally:
        if first.returncode is None:
            first.kill()  # by PID: ip netns exec execs sft-probe
        await first.wait()

    # a new controller of the same instance removes the stale programs and pins
    server2 = await sftd_factory(*args)
    assert "removed stale pins and programs of instance" in server2.log_text()
    new_pinned = pinned_prog_ids(pin_dir)
    new_attached = attached_prog_ids(topology.host_if, topology.instance)
    assert not new_pinned & old_pinned
    assert new_attached["tc"] in new_pinned
    assert {new_attached["xdp_drv"], new_attached["xdp_skb"]} & new_pinned
    assert not set(new_attached.values()) & old_pinned
    for prog_id in old_pinned:
        assert not prog_exists(prog_id), f"stale program {prog_id} still loaded"
    filters = subprocess.run(["tc", "filter", "show", "dev", topology.host_if, "ingress"],
                             capture_output=True, text=True, check=True).stdout
    programs = [line for line in filters.splitlines() if " handle " in line]
    assert len(programs) == 1 and f" id {new_attached['tc']} " in programs[0], filters

    # and a new call works through the kernel
    url2 = f"http://{topology.host_ip}:{server2.port}"
    second = await probe(topology, url2, 4)
    out, err = await asyncio.wait_for(second.communicate(), 40)
    report = json.loads(out)
    assert len(report["clients"]) == 2
    for client in report["clients"]:
        assert client["media_ok"] and client["others_present"] == 1, err.decode()[-2000:]
    assert pinned_counters(pin_dir)["TX_PACKETS"] > 0
    metrics = await server2.metrics()
    assert metrics['sft_dataplane_info{dataplane="kernel"}'] == 1


def pinned_entries(pin_dir: Path, map_name: str) -> int:
    """How many keys a pinned hash map holds."""
    from sftd.bpf import abi as abi_mod
    from sftd.bpf import libbpf

    key_type = {"sft_leg_by_addr": "sft_addr_key", "sft_streams": "sft_stream_key",
                "sft_stream_state": "sft_stream_key"}.get(map_name)
    key_size = abi_mod.load().sizeof(key_type) if key_type else 4
    fd = libbpf.obj_get(pin_dir / map_name)
    try:
        m = libbpf.Map(map_name, fd, key_size, 8, 0, 1)  # BPF_MAP_TYPE_HASH
        return sum(1 for _ in m.keys())
    finally:
        os.close(fd)


KERNEL_LEG_STATE = ("sft_legs", "sft_leases", "sft_leg_state", "sft_leg_by_addr", "sft_fanout",
                    "sft_streams", "sft_stream_state")


async def test_vanished_clients_leave_no_kernel_state(topology: Topology, sftd_factory) -> None:
    """Both participants' process is SIGKILLed mid-call (no HANGUP, no more PINGs):
    within the ping timeout sftd ends them, and every per-leg entry in the kernel
    maps is gone, so nothing is forwarded to or from their addresses."""
    from sftd.bpf.dataplane import PIN_ROOT

    pin_dir = PIN_ROOT / topology.instance
    server = await sftd_factory("-I", topology.host_ip, "-O", topology.host_if, "--dataplane",
                                "kernel", "--instance", topology.instance, "--ping-timeout", "3")
    clients = await probe(topology, f"http://{topology.host_ip}:{server.port}", 60)
    try:
        await kernel_forwarding(pin_dir, server)
        during = {name: pinned_entries(pin_dir, name) for name in KERNEL_LEG_STATE}
        assert during["sft_legs"] == during["sft_leases"] == during["sft_leg_by_addr"] == 2
        assert during["sft_streams"] >= 2 and during["sft_fanout"] == 2, during
    finally:
        clients.kill()  # by PID: ip netns exec execs sft-probe
        await clients.wait()
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < 15:
        left = {name: pinned_entries(pin_dir, name) for name in KERNEL_LEG_STATE}
        if not any(left.values()):
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"kernel state left after the clients vanished: {left}\n"
                             f"{server.log_tail(40)}")
    gone_after = time.monotonic() - killed_at
    assert "no PING for 3 s" in server.log_text()
    tx = pinned_counters(pin_dir)["TX_PACKETS"]
    await asyncio.sleep(1)
    assert pinned_counters(pin_dir)["TX_PACKETS"] == tx
    print(f"kernel leg state gone {gone_after:.1f} s after the clients vanished")
