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

``--keystream`` measures instead the controller's AES-CM keystream precomputation
(µs per keystream entry written into the mmapped map, audio 512 B / video 1456 B,
by batch size: the former per-entry big-integer implementation and the native fill
of bpf/native/keystream.c, run in the same process), and the periodic top-up
(``maintain``) of a conference of ``--participants`` at the Wire mix, as a share of
one core:

    sudo .venv/bin/python benchmarks/bpf_bench.py --keystream [--participants 20]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from harness import Namespace, make_peer, one_byte_ext, rtp  # noqa: E402

from sftd.bpf.dataplane import AUDIO_KEYSTREAM_BYTES, KernelDataPlane  # noqa: E402
from sftd.bpf.rings import KeystreamRing  # noqa: E402
from sftd.bpf.srtp import SrtpSession  # noqa: E402
from sftd.controller.dataplane import Counter, Layer, SlotSource, StreamKind  # noqa: E402

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


# ---- keystream precomputation (controller side) ----

@functools.cache
def _reference_lanes(n_blocks: int) -> tuple[int, int]:
    lanes = sum(j << (128 * (n_blocks - 1 - j)) for j in range(n_blocks))
    repeat = sum(1 << (128 * k) for k in range(n_blocks))
    return lanes, repeat


def _reference_write(dp: KernelDataPlane, ring: KeystreamRing, indices: range) -> None:
    """The former implementation, kept for comparison: counter blocks as Python big
    integers, a new AES-ECB context per call, one mmap write sequence per entry."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    session, length = ring.session, ring.length
    n_blocks = (length + 15) // 16
    lanes, repeat = _reference_lanes(n_blocks)
    base = (int.from_bytes(session.salt, "big") << 16) ^ (ring.ssrc << 64)
    size = n_blocks * 16
    counters = b"".join(
        (((base ^ ((index & 0xFFFFFFFFFFFF) << 16)) * repeat) | lanes).to_bytes(size, "big")
        for index in indices)
    encryptor = Cipher(algorithms.AES(session.enc_key), modes.ECB()).encryptor()
    stream = encryptor.update(counters) + encryptor.finalize()
    stride = dp.maps["sft_keystream"].entry_stride
    bytes_off = dp.abi.ffi.offsetof("struct sft_keystream", "bytes")
    mm = dp._keystream.mm
    for i, index in enumerate(indices):
        ks = stream[i * size:i * size + length]
        off = (ring.base + (index & (ring.size - 1))) * stride
        struct.pack_into("<Q", mm, off, 0)
        mm[off + bytes_off:off + bytes_off + len(ks)] = ks
        struct.pack_into("<IHH", mm, off + 8, ring.ssrc, len(ks), 0)
        struct.pack_into("<Q", mm, off, index + 1)
    ring.filled_until = indices[-1] + 1


def _per_entry_us(write, dp: KernelDataPlane, ring: KeystreamRing, batch: int,
                  entries: int = 2048, rounds: int = 7) -> float:
    """Median over rounds of µs per keystream entry written in batches of ``batch``."""
    index, results = 65000, []
    for _ in range(rounds):
        start, done = time.process_time_ns(), 0
        while done < entries:
            write(dp, ring, range(index, index + batch))
            index += batch
            done += batch
        results.append((time.process_time_ns() - start) / done / 1000)
    return statistics.median(results)


def _native_write(dp: KernelDataPlane, ring: KeystreamRing, indices: range) -> None:
    dp._keystream.write(ring, indices)


def _batch_write(rings: list[KeystreamRing]):  # type: ignore[no-untyped-def]
    """A maintain()-shaped batch: the same run on each of ``rings`` in one call."""
    def run(dp: KernelDataPlane, _ring: KeystreamRing, indices: range) -> None:
        dp._keystream.write_runs([(r, indices[0], len(indices)) for r in rings])
    return run


def keystream_entry_bench(dp: KernelDataPlane) -> list[dict]:
    rows = []
    for kind, length, size in (("audio", AUDIO_KEYSTREAM_BYTES, 32), ("video", 1456, 128)):
        ring = KeystreamRing(base=dp._rings.alloc(size), size=size, ssrc=0x12345678,
                     session=SrtpSession.from_master(os.urandom(30)), length=length)
        for batch in (1, 2, 4, size // 2):
            before = _per_entry_us(_reference_write, dp, ring, batch)
            native_us = _per_entry_us(_native_write, dp, ring, batch)
            rows.append({"kind": kind, "bytes": length, "rings": 1, "batch": batch,
                         "before_us_per_entry": round(before, 2),
                         "native_us_per_entry": round(native_us, 2)})
        # 16 rings of different keys per call, as maintain() batches its top-ups
        rings = [KeystreamRing(base=dp._rings.alloc(size), size=size, ssrc=0x1000 + k,
                       session=SrtpSession.from_master(os.urandom(30)), length=length)
                 for k in range(16)]
        for batch in (size // 4, size // 2):
            native_us = _per_entry_us(_batch_write(rings), dp, ring, batch,
                                      entries=2048 // 16) / 16
            rows.append({"kind": kind, "bytes": length, "rings": 16, "batch": batch,
                         "before_us_per_entry": float("nan"),
                         "native_us_per_entry": round(native_us, 2)})
    return rows


def maintain_bench(dp: KernelDataPlane, participants: int, seconds: float = 3.0) -> dict:
    """A conference of ``participants`` at the Wire mix (each publishes 50 audio + 100
    video packets/s and receives 5 audio + 9 video slots): the kernel's consumption
    is simulated by advancing each slot's next_index and each stream's highest_index
    in the maps, then ``maintain()`` runs every 20 ms as in sftd. Reports its CPU."""
    peers = [make_peer(i, 40000 + i, remote_ip=f"10.77.1.{(i % 250) + 1}", n_audio=5,
                       n_video=9) for i in range(participants)]
    for peer in peers:
        dp.add_leg(peer.spec)
        dp.set_publisher(peer.leg_id, (0xA000 + peer.leg_id,), {0xB000 + peer.leg_id: Layer.HIGH})
    for n, peer in enumerate(peers):
        others = [p for p in peers if p is not peer]
        for k in range(min(5, len(others))):
            dp.set_slot(peer.leg_id, StreamKind.AUDIO, k,
                        SlotSource(others[(n + k) % len(others)].leg_id, csrc=1))
        for k in range(min(9, len(others))):
            dp.set_slot(peer.leg_id, StreamKind.VIDEO, k,
                        SlotSource(others[(n + k) % len(others)].leg_id, csrc=1))
    dp.maintain()
    stream_state = dp.maps["sft_stream_state"]
    active = [s for s in dp._slots.values() if s.source is not None]
    streams = [(peer.leg_id, ssrc, kind) for peer in peers
               for ssrc, kind in ((0xA000 + peer.leg_id, 0), (0xB000 + peer.leg_id, 1))]
    highest = dict.fromkeys(streams, 1000)
    step_s = 0.02
    ticks = int(seconds / step_s)
    cpu = 0.0
    for _ in range(ticks):
        for slot in active:  # 50 audio / 100 video packets per second per slot
            per_tick = 1 if slot.kind == StreamKind.AUDIO else 2
            dp.maps.slot_state(slot.slot_id).next_index += per_tick
        for key in streams:
            highest[key] += 1 if key[2] == 0 else 2
            stream_state.update(dp.abi.pack("sft_stream_key", leg_id=key[0], ssrc=key[1]),
                                dp.abi.pack("sft_stream_state", highest_index=highest[key],
                                            replay_window=1, kind=key[2]))
        start = time.process_time()
        dp.maintain()
        cpu += time.process_time() - start
        assert dp.read_kernel_counters()["TC_TX_KEYSTREAM_MISS"] == 0
    entries_per_s = (sum(50 if s.kind == StreamKind.AUDIO else 100 for s in active)
                     + participants * 150)  # slots (tx) + published streams (rx)
    return {"participants": participants, "slots": len(active), "streams": len(streams),
            "entries_per_s": entries_per_s,
            "maintain_cpu_share_of_core": round(cpu / (ticks * step_s), 4),
            "us_per_entry": round(cpu / (ticks * step_s) / entries_per_s * 1e6, 2)}


def _sftd_rings() -> tuple[int, int]:
    """The keystream ring sizes sftd uses (bpf/sizing.py), else the class defaults."""
    try:
        from sftd.bpf.sizing import KEYSTREAM_AUDIO_RING, KEYSTREAM_VIDEO_RING
        return KEYSTREAM_AUDIO_RING, KEYSTREAM_VIDEO_RING
    except ImportError:
        return 32, 128


def keystream_main(participants: int) -> None:
    audio_ring, video_ring = _sftd_rings()
    dp = KernelDataPlane((), (40000, 40999), instance=f"ksbench{os.getpid()}",
                         keystream_entries=4096)
    try:
        rows = keystream_entry_bench(dp)
        print(f"{'kind':>6} {'bytes':>6} {'rings':>6} {'batch':>6} {'big-int µs/entry':>17} "
              f"{'native µs/entry':>16}   (CPU time)")
        for r in rows:
            print(f"{r['kind']:>6} {r['bytes']:>6} {r['rings']:>6} {r['batch']:>6} "
                  f"{r['before_us_per_entry']:>17.2f} {r['native_us_per_entry']:>16.2f}")
    finally:
        dp.close()
    top_ups = []
    configs = [(audio_ring, video_ring)]
    if (audio_ring, video_ring) != (32, 128):
        configs.append((32, 128))
    for rings in configs:
        dp = KernelDataPlane((), (40000, 40999), instance=f"ksbench{os.getpid()}",
                             keystream_entries=1 << (participants * (5 * rings[0] + 9 * rings[1]
                                                                     + 4 * rings[1])).bit_length(),
                             audio_ring=rings[0], video_ring=rings[1])
        try:
            top_up = maintain_bench(dp, participants)
            top_up["rings"] = {"audio": rings[0], "video": rings[1]}
            top_ups.append(top_up)
            print(f"maintain() at the Wire mix, {participants} participants, rings "
                  f"{rings[0]}/{rings[1]}: "
                  f"{top_up['entries_per_s']} keystream entries/s, "
                  f"{100 * top_up['maintain_cpu_share_of_core']:.1f} % of a core "
                  f"({top_up['us_per_entry']:.2f} µs per entry, events/leases included)")
        finally:
            dp.close()
    print(json.dumps({"keystream": rows, "maintain": top_ups}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=300)
    parser.add_argument("--keystream", action="store_true",
                        help="measure the keystream precomputation instead")
    parser.add_argument("--participants", type=int, default=20)
    args = parser.parse_args()
    if args.keystream:
        keystream_main(args.participants)
        return
    print(f"{'payload':>8} {'fan-out':>8} {'ns/packet in':>13} {'p10':>8} {'ns/egress':>10} "
          f"{'replay drop':>12}")
    for kind, payload in ((StreamKind.AUDIO, 100), (StreamKind.VIDEO, 1200)):
        for fanout in (1, 9, 49):
            per_packet, fast, per_copy, replay = bench(kind, payload, fanout, args.packets)
            print(f"{payload:>7}B {fanout:>8} {per_packet:>13.0f} {fast:>8.0f} {per_copy:>10.0f} "
                  f"{replay:>12.0f}")


if __name__ == "__main__":
    main()
