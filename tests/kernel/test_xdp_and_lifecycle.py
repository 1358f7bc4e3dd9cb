"""The XDP filter's verdicts, and attaching/detaching/pinning on a real interface."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from harness import Namespace, make_peer, udp_frame

from sftd.bpf import libbpf
from sftd.bpf.dataplane import PIN_ROOT, TC_PRIORITY, KernelDataPlane
from sftd.controller.dataplane import Counter
from tests.conftest import owned_name

XDP_DROP, XDP_PASS = 1, 2


@pytest.mark.parametrize("name, payload, verdict, kcounter", [
    ("STUN", b"\x00\x01\x00\x00" + os.urandom(16), XDP_PASS, "XDP_PASS_STUN"),
    ("short STUN", b"\x00\x01\x00", XDP_DROP, "XDP_DROP_SHORT"),
    ("DTLS", b"\x16\xfe\xfd" + os.urandom(30), XDP_PASS, "XDP_PASS_DTLS"),
    ("RTCP", b"\x80\xc9\x00\x01" + os.urandom(8), XDP_PASS, "XDP_PASS_RTCP"),
    ("junk", b"\x42" * 40, XDP_DROP, "XDP_DROP_JUNK"),
    ("one byte", b"\x80", XDP_DROP, "XDP_DROP_SHORT"),
    ("RTP from a stranger", b"\x80\x6f" + os.urandom(60), XDP_DROP, "XDP_DROP_UNKNOWN"),
])
def test_xdp_verdicts(dp: KernelDataPlane, name: str, payload: bytes, verdict: int,
                      kcounter: str) -> None:
    peer = make_peer(0, 40000)  # the programs act on traffic to a leg's socket only
    dp.add_leg(peer.spec)
    frame = udp_frame(("10.77.0.99", 5000), ("10.77.0.1", 40000), payload)
    assert dp.xdp_program.test_run(frame).retval == verdict, name
    assert dp.read_kernel_counters()[kcounter] == 1, name


@pytest.mark.parametrize("payload", [b"\x42" * 40, b"\x80\x6f" + bytes(60), b"\xc5" * 30],
                         ids=["junk", "RTP-like", "DNS reply"])
def test_traffic_to_other_local_sockets_in_the_port_range_passes(dp: KernelDataPlane,
                                                                 payload: bytes) -> None:
    """A DNS reply (its id's first byte is anything) or a TURN server's traffic to
    an ephemeral port in the media range is another socket's: neither program
    drops or counts it, next to a live leg on the same address."""
    dp.add_leg(make_peer(0, 40000).spec)
    frame = udp_frame(("10.77.0.53", 53), ("10.77.0.1", 40001), payload)
    assert dp.xdp_program.test_run(frame).retval == XDP_PASS
    assert dp.tc_program.test_run(frame).retval == 0  # TC_ACT_OK
    assert not any(dp.read_kernel_counters().values())
    assert not any(dp.read_counters().values())


def test_xdp_passes_rtp_of_a_known_leg_and_ignores_other_ports(dp: KernelDataPlane) -> None:
    peer = make_peer(0, 40000)
    dp.add_leg(peer.spec)
    rtp_like = b"\x80\x6f" + os.urandom(60)
    assert dp.xdp_program.test_run(peer.frame(rtp_like)).retval == XDP_PASS
    assert dp.read_kernel_counters()["XDP_PASS_RTP"] == 1
    outside = udp_frame(("10.77.0.99", 5000), ("10.77.0.1", 39999), b"\x42" * 40)
    assert dp.xdp_program.test_run(outside).retval == XDP_PASS
    tcp = bytearray(outside)
    tcp[23] = 6
    assert dp.xdp_program.test_run(bytes(tcp)).retval == XDP_PASS
    assert dp.read_counters()[Counter.DROP_UNKNOWN_LEG] == 0


def _tc_filters(ns: Namespace, dev: str) -> str:
    return ns.ip("-d", "link", "show", dev) + subprocess.run(
        ["ip", "netns", "exec", ns.name, "tc", "filter", "show", "dev", dev, "ingress"],
        capture_output=True, text=True).stdout


def test_attach_close_and_stale_cleanup(netns: Namespace) -> None:
    instance = owned_name("life")
    dp = KernelDataPlane(("sft0",), (40000, 40999), instance=instance)
    try:
        ifindex = socket.if_nametoindex("sft0")
        shown = _tc_filters(netns, "sft0")
        assert "sft_xdp_ingress" in shown or "xdp" in shown
        assert "sft_tc_ingress" in shown
        assert (PIN_ROOT / instance / "sft_legs").exists()
        tc_id = libbpf.tc_prog_id(ifindex, dp._tc_handle, TC_PRIORITY)
        assert tc_id == dp.tc_program.id
    except BaseException:
        dp.close()
        raise
    # a crashed process leaves its pins and attachments: the next one removes them
    dp.attachments.clear()
    dp.obj.close()
    dp.obj = None  # type: ignore[assignment]
    assert (PIN_ROOT / instance / "prog_sft_tc_ingress").exists()
    dp2 = KernelDataPlane((), (40000, 40999), instance=instance)
    try:
        assert libbpf.tc_prog_id(ifindex, dp2._tc_handle, TC_PRIORITY) == 0
        assert libbpf.xdp_prog_id(ifindex, libbpf.XDP_FLAGS_DRV_MODE) == 0
        assert libbpf.xdp_prog_id(ifindex, libbpf.XDP_FLAGS_SKB_MODE) == 0
    finally:
        dp2.close()
    assert not (PIN_ROOT / instance).exists()
    dp3 = KernelDataPlane(("sft0",), (40000, 40999), instance=instance)
    dp3.close()
    shown = _tc_filters(netns, "sft0")
    assert "sft_tc_ingress" not in shown and "sft_xdp_ingress" not in shown
    assert not (PIN_ROOT / instance).exists()


def test_failed_map_operation_raises_named_error_and_is_counted(dp: KernelDataPlane) -> None:
    before = libbpf.error_counts().get("update of map sft_config", 0)
    with pytest.raises(libbpf.MapOperationFailed, match="sft_config.*errno"):
        dp.maps["sft_config"].update(b"\x05\0\0\0", bytes(dp.abi.sizeof("sft_config")))
    assert libbpf.error_counts()["update of map sft_config"] == before + 1


@pytest.mark.parametrize("chunk", [0, 7])
def test_lookup_all_reads_every_entry_in_batches(dp: KernelDataPlane, chunk: int) -> None:
    """The controller reads kernel-owned state (audio levels, stream indices) with
    one batch syscall; small chunks take several batches and must miss nothing."""
    m = dp.maps["sft_leg_state"]
    want = {}
    for leg_id in range(1, 51):
        value = os.urandom(m.value_size)
        m.update(leg_id.to_bytes(4, "little"), value)
        want[leg_id.to_bytes(4, "little")] = value
    got = m.lookup_all(chunk)
    assert len(got) == len(want) and dict(got) == want


def test_bench_counts_each_bpf_map_once(dp: KernelDataPlane) -> None:
    """sft-bench's memory figure: a second fd to a map (as from its pin) must not
    count the map twice."""
    from sftd.sftload.bench import bpf_map_bytes

    before = bpf_map_bytes(os.getpid())
    assert before >= dp.maps["sft_keystream"].max_entries * dp.maps["sft_keystream"].value_size
    fd = libbpf.obj_get(dp.pin_dir / "sft_keystream")
    try:
        assert bpf_map_bytes(os.getpid()) == before
    finally:
        os.close(fd)
