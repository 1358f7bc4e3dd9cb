"""``KernelDataPlane``: the DataPlane of controller/dataplane.py, in eBPF.

Once a leg's ICE and DTLS are done (``add_leg``), its SRTP never reaches the
interpreter: ``sft_xdp_ingress`` (XDP, on the NIC) sends STUN/DTLS/RTCP to the
socket and drops junk aimed at the media ports; ``sft_tc_ingress`` (clsact
ingress) verifies, decrypts, rewrites, re-protects and clones every packet to
the subscribed slots and drops the original.

This class implements the DataPlane verbs and keeps the controller's record of
legs and slots; the rest has a module each: ``attach`` (pins, interfaces),
``maps`` (map verbs through ``sft_abi.h``), ``rings`` (keystream ring
allocation), ``keystream`` (the native keystream fill), ``maintenance`` (the
refill decisions and the thread that runs them off the event loop),
``arrivals`` (transport-wide arrival records). Two periodic jobs remain in
user space: topping up the AES-CM keystream rings the kernel XORs with, and
renewing each leg's lease (the kernel stops a leg whose lease is older than
30 s, so a dead controller cannot leave media flowing).

Pins live under ``/sys/fs/bpf/sftd/<instance>/``; a new instance first
removes what a crashed one of the same name left behind.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sftd.controller.dataplane import (
    LAYER_PAUSED_AFTER,
    SRTP_AES_CM_128_HMAC_SHA1_80,
    UNVALIDATED_SOURCE,
    Counter,
    Layer,
    LegMedia,
    LegSpec,
    ReceiveStats,
    SlotSource,
    StreamKind,
)

from . import abi as abi_mod
from . import attach, libbpf
from .arrivals import TwccRings
from .errors import KernelDataPlaneError
from .keystream import KeystreamWriter, NativeKeystreamMissing, native_module
from .maintenance import KeystreamRefill, MaintenanceThread
from .maps import MAPS, KernelMaps, be16, ipv4_be32
from .rings import (
    AUDIO_KEYSTREAM_BYTES,
    KeystreamRing,
    RingAllocator,
    leg_keystream_entries,
    leg_ring_sizes,
)
from .srtp import SrtpSession
from .state import KernelLegRecord, KernelSlotRecord, KernelStreamRecord

# what callers import from here (signalling/cli.py, tests, benchmarks)
__all__ = ["AUDIO_KEYSTREAM_BYTES", "OBJECT_PATH", "PIN_ROOT", "TC_PRIORITY",
           "KernelDataPlane", "KernelDataPlaneError", "kernel_available",
           "leg_keystream_entries", "leg_ring_sizes"]

log = logging.getLogger(__name__)

OBJECT_PATH = Path(__file__).resolve().parent / "build" / "sft.bpf.o"
PIN_ROOT = attach.PIN_ROOT
TC_PRIORITY = attach.TC_PRIORITY
# media of a leg reaching user space this soon after add_leg was queued in its
# socket before the maps were written: counted apart from a missed path
TAKEOVER_GRACE_S = 1.0  # Opus at 40 ms stays far below
# Kernel failures that should never happen in a healthy node, logged once each
# (the counters go on in /metrics): detail counter name -> what to do.
KERNEL_FAILURE_ADVICE = {
    "TC_EVENT_LOST": "the kernel's event ring buffer was full, so keystream refill "
                     "requests were lost (media waits for the next top-up): the maintenance "
                     "thread is starved of CPU; give sftd more CPU or fewer participants",
    "TC_STREAM_STATE_FAILED": "the kernel could not store a new SSRC's receive state "
                              "(map full): lower --max-participants",
    "TC_CONF_COUNTER_FULL": "the per-conference packet counter map is full: packets are "
                            "forwarded but not counted per conference; this is a bug, "
                            "please report it",
}
_T = TypeVar("_T")


def _locked(method: Callable[..., _T]) -> Callable[..., _T]:
    """Runs the method under the data plane's lock (see KernelDataPlane._lock)."""
    @functools.wraps(method)
    def wrapper(self: KernelDataPlane, *args: Any, **kwargs: Any) -> _T:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def kernel_available(object_path: Path = OBJECT_PATH) -> tuple[bool, str]:
    """Whether this process can run the kernel data plane, and if not, why."""
    if os.geteuid() != 0:
        return False, "not root: loading BPF programs needs CAP_BPF and CAP_NET_ADMIN"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return False, "the kernel has no BTF (/sys/kernel/btf/vmlinux)"
    if not os.path.ismount(libbpf.BPFFS):
        return False, "bpffs is not mounted: mount -t bpf bpf /sys/fs/bpf"
    if not object_path.exists():
        return False, f"{object_path} is not built: make -C bpf"
    try:
        libbpf.lib()
        abi_mod.load()
        native_module()
    except (libbpf.BpfError, abi_mod.AbiUnavailable, NativeKeystreamMissing, OSError) as exc:
        return False, str(exc)
    return True, "ok"


