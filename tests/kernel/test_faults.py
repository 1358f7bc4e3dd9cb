"""Faults around the kernel path: bpffs missing or no root → a clear fallback
to the userspace plane; the media interface flapping mid-call → forwarding
resumes with the programs still attached."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from tests.conftest import ROOT, SFTD, VethTopology, free_tcp_port, free_udp_range, owned_name
from tests.e2e.helpers import new_convid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

TX = 'sft_dataplane_packets_total{counter="TX_PACKETS"}'


def _sftd_args(*extra: str) -> list[str]:
    lo, hi = free_udp_range()
    return [str(SFTD), "-O", "lo", "-p", str(free_tcp_port()), "-r", str(free_tcp_port()),
            "--media-ports", f"{lo}-{hi}", *extra]


def _start_and_read_log(command: list[str], tmp_path, seconds: float = 60.0) -> str:
    """Run ``command`` until it says it listens (or ends; a loaded machine may take
    many seconds to import); return its log."""
    log = tmp_path / "sftd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        for _ in range(int(seconds * 20)):
            if "listening" in log.read_text() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
    return log.read_text()


def test_no_bpffs_falls_back_to_userspace_with_every_reason(tmp_path):
    """auto's whole chain: native with AF_XDP cannot serve lo, the kernel plane
    needs bpffs, so userspace runs and the log names both reasons."""
    # a private mount namespace without bpffs: the host's mount stays
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               'umount /sys/fs/bpf 2>/dev/null; exec "$@"', "sh",
               *_sftd_args("--dataplane", "auto", "--native-io", "xdp",
                           "--instance", owned_name("nobpffs"))]
    text = _start_and_read_log(command, tmp_path)
    assert "data plane: userspace (--dataplane auto), because the native path is " \
           "unavailable" in text, text
    assert "lo is a loopback interface" in text and "the kernel path is unavailable" in text
    assert "bpffs" in text and "userspace data plane" in text


def test_kernel_requested_without_bpffs_refuses_to_start(tmp_path):
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               'umount /sys/fs/bpf 2>/dev/null; exec "$@"', "sh",
               *_sftd_args("--dataplane", "kernel", "--instance", owned_name("nobpffs"))]
    text = _start_and_read_log(command, tmp_path)
    assert "--dataplane kernel requested but unavailable" in text and "bpffs" in text, text


def test_not_root_runs_the_native_plane(tmp_path):
    """auto as an unprivileged user: the native engine's UDP I/O needs no
    privilege, so nobody gets the fastest plane, not the userspace fallback."""
    os.chmod(tmp_path, 0o777)
    # nobody, keeping only the right to read files: CI's clone may sit in a
    # directory only root can enter (mktemp -d is 0700)
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
               *_sftd_args("--dataplane", "auto")]
    text = _start_and_read_log(command, tmp_path)
    assert "data plane: native (--dataplane auto: the fastest plane" in text, text
    assert "listening" in text


async def test_interface_flap_mid_call(sftd_factory):
    with VethTopology() as topo:
        server = await sftd_factory("-I", topo.host_ip, "-O", topo.host_if, "--dataplane",
                                    "kernel", "--instance", topo.netns)
        probe = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", topo.netns, str(ROOT / ".venv/bin/sft-probe"),
            f"http://{topo.host_ip}:{server.port}", "--conv", new_convid(), "--count", "2",
            "--duration", "12", "--no-video", "--local-address", topo.client_ip, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(100):
            await asyncio.sleep(0.2)
            if (await server.metrics())[TX] > 200:
                break
        else:
            probe.kill()
            out, err = await probe.communicate()
            raise AssertionError(f"no media before the flap\n{err.decode()[-2000:]}\n"
                                 f"{server.log_tail(20)}")
        for state in ("down", "up"):
            subprocess.run(["ip", "link", "set", topo.host_if, state], check=True)
            await asyncio.sleep(1)
        after_flap = (await server.metrics())[TX]
        await asyncio.sleep(3)
        later = (await server.metrics())[TX]
        out, err = await asyncio.wait_for(probe.communicate(), 60)
    assert later - after_flap > 100, f"forwarding did not resume after the flap: {later}"
    report = json.loads(out)
    assert all(c["media_ok"] for c in report["clients"]), err.decode()[-1500:]


def test_loopback_media_runs_on_the_kernel_plane(tmp_path):
    text = _start_and_read_log(_sftd_args("--dataplane", "kernel", "--instance",
                                          owned_name("lo")), tmp_path)
    assert "data plane: kernel (eBPF) on lo" in text, text
    assert "userspace" not in text, text
