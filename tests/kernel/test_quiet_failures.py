"""Failures that used to pass silently are counted, logged once with what to do,
and exported in /metrics: a full event ring buffer in the kernel, and a ring-buffer
record the controller could not handle."""

from __future__ import annotations

import logging

from harness import Namespace, make_peer, rtp
from prometheus_client import generate_latest

from sftd.bpf.dataplane import KernelDataPlane
from sftd.controller.metrics import SftCollector, make_registry

AUDIO_SSRC = 0x0A0A0A0A


def _idle_state() -> dict[str, float]:
    return dict.fromkeys(("participants", "calls", "participants_total", "calls_total",
                          "draining", "capacity_remaining"), 0.0)


def _publisher_without_keystream(dp: KernelDataPlane):  # type: ignore[no-untyped-def]
    """A publishing leg whose ring is still empty: each new packet is a keystream
    miss that asks the controller, through the ring buffer, for a refill."""
    peer = make_peer(0, 40000)
    dp.add_leg(peer.spec)
    dp.set_publisher(peer.leg_id, (AUDIO_SSRC,), {})
    return peer


def _send_misses(dp: KernelDataPlane, peer, count: int) -> None:  # type: ignore[no-untyped-def]
    for seq in range(count):  # no maintain() in between: nothing consumes the events
        frame = peer.frame(peer.sender.protect(rtp(seq, seq * 960, AUDIO_SSRC, b"\x55" * 40)))
        assert dp.tc_program.test_run(frame).retval == 2  # TC_ACT_SHOT


def test_lost_events_are_counted_and_logged_once(dp: KernelDataPlane, netns: Namespace,
                                                 caplog) -> None:
    """sft_events holds 256 KiB of 32-byte records: 10000 misses unconsumed overflow it."""
    peer = _publisher_without_keystream(dp)
    _send_misses(dp, peer, 10000)
    lost = dp.read_kernel_counters()["TC_EVENT_LOST"]
    assert 0 < lost < 10000
    assert dp.read_kernel_counters()["TC_RX_KEYSTREAM_MISS"] == 10000
    dp._lease_renew_ns = 0  # the failure check runs with the lease renewal
    with caplog.at_level(logging.WARNING, logger="sftd.bpf.dataplane"):
        dp.maintain()
        dp.maintain()
    warnings = [r.getMessage() for r in caplog.records if "TC_EVENT_LOST" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "more CPU" in warnings[0] and f"{lost}×" in warnings[0]
    assert dp.read_detail_counters()["TC_EVENT_LOST"] == lost


def test_failed_event_handling_is_counted_logged_once_and_exported(
        dp: KernelDataPlane, netns: Namespace, caplog) -> None:
    peer = _publisher_without_keystream(dp)
    before = dp.read_bpf_failures().get("ring buffer handler", 0)

    def broken(_record: bytes) -> None:
        raise RuntimeError("handler bug")

    dp._events._handler = broken
    _send_misses(dp, peer, 3)
    with caplog.at_level(logging.ERROR, logger="sftd.bpf.libbpf"):
        dp.maintain()
    assert dp.read_detail_counters()["EVENT_HANDLER_FAILED"] == 3
    assert dp.read_bpf_failures()["ring buffer handler"] == before + 3
    logged = [r for r in caplog.records if r.name == "sftd.bpf.libbpf"]
    assert len(logged) == 1 and "report it" in logged[0].getMessage()
    assert logged[0].exc_info is not None  # with the traceback
    registry = make_registry(SftCollector(
        "test", _idle_state, lambda: dp.name, dp.read_counters, dict,
        dp.read_detail_counters, bpf_failures=dp.read_bpf_failures))
    text = generate_latest(registry).decode()
    assert f'sft_bpf_failures_total{{operation="ring buffer handler"}} {before + 3}.0' in text
    assert 'sft_dataplane_detail_total{counter="EVENT_HANDLER_FAILED"} 3.0' in text
