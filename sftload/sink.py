"""``--sink xdp``: the generator counts received media in a BPF program at TC
ingress of its veth end (``bpf/src/sink.bpf.c``) and drops it, so at hundreds of
participants the receiving side costs no syscalls or copies. (The option keeps
its first name: it was an XDP program, which could not see the kernel plane's
copies.) One packet in ``sample_every`` per leg still reaches the leg's socket,
where the C receiver hands it to the sampler (decrypt, route and latency
checks) as before; its SRTP rollover counter comes from the sink's sequence
numbers (``XdpSink.pop_samples``), since the receiver sees too little.

The counts have the C receiver's shape (``FastPath.leg_stat``, ``slot_stats``,
``csrc_stats``); :meth:`XdpSink.refresh` reads the maps once per snapshot.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

from sftd.bpf import abi as abi_mod
from sftd.bpf.xdpprog import PinnedXdpProgram, XdpProgramError

from .fastpath import FastPath, Received, SlotStat

OBJECT_PATH = Path(abi_mod.PACKAGE_DIR) / "build" / "sink.bpf.o"
PROGRAM = "sft_sink"
MAPS = ("sft_sink_config", "sft_sink_legs", "sft_sink_leg_slots", "sft_sink_slots",
        "sft_sink_csrcs")
# what the sink counts in place of the C receiver (FastPath.leg_stat keys)
LEG_FIELDS = ("rx_rtp", "rx_bytes", "rx_unknown_ssrc", "rx_no_csrc", "first_audio_ns",
              "first_video_ns")


def interface_of(address: str) -> str:
    """The interface of this namespace that holds ``address`` (the generator's veth end)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            if msg.get_attr("IFA_ADDRESS") == address:
                return str(ipr.get_links(msg["index"])[0].get_attr("IFLA_IFNAME"))
    raise XdpProgramError(f"no interface holds {address}: --sink xdp needs the generator's "
                          "own address (--local-address)")


def extend_sequence(highest: int, seq: int) -> int:
    """The extended sequence number of ``seq``, a packet at or before the
    stream's extended ``highest`` (counted before the packet was passed on)."""
    return highest - ((highest - seq) & 0xFFFF)


def _be32(addr: str) -> int:
    return int.from_bytes(ipaddress.IPv4Address(addr).packed, "little")


class XdpSink:
    """The sink on one interface; answers the receive-side statistics of ``fp``."""

    def __init__(self, fp: FastPath, ifname: str, sample_every: int, instance: str) -> None:
        if sample_every < 1:
            raise ValueError(f"sample_every must be >= 1, not {sample_every}")
        self._abi = abi_mod.load()
        self.sample_every = sample_every
        self.prog = PinnedXdpProgram(OBJECT_PATH, PROGRAM, MAPS, ifname, f"sink-{instance}",
                                     tc_hook=True)
        self.maps = self.prog.maps
        try:
            self.maps["sft_sink_config"].update(
                struct.pack("<I", 0), self._abi.pack("sft_sink_config", sample_every=sample_every))
        except BaseException:
            self.prog.close()
            raise
        # TC ingress runs after RPS, on the generator's core (netns.py); a driver-mode
        # XDP program on a veth would run in the sending CPU's NAPI, the SFT's.
        self.prog.attach()
        self.fp = fp
        self._leg_keys: dict[int, bytes] = {}  # leg -> its port, the legs map's key
        self._slots: dict[int, list[int]] = {}  # leg -> its slot SSRCs, in place order
        self._first_slot: dict[int, int] = {}  # leg -> its first index in sft_sink_slots
        self._next_slot = 0
        self._legs: dict[int, Any] = {}
        self._slot_stats: dict[int, list[SlotStat]] = {}
        self._csrcs: dict[int, dict[tuple[int, int], int]] = {}

    def set_sample_every(self, sample_every: int) -> None:
        """From now on 1 packet in ``sample_every`` per leg reaches the socket."""
        if sample_every < 1:
            raise ValueError(f"sample_every must be >= 1, not {sample_every}")
        self.maps["sft_sink_config"].update(
            struct.pack("<I", 0), self._abi.pack("sft_sink_config", sample_every=sample_every))
        self.sample_every = sample_every

    def add_leg(self, leg: int, local: tuple[str, int]) -> None:
        """Media to ``local`` (the leg's socket) is counted as leg ``leg``."""
        per_leg, total = self._abi.consts.SFT_SINK_LEG_SLOTS, self._abi.consts.SFT_SINK_MAX_SLOTS
        if self._next_slot + per_leg > total:
            raise ValueError(f"the sink counts at most {total // per_leg} legs")
        key = struct.pack("<I", local[1])
        self._first_slot[leg] = self._next_slot
        self._next_slot += per_leg
        self._slots[leg] = []
        self._write_leg_slots(leg, key)
        self.maps["sft_sink_legs"].update(
            key, self._abi.pack("sft_sink_leg", leg=leg, local_ip=_be32(local[0])))
        self._leg_keys[leg] = key

    def add_slot(self, leg: int, ssrc: int, kind: int) -> None:
        """Counts the leg's RTP of ``ssrc`` (a slot the SFT announced) as ``kind``."""
        slots = self._slots[leg]
        if len(slots) >= self._abi.consts.SFT_SINK_LEG_SLOTS:
            raise ValueError(f"the sink counts at most {len(slots)} slots per leg")
        self.maps["sft_sink_slots"].update(self._slot_at(leg, len(slots)),
                                           self._abi.pack("sft_sink_slot", kind=kind))
        slots.append(ssrc)
        self._write_leg_slots(leg, self._leg_keys[leg])

    def _write_leg_slots(self, leg: int, key: bytes) -> None:
        slots = self._slots[leg]
        self.maps["sft_sink_leg_slots"].update(key, self._abi.pack(
            "sft_sink_leg_slots", first=self._first_slot[leg], count=len(slots), ssrc=slots))

    def _slot_at(self, leg: int, place: int) -> bytes:
        """The sft_sink_slots key of the leg's slot number ``place``."""
        return struct.pack("<I", self._first_slot[leg] + place)

    def _slot_key(self, leg: int, ssrc: int) -> bytes | None:
        """The sft_sink_slots key of the leg's slot for ``ssrc``; None if not the leg's."""
        try:
            return self._slot_at(leg, self._slots[leg].index(ssrc))
        except (KeyError, ValueError):
            return None

    def pop_samples(self) -> list[Received]:
        """The sampled RTP as ``FastPath.pop_samples``, but with each packet's ROC
        from the sink's sequence numbers. The C receiver sees only the samples, so
        for a stream that wrapped before its first sample it would start at ROC 0
        one wrap behind the sender, and every sample of it would fail to
        authenticate; the sink counted every packet of the stream."""
        samples = self.fp.pop_samples()
        highest: dict[tuple[int, int], int | None] = {}  # one map read per stream and call
        out = []
        for leg, data, addr, recv_ns, roc, kernel_ns in samples:
            ssrc, seq = int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")
            key = (leg, ssrc)
            if key not in highest:
                highest[key] = self.extended_highest(leg, ssrc)
            top = highest[key]
            if top is not None:  # else a stream the sink does not count: the receiver's
                roc = extend_sequence(top, seq) >> 16
            out.append((leg, data, addr, recv_ns, roc, kernel_ns))
        return out

    def extended_highest(self, leg: int, ssrc: int) -> int | None:
        """The highest extended sequence number the sink counted on (leg, SSRC);
        None for a stream it has not counted."""
        key = self._slot_key(leg, ssrc)
        raw = self.maps["sft_sink_slots"].lookup(key) if key is not None else None
        if not raw:
            return None
        slot = self._abi.unpack("sft_sink_slot", raw)
        return int(slot.ext_max) if slot.started else None

    def refresh(self) -> None:
        """Reads every leg's, slot's and CSRC's counts from the maps."""
        unpack = self._abi.unpack
        self._legs = {}
        self._slot_stats = {}
        for leg, key in self._leg_keys.items():
            raw = self.maps["sft_sink_legs"].lookup(key)
            self._legs[leg] = unpack("sft_sink_leg", raw) if raw else None
        self._csrcs = {leg: {} for leg in self._leg_keys}
        for raw_key, raw_value in self.maps["sft_sink_csrcs"].lookup_all():
            k = unpack("sft_sink_csrc_key", raw_key)
            if int(k.leg) in self._csrcs:
                self._csrcs[int(k.leg)][(int(k.kind), int(k.csrc))] = \
                    struct.unpack("<Q", raw_value)[0]
        for leg in self._leg_keys:
            stats = []
            heard = self._csrcs[leg]
            for place, ssrc in enumerate(self._slots[leg]):
                raw = self.maps["sft_sink_slots"].lookup(self._slot_at(leg, place))
                if raw:
                    s = unpack("sft_sink_slot", raw)
                    stats.append(SlotStat(ssrc, int(s.kind), int(s.packets), int(s.ext_max),
                                          int(s.base), int(s.reordered), bool(s.started)))
                    if s.csrc_packets:  # the open run, not yet in the map
                        key = (int(s.kind), int(s.csrc))
                        heard[key] = heard.get(key, 0) + int(s.csrc_packets)
            self._slot_stats[leg] = stats

    def leg_stat(self, leg: int) -> dict[str, int]:
        """The C receiver's leg statistics with the sink's counts in place."""
        receiver = self.fp.leg_stat(leg)
        counted = self._legs.get(leg)
        if counted is None:
            return receiver
        return {**receiver, **{name: int(getattr(counted, name)) for name in LEG_FIELDS}}

    def slot_stats(self, leg: int) -> list[SlotStat]:
        return self._slot_stats.get(leg, [])

    def csrc_stats(self, leg: int) -> dict[tuple[int, int], int]:
        return self._csrcs.get(leg, {})

    def close(self) -> None:
        self.prog.close()
