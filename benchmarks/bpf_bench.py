"""ns per egress packet of the kernel data plane (not a test).

Runs the real sft_tc_ingress through BPF_PROG_TEST_RUN in a throw-away network
namespace (veth pair), maps filled by KernelDataPlane, for audio-sized (100 B)
and video-sized (1200 B) payloads at fan-out 1, 9 and 49. Needs root.

Every packet is a new SRTP packet (next sequence number): a repeated packet is
a replay and is dropped after the HMAC check, so ``repeat`` would measure the
replay path, reported separately. The kernel's own per-run ``duration`` is
used, so Python's overhead between runs does not count. The receiving end of
the veth pair is down: copies are dropped right after the program's
``bpf_clone_redirect``, so the receiver's network stack (run in the same
softirq section as the test run) is not charged to the SFT.

    sudo .venv/bin/python benchmarks/bpf_bench.py [--packets 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from harness import Namespace, make_peer, one_byte_ext, rtp  # noqa: E402

from bpf.dataplane import KernelDataPlane  # noqa: E402
from controller.dataplane import Counter, Layer, SlotSource, StreamKind  # noqa: E402

AUDIO_SSRC, VIDEO_SSRC = 0x0A0A0A0A, 0x0B0B0B0B


def bench(kind: StreamKind, payload: int, fanout: int,
          packets: int) -> tuple[float, float, float, float]:
    """(median and 10th-percentile ns per received packet, median ns per egress
    copy, ns of the replay-drop path)."""
    with Namespace() as ns:
        dp = KernelDataPlane((), (40000, 40999), instance=f"bench{os.getpid()}",
                             keystream_entries=32768)
        try:
            pub = make_peer(0, 40000)
            subs = [make_peer(i + 1, 40001 + i, remote_ip=f"10.77.0.{20 + i}", n_audio=1,
                              n_video=1) for i in range(fanout)]
            for peer in [pub, *subs]:
                dp.add_leg(peer.spec)
            dp.set_publisher(pub.leg_id, (AUDIO_SSRC,), {VIDEO_SSRC: Layer.HIGH})
            for sub in subs:
                dp.set_slot(sub.leg_id, kind, 0, SlotSource(pub.leg_id, csrc=0x1234))
            ns.ip("link", "set", "cap0", "down")
            ssrc, pt = (AUDIO_SSRC, 111) if kind == StreamKind.AUDIO else (VIDEO_SSRC, 100)
            ext = (one_byte_ext((1, b"\x90")) if kind == StreamKind.AUDIO
                   else one_byte_ext((11, b"\x80\x00\x00\x00"), (4, b"h")))
            durations = []
            last = b""
            for seq in range(packets + 1):
                frame = pub.frame(pub.sender.protect(
                    rtp(seq, seq * 960, ssrc, os.urandom(payload), pt=pt, ext=ext)))
                run = dp.tc_program.test_run(frame)
                dp.maintain()
                if seq:  # the first packet only primes the keystream
                    durations.append(run.duration_ns)
                last = frame
            # the down peer makes each clone's transmit fail after it was built
            sent = (dp.read_counters()[Counter.TX_PACKETS]
                    + dp.read_kernel_counters()["TC_CLONE_FAILED"])
            assert sent == packets * fanout, f"forwarded {sent}, expected {packets * fanout}"
            replay = dp.tc_program.test_run(last, repeat=1000).duration_ns
            per_packet = statistics.median(durations)
            fast = sorted(durations)[len(durations) // 10]
            return per_packet, fast, per_packet / fanout, replay
        finally:
            dp.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=300)
    args = parser.parse_args()
    print(f"{'payload':>8} {'fan-out':>8} {'ns/packet in':>13} {'p10':>8} {'ns/egress':>10} "
          f"{'replay drop':>12}")
    for kind, payload in ((StreamKind.AUDIO, 100), (StreamKind.VIDEO, 1200)):
        for fanout in (1, 9, 49):
            per_packet, fast, per_copy, replay = bench(kind, payload, fanout, args.packets)
            print(f"{payload:>7}B {fanout:>8} {per_packet:>13.0f} {fast:>8.0f} {per_copy:>10.0f} "
                  f"{replay:>12.0f}")


if __name__ == "__main__":
    main()