class KernelDataPlane:
    name = "kernel"
    srtp_profiles = (SRTP_AES_CM_128_HMAC_SHA1_80,)

    def __init__(self, interfaces: Sequence[str] = (),
                 media_ports: tuple[int, int] = (32768, 61000), instance: str = "default", *,
                 xdp: bool = True,
                 object_path: Path = OBJECT_PATH, keystream_entries: int = 16384,
                 audio_ring: int = 32, video_ring: int = 128, ingress_ring_factor: int = 4,
                 lease_renew_s: float = 10.0, maintain_interval_s: float = 0.02,
                 top_up_interval_s: float = 0.05,
                 slot_initial_index: Callable[[], int] | None = None,
                 layer_paused_after: float = LAYER_PAUSED_AFTER) -> None:
        ok, reason = kernel_available(object_path)
        if not ok:
            raise KernelDataPlaneError(f"kernel data plane unavailable: {reason}")
        if "/" in instance or not instance:
            raise KernelDataPlaneError(f"bad instance name {instance!r}")
        self.instance = instance
        self.pin_dir = PIN_ROOT / instance
        self.abi = abi_mod.load()
        self._c = self.abi.consts
        self._tc_handle = attach.tc_handle(instance)
        self._audio_ring = audio_ring
        self._video_ring = video_ring
        # a publisher's packet lost to a keystream miss is lost to every subscriber:
        # its ring gets the slack for a controller kept off the core by softirq
        self._ingress_ring_factor = ingress_ring_factor
        self._lease_renew_ns = int(lease_renew_s * 1e9)
        self._maintain_interval = maintain_interval_s
        # sftd's smallest ring (an audio slot: 16 entries, 50 packets/s) is topped up
        # once a quarter is used: 80 ms; every 50 ms keeps most of the rest as slack
        self._top_up_interval = top_up_interval_s
        self._slot_initial_index = slot_initial_index or (lambda: secrets.randbelow(0x8000))
        self._legs: dict[int, KernelLegRecord] = {}
        self._slots: dict[int, KernelSlotRecord] = {}
        self._fed_by: dict[int, dict[int, None]] = {}  # publisher -> its slot ids, in order
        # FIFO: a freed slot id comes back last, long after any packet that read it
        self._free_slot_ids = collections.deque(range(self._c.SFT_MAX_SLOTS))
        self._free_twcc_rings = collections.deque(range(self._c.SFT_TWCC_RINGS))
        self._leg_paths: dict[int, str] = {}  # leg_id -> interface its media takes
        self._userspace_packets = 0
        self._unvalidated_packets = 0
        self._streams_refused = 0
        self._early_packets = 0
        self._stranded: dict[int, int] = {}  # leg_id -> its USERSPACE_MEDIA packets
        self._warned_userspace: set[int] = set()
        self._added_at: dict[int, float] = {}
        self._last_lease = 0
        self._failures_logged: set[str] = set()  # KERNEL_FAILURE_ADVICE names
        # keystream top-ups run on their own thread, so that the event loop's work
        # (joins, DTLS, data channels) cannot delay them past a ring's slack;
        # the lock guards the controller-side state both threads touch
        self._lock = threading.RLock()
        self._worker: MaintenanceThread | None = None
        self._closed = False

        attach.remove_stale(self.pin_dir, self._tc_handle, instance)
        self.obj = libbpf.BpfObject.open(object_path)
        try:
            self.obj.set_max_entries("sft_keystream", keystream_entries)
            self.obj.load(attach.PROGRAMS)
            self.maps = KernelMaps(self.obj, self.abi)
            self.xdp_program = self.obj.program("sft_xdp_ingress")
            self.tc_program = self.obj.program("sft_tc_ingress")
            self._attach = attach.Attachments(self.xdp_program, self.tc_program,
                                              self._tc_handle)
            attach.pin(self.obj, self.maps.items(), self.pin_dir)
            self._keystream = KeystreamWriter(self.maps["sft_keystream"], self.abi)
            self._refill = KeystreamRefill(self._keystream, self.maps)
            self._twcc = TwccRings(self.maps["sft_twcc_rings"], self.abi)
            self._rings = RingAllocator(keystream_entries)
            self._events = libbpf.RingBuffer(self.maps["sft_events"], self._on_event)
            self.maps.write_config(media_ports, int(layer_paused_after * 1e9))
            for ifname in interfaces:
                self._attach.attach(ifname, xdp)
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ----

    @property
    def attachments(self) -> list[libbpf.Attachment]:
        """The programs' attachments, in the order made."""
        return self._attach.attachments

    def legs_by_interface(self) -> dict[str, int]:
        """Live legs per interface their media takes (for logs and metrics)."""
        with self._lock:
            counts: dict[str, int] = {}
            for leg_id in self._legs:
                ifname = self._leg_paths.get(leg_id, "unresolved")
                counts[ifname] = counts.get(ifname, 0) + 1
            return counts

    def close(self) -> None:
        """Detach, unpin and free everything this instance created."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._worker.stop()
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        # what a constructor that failed midway did not make is missing
        for part in ("_attach", "_events", "_twcc", "_keystream", "maps"):
            made = getattr(self, part, None)
            if made is not None:
                made.close()
        attach.unpin(self.pin_dir, MAPS)
        obj = getattr(self, "obj", None)
        if obj is not None:
            obj.close()

    def __enter__(self) -> KernelDataPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- legs ----

    def _leg_value(self, spec: LegSpec, rx: SrtpSession, tx: SrtpSession,
                   twcc_ring: int) -> Any:
        # a netlink request on a helper thread while the caller (maybe the loop) waits
        route = libbpf.call_on_loopless_thread(self._attach.resolve_route, spec.remote_addr[0])
        rx_inner, rx_outer = rx.hmac_states()
        tx_inner, tx_outer = tx.hmac_states()
        value = self.abi.new(
            "sft_leg", leg_id=spec.leg_id,
            conference_id=spec.conference_id, local_ip=ipv4_be32(spec.local_addr[0]),
            remote_ip=ipv4_be32(spec.remote_addr[0]), local_port=be16(spec.local_addr[1]),
            remote_port=be16(spec.remote_addr[1]), ifindex=route.ifindex if route else 0,
            ext_audio_level=spec.extensions.audio_level, ext_rid=spec.extensions.rid,
            ext_frame_descriptor=spec.extensions.frame_descriptor,
            ext_transport_cc=spec.extensions.transport_cc, twcc_ring=twcc_ring,
            flags=self._c.SFT_LEG_ACTIVE)
        if route:
            value.src_mac = list(route.src_mac)
            value.dst_mac = list(route.dst_mac)
            self._leg_paths[spec.leg_id] = self._attach.serve_path(spec.leg_id, route.ifindex)
        else:
            self._leg_paths[spec.leg_id] = "unresolved"
            log.warning("leg %d: no route to %s yet; its subscribers get nothing until the "
                        "address resolves (check `ip route get %s`)", spec.leg_id,
                        spec.remote_addr[0], spec.remote_addr[0])
        value.rx_auth.inner.h = list(rx_inner)
        value.rx_auth.outer.h = list(rx_outer)
        value.tx_auth.inner.h = list(tx_inner)
        value.tx_auth.outer.h = list(tx_outer)
        return value

    @_locked
    def add_leg(self, spec: LegSpec) -> None:
        if spec.srtp.profile != SRTP_AES_CM_128_HMAC_SHA1_80:
            raise KernelDataPlaneError(
                f"leg {spec.leg_id}: SRTP profile {spec.srtp.profile} is not supported in the "
                f"kernel; offer {SRTP_AES_CM_128_HMAC_SHA1_80} first")
        if spec.leg_id in self._legs:
            self.remove_leg(spec.leg_id)
        rx = SrtpSession.from_master(spec.srtp.rx)
        tx = SrtpSession.from_master(spec.srtp.tx)
        twcc_ring = self._free_twcc_rings.popleft()
        try:
            leg = KernelLegRecord(spec=spec, rx=rx, tx=tx,
                                  value=self._leg_value(spec, rx, tx, twcc_ring),
                                  addr_key=self.maps.addr_key(spec.local_addr, spec.remote_addr),
                                  twcc_ring=twcc_ring)
        except BaseException:  # e.g. an IPv6 address: the ring stays free
            self._free_twcc_rings.appendleft(twcc_ring)
            raise
        self._twcc.reset(twcc_ring)
        # recorded first: a failed write below is undone by remove_leg, which
        # deletes every entry keyed by this leg (deleting a missing one is fine)
        self._legs[spec.leg_id] = leg
        try:
            self.maps.init_leg_state(spec.leg_id)
            self._write_leg(leg)
            self.set_lease(spec.leg_id, time.monotonic_ns())
            self.maps.bind_address(leg.addr_key, spec.leg_id)
            self.maps.bind_local(spec.local_addr, spec.leg_id)
            for kind, ssrcs, slots in ((StreamKind.AUDIO, spec.audio_slot_ssrcs,
                                        leg.audio_slots),
                                       (StreamKind.VIDEO, spec.video_slot_ssrcs,
                                        leg.video_slots)):
                for ssrc in ssrcs:
                    slots.append(self._create_slot(spec.leg_id, kind, ssrc, tx))
        except BaseException:
            self.remove_leg(spec.leg_id)
            raise
        self._added_at[spec.leg_id] = time.monotonic()
        log.info("leg %d: media on the kernel data plane via %s (%s:%d <- %s:%d)", spec.leg_id,
                 self._leg_paths.get(spec.leg_id), *spec.local_addr, *spec.remote_addr)
        self._ensure_worker()

    def _write_leg(self, leg: KernelLegRecord) -> None:
        self.maps.write_leg(leg.leg_id, leg.value)

    def set_lease(self, leg_id: int, monotonic_ns: int) -> None:
        """The kernel serves the leg until ``monotonic_ns`` + the lease timeout."""
        self.maps.set_lease(leg_id, monotonic_ns)

    @_locked
    def update_leg_address(self, leg_id: int, remote_addr: tuple[str, int],
                           transport: asyncio.DatagramTransport | None = None) -> None:
        leg = self._legs[leg_id]
        new_spec = dataclasses.replace(leg.spec, remote_addr=remote_addr,
                                       transport=transport or leg.spec.transport)
        new_key = self.maps.addr_key(new_spec.local_addr, remote_addr)
        leg.value = self._leg_value(new_spec, leg.rx, leg.tx, leg.twcc_ring)
        leg.spec = new_spec
        self._write_leg(leg)
        self.maps.bind_address(new_key, leg_id)
        if new_key != leg.addr_key:
            self.maps.unbind_address(leg.addr_key)
            leg.addr_key = new_key

    @_locked
    def remove_leg(self, leg_id: int) -> None:
        leg = self._legs.pop(leg_id, None)
        if leg is None:
            return
        self.maps.unbind_address(leg.addr_key)
        self.maps.unbind_local(leg.spec.local_addr)
        self._leg_paths.pop(leg_id, None)
        self._warned_userspace.discard(leg_id)
        self._stranded.pop(leg_id, None)
        self._added_at.pop(leg_id, None)
        self.maps.delete_fanout(leg_id)
        for slot_id in list(self._fed_by.get(leg_id, ())):
            self._point_slot(self._slots[slot_id], None)
        for slot_id in leg.audio_slots + leg.video_slots:
            self._delete_slot(slot_id)
        for ssrc in list(leg.streams):
            self._delete_stream(leg, ssrc)
        self.maps.delete_leg(leg_id)
        self._free_twcc_rings.append(leg.twcc_ring)  # FIFO: reused last

    # ---- publishers ----

    @_locked
    def set_publisher(self, leg_id: int, audio_ssrcs: tuple[int, ...],
                      video_ssrcs: dict[int, Layer]) -> None:
        leg = self._legs[leg_id]
        wanted: dict[int, tuple[StreamKind, int | None]] = dict.fromkeys(
            audio_ssrcs, (StreamKind.AUDIO, None))
        wanted.update({ssrc: (StreamKind.VIDEO, int(layer))
                       for ssrc, layer in video_ssrcs.items()})
        for ssrc, stream in list(leg.streams.items()):
            learned = stream.kind == StreamKind.VIDEO and stream.layer is None  # from a RID
            if ssrc not in wanted and not learned:
                self._delete_stream(leg, ssrc)
        for ssrc, (kind, layer) in wanted.items():
            current = leg.streams.get(ssrc)
            if current and (current.kind, current.layer) == (kind, layer):
                continue
            if current is None and not self._stream_room(leg, kind):
                self._refuse_stream(leg, ssrc, "declared")
                continue
            self._write_stream(leg, ssrc, kind, layer)

    def _stream_room(self, leg: KernelLegRecord, kind: StreamKind) -> bool:
        """A leg gets keystream rings for one audio stream and one video stream per
        layer: what admission reserved for it (``can_admit``)."""
        have = sum(1 for stream in leg.streams.values() if stream.kind == kind)
        return have < (1 if kind == StreamKind.AUDIO else self._c.SFT_LAYERS)

    def _refuse_stream(self, leg: KernelLegRecord, ssrc: int, how: str) -> None:
        self._streams_refused += 1
        log.info("leg %d: %s stream %08x refused: it already has every stream it may "
                 "publish", leg.leg_id, how, ssrc)

    def _write_stream(self, leg: KernelLegRecord, ssrc: int, kind: StreamKind,
                      layer: int | None) -> None:
        if ssrc in leg.streams:
            ring = leg.streams[ssrc].ring
        else:
            size = self._ingress_ring_factor * (
                self._audio_ring if kind == StreamKind.AUDIO else self._video_ring)
            # a quarter behind the newest packet: reordered ones decrypt
            ring = KeystreamRing(base=self._rings.alloc(size), size=size, ssrc=ssrc,
                                 session=leg.rx, length=self._keystream_length(kind),
                                 behind=size // 4)
        leg.streams[ssrc] = KernelStreamRecord(kind, layer, ring)
        self.maps.write_stream(leg.leg_id, ssrc, ring.base, ring.size, kind, layer)
        self._refill.refill_stream(leg, ssrc)

    def _delete_stream(self, leg: KernelLegRecord, ssrc: int) -> None:
        ring = leg.streams.pop(ssrc).ring
        self.maps.delete_stream(leg.leg_id, ssrc)
        self._rings.free(ring.base, ring.size)

    def _keystream_length(self, kind: StreamKind) -> int:
        return (AUDIO_KEYSTREAM_BYTES if kind == StreamKind.AUDIO
                else self._c.SFT_KEYSTREAM_BYTES)

    # ---- slots ----

    def _create_slot(self, subscriber: int, kind: StreamKind, ssrc: int,
                     tx: SrtpSession) -> int:
        """All or nothing: on failure the slot id and ring are free again."""
        if not self._free_slot_ids:
            raise KernelDataPlaneError(
                f"all {self._c.SFT_MAX_SLOTS} kernel slots are in use: add SFT nodes")
        size = self._audio_ring if kind == StreamKind.AUDIO else self._video_ring
        # an eighth behind the slot's next index: the copy in flight and late ones
        ring = KeystreamRing(base=self._rings.alloc(size), size=size, ssrc=ssrc, session=tx,
                             length=self._keystream_length(kind), behind=max(1, size // 8))
        slot_id = self._free_slot_ids.popleft()
        slot = KernelSlotRecord(slot_id=slot_id, subscriber=subscriber, kind=kind, ssrc=ssrc,
                                ring=ring)
        self._slots[slot_id] = slot
        try:
            self.maps.init_slot_state(slot_id, self._slot_initial_index())
            self._write_slot(slot)
            self._refill.refill_slot(slot)
        except BaseException:
            self._delete_slot(slot_id)
            raise
        return slot_id

    def _write_slot(self, slot: KernelSlotRecord) -> None:
        source = slot.source
        self.maps.write_slot(
            slot.slot_id, subscriber=slot.subscriber, ssrc=slot.ssrc,
            publisher=source.publisher if source else 0, csrc=source.csrc if source else 0,
            generation=slot.generation, ks_base=slot.ring.base, ks_size=slot.ring.size,
            kind=int(slot.kind), layer=int(source.layer) if source else 0,
            flags=(self._c.SFT_SLOT_ACTIVE if source else 0)
            | (self._c.SFT_SLOT_LAYER_MOVE if slot.layer_move else 0))

    def _delete_slot(self, slot_id: int) -> None:
        slot = self._slots.pop(slot_id)
        if slot.source is not None:
            self._point_slot(slot, None)
        self.maps.clear_slot(slot_id)
        self._rings.free(slot.ring.base, slot.ring.size)
        self._free_slot_ids.append(slot_id)

    @_locked
    def set_slot(self, subscriber: int, kind: StreamKind, index: int,
                 source: SlotSource | None) -> None:
        leg = self._legs[subscriber]
        slots = leg.audio_slots if kind == StreamKind.AUDIO else leg.video_slots
        self._point_slot(self._slots[slots[index]], source)

    def _point_slot(self, slot: KernelSlotRecord, source: SlotSource | None) -> None:
        if source == slot.source:
            return
        old = slot.source.publisher if slot.source else None
        if old is not None:
            self._fed_by[old].pop(slot.slot_id, None)
        if source is not None:
            self._fed_by.setdefault(source.publisher, {})[slot.slot_id] = None
        slot.layer_move = (slot.kind == StreamKind.VIDEO and source is not None
                           and source.publisher == old)  # audio switches at once
        slot.source = source
        slot.generation = (slot.generation + 1) & 0xFFFFFFFF
        self._write_slot(slot)
        for publisher in {p for p in (old, source.publisher if source else None)
                          if p is not None}:
            self._write_fanout(publisher)

    def _write_fanout(self, publisher: int) -> None:
        slot_ids = list(self._fed_by.get(publisher, ()))
        if not slot_ids:
            self._fed_by.pop(publisher, None)
            self.maps.delete_fanout(publisher)
            return
        if len(slot_ids) > self._c.SFT_MAX_FANOUT:
            log.error("publisher %d feeds %d slots; the kernel serves the first %d",
                      publisher, len(slot_ids), self._c.SFT_MAX_FANOUT)
            slot_ids = slot_ids[:self._c.SFT_MAX_FANOUT]
        self.maps.write_fanout(publisher, slot_ids)

    # ---- admission ----

    def _leg_rings(self, audio_slots: int, video_slots: int) -> list[int]:
        return leg_ring_sizes(audio_slots, video_slots, self._audio_ring, self._video_ring,
                              self._ingress_ring_factor)

    @_locked
    def can_admit(self, legs: Sequence[tuple[int, int]]) -> str | None:
        c = self._c
        n = len(self._legs) + len(legs)
        if n > c.SFT_MAX_LEGS:
            return f"all {c.SFT_MAX_LEGS} kernel legs are taken"
        if n * c.SFT_MAX_SSRCS_PER_LEG > c.SFT_MAX_STREAMS:
            return f"the kernel stream maps ({c.SFT_MAX_STREAMS}) are full"
        if sum(a + v for a, v in legs) > len(self._free_slot_ids):
            return f"all {c.SFT_MAX_SLOTS} kernel slots are taken"
        if not self._rings.fits([size for a, v in legs for size in self._leg_rings(a, v)]):
            return f"the keystream map ({self._rings.entries} entries) is full"
        return None

    @_locked
    def remaining_legs(self, audio_slots: int, video_slots: int) -> int | None:
        c = self._c
        max_legs: int = c.SFT_MAX_LEGS
        stream_legs: int = c.SFT_MAX_STREAMS // c.SFT_MAX_SSRCS_PER_LEG
        footprint = leg_keystream_entries(self._leg_rings(audio_slots, video_slots))
        return max(0, min(max_legs - len(self._legs), stream_legs - len(self._legs),
                          len(self._free_slot_ids) // max(1, audio_slots + video_slots),
                          self._rings.free_entries() // footprint))

    # ---- packets that reached user space anyway ----

    def handle_packet(self, leg_id: int, data: bytes) -> None:
        """Media reached user space and is dropped here, counted by why: from an
        address ICE never validated; from a leg the kernel does not serve yet (its
        first packets, sent or queued in the socket while ``add_leg`` ran, so up to
        ``TAKEOVER_GRACE_S`` after it); or from a leg it serves, whose
        path the programs did not see (logged once per leg with what to do)."""
        if leg_id == UNVALIDATED_SOURCE:
            self._unvalidated_packets += 1
            return
        with self._lock:
            leg = self._legs.get(leg_id)
            added = self._added_at.get(leg_id)
            if leg is None or added is None or time.monotonic() - added < TAKEOVER_GRACE_S:
                self._early_packets += 1
                return
            self._userspace_packets += 1
            self._stranded[leg_id] = self._stranded.get(leg_id, 0) + 1
            if leg_id not in self._warned_userspace:
                self._warned_userspace.add(leg_id)
                log.warning(
                    "leg %d: media from %s:%d reached user space although the kernel data "
                    "plane serves the leg (path via %s): it is dropped and counted as "
                    "USERSPACE_MEDIA. Check that sftd's TC filter is on that interface "
                    "(tc filter show dev <if> ingress) or run --dataplane userspace",
                    leg_id, *leg.spec.remote_addr, self._leg_paths.get(leg_id, "unresolved"))

    @property
    def userspace_packets(self) -> int:
        return self._userspace_packets

    def read_userspace_media_drops(self) -> dict[str, int]:
        """From an address ICE did not validate; a leg's first packets, before the
        kernel took it over; from a leg it serves, on a path it did not see."""
        return {"unvalidated_source": self._unvalidated_packets,
                "leg_not_served_yet": self._early_packets,
                "path_not_served": self._userspace_packets}

    @_locked
    def read_leg_media(self) -> dict[int, LegMedia]:
        received = {leg_id: dict.fromkeys(StreamKind, 0) for leg_id in self._legs}
        for key, state in self.maps.stream_states():  # one syscall for all
            leg = self._legs.get(key.leg_id)
            if leg is not None:
                # the kernel learns undeclared SSRCs from their RID: video
                stream = leg.streams.get(key.ssrc)
                kind = stream.kind if stream else StreamKind.VIDEO
                received[key.leg_id][kind] += int(state.packets)
        return {leg_id: LegMedia(
            received[leg_id], self._stranded.get(leg_id, 0),
            tuple(self.maps.slot_packets(slot_id)
                  for slot_id in leg.audio_slots + leg.video_slots),
            self._leg_paths.get(leg_id, "unresolved"))
            for leg_id, leg in self._legs.items()}

    # ---- reading ----

    def read_receive_stats(self, leg_id: int, ssrc: int) -> ReceiveStats | None:
        with self._lock:
            state = self.maps.stream_state(leg_id, ssrc)
        if state is None:
            return None
        return ReceiveStats(received=state.packets, first_seq=state.first_index,
                            highest_seq=state.highest_index, jitter=state.jitter_q4 >> 4)

    @_locked
    def read_audio_levels(self) -> dict[int, float]:
        publishing = {leg_id for leg_id, leg in self._legs.items()
                      if any(s.kind == StreamKind.AUDIO for s in leg.streams.values())}
        return {leg_id: level for leg_id, level in self.maps.audio_levels().items()
                if leg_id in publishing}

    @_locked
    def read_transport_arrivals(self) -> dict[int, list[tuple[int, int]]]:
        now_us = time.monotonic_ns() // 1000
        arrivals = {}
        for leg_id, leg in self._legs.items():
            records = self._twcc.read(leg.twcc_ring, now_us)
            if records:
                arrivals[leg_id] = records
        return arrivals

    def read_counters(self) -> dict[Counter, int]:
        return self.maps.counters()

    def read_detail_counters(self) -> dict[str, int]:
        """Kernel detail counters, plus media of kernel legs that reached user space."""
        return {**self.read_kernel_counters(), "USERSPACE_MEDIA": self._userspace_packets,
                "USERSPACE_UNVALIDATED": self._unvalidated_packets,
                "STREAMS_REFUSED": self._streams_refused,
                "USERSPACE_BEFORE_LEG": self._early_packets,
                "EVENT_HANDLER_FAILED": self._events.handler_failures}

    @staticmethod
    def read_bpf_failures() -> dict[str, int]:
        """Failed BPF calls of this process by operation, ring-buffer handler
        failures included (each logged where it happened)."""
        return libbpf.error_counts()

    def read_kernel_counters(self) -> dict[str, int]:
        """Detail counters (``enum sft_kcounter``), by name without the prefix."""
        return self.maps.kernel_counters()

    def reset_conference(self, conference_id: int) -> None:
        # a packet still in flight may count once more: the id is reused, so the
        # entry does not leak, and the next conference of this id starts near 0
        self.maps.reset_conference(conference_id)

    def read_conference_packets(self) -> dict[int, int]:
        return self.maps.conference_packets()

    # ---- keystream refill and leases ----

    def _on_event(self, data: bytes) -> None:
        ev = self.abi.unpack("sft_event", data)
        if ev.type == self._c.SFT_EV_SLOT_KEYSTREAM:
            slot = self._slots.get(ev.owner)
            if slot is not None:
                self._refill.refill_slot(slot)
        elif ev.type in (self._c.SFT_EV_STREAM_KEYSTREAM, self._c.SFT_EV_NEW_STREAM):
            leg = self._legs.get(ev.leg_id)
            if leg is None:
                return
            if ev.ssrc not in leg.streams:
                if ev.type != self._c.SFT_EV_NEW_STREAM:
                    return
                if not self._stream_room(leg, StreamKind.VIDEO):
                    self._refuse_stream(leg, ev.ssrc, "learned")
                    return
                try:
                    self._write_stream(leg, ev.ssrc, StreamKind.VIDEO, None)
                except KernelDataPlaneError:
                    self._refuse_stream(leg, ev.ssrc, "learned (no keystream room)")
                    return
            self._refill.refill_stream(leg, ev.ssrc, ev.index)

    @_locked
    def maintain(self, top_up: bool = True) -> None:
        """One round of the periodic work: events, keystream top-up, leases."""
        self._events.consume()
        if top_up:
            self._refill.top_up(self._legs.values(), self._slots.values())
        now = time.monotonic_ns()
        if now - self._last_lease >= self._lease_renew_ns:
            self._last_lease = now
            for leg_id in self._legs:
                self.set_lease(leg_id, now)
            self._log_kernel_failures()

    def _log_kernel_failures(self) -> None:
        """Logs each kernel failure counter of KERNEL_FAILURE_ADVICE once, when it
        first leaves zero."""
        for name, advice in KERNEL_FAILURE_ADVICE.items():
            if name in self._failures_logged:
                continue
            value = self.maps.kernel_counter(name)
            if value:
                self._failures_logged.add(name)
                log.warning("kernel data plane: %d× %s: %s (logged once; see "
                            "sft_dataplane_detail_total{counter=\"%s\"})",
                            value, name, advice, name)

    def _ensure_worker(self) -> None:
        """Starts the maintenance thread when an event loop runs (sftd); synchronous
        users (tests, tools) call maintain() themselves."""
        if self._worker is not None or self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._worker = MaintenanceThread(f"sft-kernel-{self.instance}", self.maintain,
                                         self._events.epoll_fd, self._maintain_interval,
                                         self._top_up_interval)
        self._worker.start()
