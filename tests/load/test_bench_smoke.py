"""Smoke test of the load generator and the benchmark (issue 4): ``sft-bench
--quick`` against the userspace data plane and, when this host can run them,
the kernel data plane and Janus VideoRoom (the peer SFU, ``sftload/janus.py``;
installed by ``scripts/setup.sh --test``). Checks the accounting, never the
speed:

* ingress: every packet the generator's C sender handed to the kernel reached
  the SFT or is counted lost (SFT RX counter);
* egress: every packet the SFT counted as sent reached a receiver or is
  counted lost, and receivers got nothing the SFT did not send;
* per video source: received + lost == sent x subscribers, no packet from a
  source the receiver did not subscribe to; per audio slot, sequence gaps
  are the only loss;
* sampled packets decrypt with each receiver's own SRTP keys and carry the
  publisher the CSRC names; latency and join time were measured.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

pytestmark = [pytest.mark.timeout(300)]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nsenter") is None,
    reason="network namespaces and CPU pinning need root")


def _systems() -> list[str]:
    systems = ["userspace"]
    try:
        from sftd.bpf.dataplane import kernel_available

        ok, _why = kernel_available()
    except Exception:
        ok = False
    if ok:
        systems.append("kernel")  # as root with BPF: must run, not skip
    from sftd.sftload import bench

    if bench.system_available("janus")[0]:
        systems.append("janus")  # installed (CI: scripts/setup.sh --test): must run
    return systems


def _check_point(system: str, point: dict) -> None:
    d = point["detail"]
    where = f"{system} N={point['participants']}"
    assert d["participants"] > 0 and d["sent"]["total"] > 0, where
    assert d["join_failures"] == 0, where
    # ingress: sent = received by the SFT + counted lost
    sft = d["sft"]
    assert sft["rx"] is not None, f"{where}: no SFT counters"
    assert sft["ingress_lost"] == d["sent"]["total"] - sft["rx"], where
    assert sft["ingress_lost"] >= 0, f"{where}: SFT received more than was sent"
    # egress: what the SFT sent = received + counted lost; nothing extra
    assert sft["tx"] is not None
    assert sft["egress_lost"] == sft["tx"] - d["received"]["rtp"], where
    assert sft["egress_lost"] >= 0, f"{where}: receivers got packets the SFT did not count"
    assert d["received"]["unknown_ssrc"] == 0, f"{where}: packets on no announced slot"
    assert d["received"]["rtp"] > 0, f"{where}: nothing forwarded ({sft['counters']})"
    # video, per source: received + lost == expected, nothing unsubscribed
    v = d["video"]
    assert v["expected"] > 0
    assert v["received"] + v["lost"] == v["expected"], where
    assert v["lost"] >= 0 and d["received"]["video_unexpected_sources"] == 0, where
    # audio, per slot: sequence gaps are the loss
    a = d["audio"]
    assert a["received"] > 0 and a["seq_gaps"] >= 0, where
    assert d["received"]["rtp"] == a["received"] + v["received"], (
        f"{where}: every received packet is an audio-slot or a subscribed video packet")
    # the loss the bench reports is the largest of the three, and small here
    assert d["loss"] == max(v["loss"], a["loss"], sft["ingress_loss"])
    assert d["loss"] <= 0.01, f"{where}: loss {d['loss']:.2%} with a handful of participants"
    # SRTP at the receivers: sampled, decrypted with the receiver's keys, routed right
    s = d["samples"]
    assert s["decrypted"] > 0 and s["failed"] == 0, f"{where}: {s}"
    assert s["route_bad"] == 0, f"{where}: CSRC names another publisher than the payload"
    assert d["latency_us"]["n"] > 0 and d["latency_us"]["p50"] > 0
    assert d["join_ms"]["n"] > 0 and d["join_ms"]["p50"] > 0
    # the CPU and memory figures exist
    assert point["cpu"]["wall"] > 0 and point["memory"]["rss"] > 0
    # exact not-idle time of core 0, which participants per vCPU divides by
    assert 0 < point["cpu"]["sft_core_busy"] <= 1.05, point["cpu"]
    assert point["participants_per_vcpu"] == round(
        point["participants"] / point["cpu"]["sft_core_busy"], 1)
    if system == "kernel":
        assert point["memory"].get("bpf_map_bytes", 0) > 0
    if system == "janus":
        # every subscribed stream is one known feed: audio is exact per source too,
        # and Janus's own counters (Admin API) close ingress and egress
        assert a["received"] + a["lost"] == a["expected"] and a["lost"] >= 0, where
        assert sft["ingress_lost"] == 0 and sft["egress_lost"] == 0, f"{where}: {sft}"
        size = d["conference_size"]
        per = min(5, size - 1) * 50 + min(9, size - 1) * 100  # subscribed pkt/s
        expected_pps = d["participants"] * per
        assert abs(d["received"]["pps"] - expected_pps) <= 0.1 * expected_pps, where


@needs_root
def test_bench_quick_accounting(tmp_path: Path) -> None:
    from sftd.sftload import bench

    systems = _systems()
    args = bench.parse_args(["--quick", "--systems", ",".join(systems),
                             "--require", ",".join(systems),
                             "--out", str(tmp_path), "--name", "smoke"])
    out = bench.bench(args)
    record = out["record"]
    assert [r["system"] for r in record["runs"]] == systems
    for run in record["runs"]:
        assert run["error"] is None, f"{run['system']}: {run['error']}"
        assert run["points"], f"{run['system']}: no points measured"
        for point in run["points"]:
            _check_point(run["system"], point)
        assert record["best"][run["system"]] is not None
    if "kernel" in systems:
        assert "kernel/userspace" in record["ratios"]
    if "janus" in systems:
        assert "userspace/janus" in record["ratios"]
        janus = next(r for r in record["runs"] if r["system"] == "janus")
        assert janus["config"]["event_loops"] == 1 and janus["config"]["record"] is False
    # the outputs a run writes
    bench.plot(out["runs"], tmp_path / "smoke.png", "smoke")
    assert (tmp_path / "smoke.png").stat().st_size > 0
    text = bench.table(out["runs"])
    assert "userspace" in text


def test_media_roundtrip() -> None:
    """Packets the C sender generates decrypt with libsrtp under the leg's keys,
    with the stamp, the RID and the audio level where the SFT reads them, a
    keyframe only on request, and a pause that keeps the sequence going."""
    from sftd.controller import rtp
    from sftd.sftload import media
    from sftd.sftload.fastpath import FastPath

    key = os.urandom(30)
    rx = media.session(key, inbound=True)
    sampler = media.SrtpReceiver(key)
    pub = media.Publisher(7, media.Streams(audio_ssrc=1111, video_ssrc=2222), 0)
    pub.v_seq = 65500  # the video stream wraps: the ROC must be right
    fp = FastPath(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        leg = fp.add_leg(unused.fileno(), ("127.0.0.1", 9))
    fp.set_publisher(leg, pub, key)
    kinds = {0: 0, 1: 0}
    keyframes = 0
    last_due = 0
    for i in range(300):
        if i == 150:  # a pause of 3 s: the schedule resumes there, the numbers go on
            fp.pause()
            fp.resume(last_due + 3_000_000_000)
        due, kind, packet = fp.generate(leg)
        assert due >= last_due
        if i == 150:
            assert due >= last_due + 3_000_000_000
        if i == 200:
            fp.request_keyframe(leg)  # a FIR: the next frame's first packet
        last_due = due
        plain = rx.unprotect(packet)
        seq = int.from_bytes(packet[2:4], "big")
        roc = 1 if kind == 1 and seq < 65500 else 0
        assert sampler.unprotect(packet, roc) == plain  # our sample decryptor == libsrtp
        with pytest.raises(media.SrtpError):
            sampler.unprotect(packet, roc + 1)
        view = rtp.parse(plain)
        info = media.parse_sample(plain, kind == 1)
        # generated outside the sending thread: stamped as built when due
        assert info.due_ns == info.built_ns == due and info.publisher == 7
        if kind == 0:
            assert view.ssrc == 1111 and len(plain) - view.payload_offset == media.AUDIO_PAYLOAD
            level = rtp.audio_level(plain, view, 1)
            assert level is not None and 0 < level < 110
        else:
            assert view.ssrc == 2222 and len(plain) - view.payload_offset == media.VIDEO_PAYLOAD
            assert rtp.find_extension(plain, view, 4) == b"h"
            keyframes += rtp.is_keyframe(plain, view, 0)
        kinds[kind] += 1
    assert kinds[1] == 2 * kinds[0] or abs(kinds[1] - 2 * kinds[0]) <= 2
    assert keyframes == 2  # the first frame, then only on FIR/PLI
    assert fp.leg_stat(leg)["keyframes"] == 2
    fp.close()


@needs_root
def test_bench_quick_accounting_with_the_xdp_sink(tmp_path: Path) -> None:
    """``--sink xdp``: the generator counts in XDP and decrypts only sampled packets;
    the accounting closes exactly as with the sockets counting."""
    from sftd.sftload import bench

    # one conference of 5 (the quick ramp's second point overloads a shared CI core)
    args = bench.parse_args(["--systems", "userspace", "--require", "userspace",
                             "--max-participants", "5", "--conference-size", "5",
                             "--duration", "3", "--warmup", "6",
                             "--sink", "xdp", "--sample-every", "20",
                             "--out", str(tmp_path), "--name", "sink"])
    (run,) = bench.bench(args)["record"]["runs"]
    assert run["error"] is None, run["error"]
    assert run["points"]
    for point in run["points"]:
        _check_point("userspace", point)
        d = point["detail"]
        # 1 in 20 per leg reached the sockets (with STUN, SRTCP) and was decrypted
        assert d["generator"]["sink"] == "xdp"
        assert d["generator"]["socket_datagrams"] < d["received"]["rtp"] / 10
        assert 0 < d["samples"]["decrypted"] <= d["received"]["rtp"] // 20 + d["participants"]
