"""The live-frames transmit path (bpf/src/txlive.bpf.c run by BPF_PROG_TEST_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES from bpf/native/txpaths.c) on a real veth pair in two
fresh namespaces: every packet written into the mmapped slots must arrive at the
peer's XDP sink (bpf/src/txsink.bpf.c) exactly once and byte-identical, headers
included, whatever the page_pool frames held before."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from sftd.bpf import txlive as tx
from tests.conftest import owned_name

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]


@pytest.fixture
def live_path() -> Iterator[tuple[tx.Sender, tx.TxSink, tx.TxLive]]:
    """A sender in the sending namespace (this thread is in it meanwhile) with a
    live-frames transmitter, and the sink on the peer, reset."""
    cpus = os.sched_getaffinity(0)
    # the program finds its control block by CPU: the sending thread stays on one
    os.sched_setaffinity(0, {min(cpus)})
    try:
        with tx.VethNamespaces(owned_name("txl")) as topo:
            with tx.entered(topo.ns_r):
                sink = tx.TxSink(socket.if_nametoindex(topo.if_r))
            try:
                sink.reset()
                with tx.entered(topo.ns_s), \
                        tx.TxLive(hold_ifindex=socket.if_nametoindex("lo")) as live:
                    yield tx.Sender(topo, os.urandom(tx.PATTERN_LEN), live), sink, live
            finally:
                with tx.entered(topo.ns_r):
                    sink.close()
    finally:
        os.sched_setaffinity(0, cpus)


def send_and_compare(sender: tx.Sender, sink: tx.TxSink, t: tx.Traffic,
                     kernel_batch: int = 0) -> dict[str, object]:
    sink.configure(True, tx.hash_from("live"), (t.dport_base, t.dport_base + t.ndest - 1))
    result = sender.run("live", t, kernel_batch)
    assert result["sent"] == t.packets and result["errors"] == 0, result
    return tx.compare(sender, sink, "live", t)


def test_every_packet_arrives_once_and_byte_identical(live_path):
    sender, sink, live = live_path
    runs = [
        # small and large alternating within one call: the frames' tails grow and
        # shrink; 16-frame kernel batches recycle page_pool pages within the call
        (tx.Traffic(payload_len=100, payload_len_odd=1250, batch=128, ndest=49, packets=300), 16),
        (tx.Traffic(payload_len=1250, payload_len_odd=20, batch=64, ndest=7, packets=200,
                    seq_start=300), 0),
        (tx.Traffic(payload_len=600, batch=1, ndest=3, packets=5, seq_start=500), 0),
    ]
    for traffic, kernel_batch in runs:
        checked = send_and_compare(sender, sink, traffic, kernel_batch)
        assert (checked["missing"], checked["duplicated"], checked["wrong"]) == (0, 0, 0), checked
    assert sink.stats()["packets"] == 505
    control = live.control(os.sched_getaffinity(0).pop())
    assert control["bad"] == 0 and control["overrun"] == 0, control


def test_a_wrong_byte_is_caught(live_path):
    """The comparison itself: bytes that differ from what the sender meant fail it."""
    sender, sink, _ = live_path
    t = tx.Traffic(payload_len=200, batch=32, ndest=5, packets=64)
    send_and_compare(sender, sink, t)
    pattern = sender.pattern
    sender.pattern = pattern[:40] + bytes([pattern[40] ^ 1]) + pattern[41:]
    checked = tx.compare(sender, sink, "live", t)
    # pattern byte 40 is payload byte 40 - (seq & 255), not overwritten by the
    # sequence number (bytes 0..3) for seq 0..36
    assert checked["wrong"] == 37 and checked["missing"] == 0, checked
