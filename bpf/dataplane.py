"""``KernelDataPlane``: the DataPlane of controller/dataplane.py, in eBPF.

Once a leg's ICE and DTLS are done (``add_leg``), its SRTP never reaches the
interpreter: ``sft_xdp_ingress`` (XDP, on the NIC) sends STUN/DTLS/RTCP to the
socket and drops junk aimed at the media ports; ``sft_tc_ingress`` (clsact
ingress) verifies, decrypts, rewrites, re-protects and clones every packet to
the subscribed slots and drops the original.

This class only writes maps when the controller changes state. Two periodic
jobs remain in user space (``maintain``, run by a thread started with the first
leg, off the event loop): topping up the AES-CM keystream rings the kernel XORs with (computed
here with AES-NI, the cheapest measured option, see platform-facts: Python
decides which rings need which indices, ``bpf/native/keystream.c`` writes the
entries, or numpy + ``cryptography`` if it was not built), and
renewing each leg's lease (the kernel stops a leg whose lease is older than
30 s, so a dead controller cannot leave media flowing).

Ownership of the maps is described in bpf/include/sft_abi.h. Pins live under
``/sys/fs/bpf/sftd/<instance>/``; a new instance first removes what a crashed
one of the same name left behind.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import ipaddress
import logging
import os
import secrets
import select
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

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
from . import libbpf, native
from .srtp import SrtpSession, keystream_batch

log = logging.getLogger(__name__)

OBJECT_PATH = Path(__file__).resolve().parent / "build" / "sft.bpf.o"
PIN_ROOT = libbpf.BPFFS / "sftd"
TC_PRIORITY = 0x5F7  # our filter's priority on clsact ingress; the handle is per instance
PROGRAMS = ("sft_xdp_ingress", "sft_tc_ingress")
MAPS = ("sft_config", "sft_leg_by_addr", "sft_leg_by_local", "sft_legs", "sft_leases", "sft_leg_state", "sft_streams",
        "sft_stream_state", "sft_slots", "sft_slot_state", "sft_fanout", "sft_keystream",
        "sft_counters", "sft_kcounters", "sft_conf_packets", "sft_events",
        "sft_twcc_rings")
AUDIO_KEYSTREAM_BYTES = 512
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


class KernelDataPlaneError(RuntimeError):
    """The kernel data plane cannot do what was asked; the message says why."""


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
    except (libbpf.BpfError, abi_mod.AbiUnavailable, OSError) as exc:
        return False, str(exc)
    return True, "ok"


def _ip(addr: str) -> int:
    """An IPv4 address as the __be32 the kernel compares (host int of network bytes)."""
    ip = ipaddress.ip_address(addr)
    if ip.version != 4:
        raise KernelDataPlaneError(f"{addr}: the kernel data plane handles IPv4 only")
    return int.from_bytes(ip.packed, "little")


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _is_loopback(ifname: str) -> bool:
    """IFF_LOOPBACK of ``ifname`` in the calling thread's network namespace."""
    import fcntl

    siocgifflags = 0x8913
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = fcntl.ioctl(sock, siocgifflags, struct.pack("16sH14x", ifname.encode()[:15], 0))
    return struct.unpack_from("16sH", raw)[1] & 0x8 != 0


def _mac(text: str | None) -> bytes:
    return bytes.fromhex(text.replace(":", "")) if text else bytes(6)


@dataclass
class Route:
    ifindex: int
    src_mac: bytes
    dst_mac: bytes


def resolve_route(local_ip: str, remote_ip: str) -> Route | None:
    """Egress interface and MACs towards remote_ip, from the kernel's tables
    (the peer answered ICE checks, so its neighbour entry exists)."""
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=remote_ip)
            if not routes:
                return None
            oif = routes[0].get_attr("RTA_OIF")
            next_hop = routes[0].get_attr("RTA_GATEWAY") or remote_ip
            link = ipr.link("get", index=oif)[0]
            src_mac = _mac(link.get_attr("IFLA_ADDRESS"))
            if link["flags"] & 0x8:  # IFF_LOOPBACK: no L2 addresses
                return Route(oif, bytes(6), bytes(6))
            for neigh in ipr.get_neighbours(ifindex=oif):
                if neigh.get_attr("NDA_DST") == next_hop and neigh.get_attr("NDA_LLADDR"):
                    return Route(oif, src_mac, _mac(neigh.get_attr("NDA_LLADDR")))
    except Exception as exc:  # noqa: BLE001 - an unresolved route is retried later
        log.debug("route to %s unresolved: %s", remote_ip, exc)
    return None


class _TwccRings:
    """The mmapped ``sft_twcc_rings``: each leg's transport-wide arrival records,
    read from ``tail`` to the kernel's ``head`` (layout in sft_abi.h)."""

    def __init__(self, m: libbpf.Map, abi: abi_mod.Abi) -> None:
        c = abi.consts
        self._records = c.SFT_TWCC_RECORDS
        self._lap_valid = c.SFT_TWCC_LAP_VALID
        ffi = abi.ffi
        assert (ffi.offsetof("struct sft_twcc_ring", "head"),
                ffi.offsetof("struct sft_twcc_ring", "tail"),
                ffi.offsetof("struct sft_twcc_ring", "records")) == (0, 8, 16)
        assert abi.sizeof("sft_twcc_record") == 8 and m.entry_stride % 8 == 0
        self._mm = m.mmap()
        words = np.frombuffer(self._mm, dtype=np.uint64,
                              count=m.max_entries * m.entry_stride // 8).reshape(
                                  m.max_entries, m.entry_stride // 8)
        self._head, self._tail = words[:, 0], words[:, 1]
        self._recs = words[:, 2:2 + self._records]
        self._stalled: dict[int, int] = {}  # ring -> position found unwritten last time

    def reset(self, ring: int) -> None:
        """Empty the ring for a new leg (before the kernel can see it)."""
        self._recs[ring] = 0
        self._head[ring] = self._tail[ring] = 0
        self._stalled.pop(ring, None)

    def read(self, ring: int, now_us: int) -> list[tuple[int, int]]:
        """(sequence number, arrival in monotonic ns) of the records written since
        the last read. A reserved record not yet written ends the batch, unless it
        was already missing at the last read (then it is skipped)."""
        tail, head = int(self._tail[ring]), int(self._head[ring])
        if head <= tail:
            return []
        tail = max(tail, head - self._records)  # racing writers overshot a full ring
        positions = np.arange(tail, head, dtype=np.uint64)
        raw = self._recs[ring][(positions & np.uint64(self._records - 1)).astype(np.int64)]
        laps = (raw >> np.uint64(48)).astype(np.int64)
        expected = self._lap_valid | ((positions // np.uint64(self._records)).astype(np.int64)
                                      & 0x7FFF)
        ok = laps == expected
        end = len(ok) if ok.all() else int(np.argmin(ok))
        good = raw[:end]
        if end == len(ok):
            self._tail[ring] = head
        elif self._stalled.pop(ring, None) == tail + end:
            self._tail[ring] = tail + end + 1  # unwritten for a whole round: skip it
        else:
            self._stalled[ring] = tail + end
            self._tail[ring] = tail + end
        arrival = (good & np.uint64(0xFFFFFFFF)).astype(np.int64)
        seq = ((good >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
        arrival_us = now_us - ((now_us - arrival) & 0xFFFFFFFF)
        return list(zip(seq.tolist(), (arrival_us * 1000).tolist()))

    def close(self) -> None:
        self._head = self._tail = self._recs = None  # type: ignore[assignment]
        self._mm.close()


class _RingAllocator:
    """Power-of-two ranges of keystream entries."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._next = 0
        self._free: dict[int, list[int]] = {}

    def alloc(self, size: int) -> int:
        if self._free.get(size):
            return self._free[size].pop()
        base = (self._next + size - 1) & ~(size - 1)
        if base + size > self.entries:
            raise KernelDataPlaneError(
                f"keystream map full ({self.entries} entries): raise keystream_entries")
        self._next = base + size
        return base

    def free(self, base: int, size: int) -> None:
        self._free.setdefault(size, []).append(base)

    def fits(self, sizes: Sequence[int]) -> bool:
        """Whether ``alloc`` would succeed for each of ``sizes`` in turn (nothing changes)."""
        free = {size: len(bases) for size, bases in self._free.items()}
        end = self._next
        for size in sizes:
            if free.get(size):
                free[size] -= 1
                continue
            base = (end + size - 1) & ~(size - 1)
            if base + size > self.entries:
                return False
            end = base + size
        return True

    def free_entries(self) -> int:
        return self.entries - self._next + sum(size * len(bases)
                                               for size, bases in self._free.items())


def leg_ring_sizes(audio_slots: int, video_slots: int, audio_ring: int, video_ring: int,
                   ingress_ring_factor: int) -> list[int]:
    """Keystream ring sizes of one leg at most, in the order add_leg and set_publisher
    allocate them: slots, then one audio and SFT_LAYERS video streams."""
    layers = abi_mod.load().consts.SFT_LAYERS
    return ([audio_ring] * audio_slots + [video_ring] * video_slots
            + [ingress_ring_factor * audio_ring] + [ingress_ring_factor * video_ring] * layers)


def leg_keystream_entries(sizes: Sequence[int]) -> int:
    """Map entries one leg's rings take, alignment holes included, when legs follow
    one another: the allocator's own arithmetic from a start aligned to the largest
    ring, rounded up to the next such start."""
    footprint = _RingAllocator(1 << 30)
    for size in sizes:
        footprint.alloc(size)
    largest = max(sizes, default=1)
    return -(-footprint._next // largest) * largest


@dataclass
class _Ring:
    """One keystream ring: a publisher stream (rx) or a slot (tx).

    Refills write at most ``ahead`` indices from the reader's position on, so the
    ``size - ahead`` entries just behind it stay: the packet being forwarded and
    late ones still read them (the program re-checks each entry after its XOR and
    drops the copy if it was refilled meanwhile)."""

    base: int
    size: int
    ssrc: int
    session: SrtpSession
    length: int
    filled_until: int = -1  # exclusive end of the indices written, -1 = nothing yet
    behind: int = 1  # entries behind the reader a refill leaves alone

    @property
    def ahead(self) -> int:
        return self.size - self.behind

    def fill_range(self, start: int, end: int) -> range:
        """Indices still to write so that [start, end) is covered."""
        fresh = self.filled_until < 0 or not start <= self.filled_until < start + self.size
        if fresh:
            first = start
        else:
            first = self.filled_until
        return range(first, max(first, end))


@dataclass
class _Leg:
    spec: LegSpec
    rx: SrtpSession
    tx: SrtpSession
    value: Any  # struct sft_leg cdata
    addr_key: bytes
    twcc_ring: int
    audio_slots: list[int] = field(default_factory=list)
    video_slots: list[int] = field(default_factory=list)
    streams: dict[int, tuple[StreamKind, int | None, _Ring]] = field(default_factory=dict)


@dataclass
class _Slot:
    slot_id: int
    subscriber: int
    kind: StreamKind
    ssrc: int
    ring: _Ring
    source: SlotSource | None = None
    generation: int = 0


class KernelDataPlane:
    name = "kernel"
    srtp_profiles = (SRTP_AES_CM_128_HMAC_SHA1_80,)
    # the native keystream fill (bpf/native) when built; False forces the numpy path
    native_keystream: bool = True

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
        self._tc_handle = (zlib.crc32(instance.encode()) & 0xFFFF) or 1
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
        self._legs: dict[int, _Leg] = {}
        self._slots: dict[int, _Slot] = {}
        self._fed_by: dict[int, dict[int, None]] = {}  # publisher -> its slot ids, in order
        # FIFO: a freed slot id comes back last, long after any packet that read it
        self._free_slot_ids = collections.deque(range(self._c.SFT_MAX_SLOTS))
        self._free_twcc_rings = collections.deque(range(self._c.SFT_TWCC_RINGS))
        self._attachments: list[libbpf.Attachment] = []
        self._restore_sysctls: list[tuple[Path, str]] = []
        self._served: dict[int, str] = {}  # ifindex -> name of every interface TC serves
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
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._home = libbpf.NetnsHome()
        self._stream_keys: dict[tuple[int, int], bytes] = {}
        self._highest_off = self.abi.ffi.offsetof("struct sft_stream_state", "highest_index")

        self._remove_stale()
        self.obj = libbpf.BpfObject.open(object_path)
        try:
            self.obj.set_max_entries("sft_keystream", keystream_entries)
            self.obj.load(PROGRAMS)
            self.maps = {name: self.obj.map(name) for name in MAPS}
            self.xdp_program = self.obj.program("sft_xdp_ingress")
            self.tc_program = self.obj.program("sft_tc_ingress")
            self._pin()
            self._keystream_mm = self.maps["sft_keystream"].mmap()
            native.keystream()  # warns now, not at the first packet, when not built
            self._slot_state_mm = self.maps["sft_slot_state"].mmap()
            self._twcc = _TwccRings(self.maps["sft_twcc_rings"], self.abi)
            self._rings = _RingAllocator(keystream_entries)
            self._events = libbpf.RingBuffer(self.maps["sft_events"], self._on_event)
            self.maps["sft_config"].update(struct.pack("<I", 0), self.abi.pack(
                "sft_config", port_min=media_ports[0], port_max=media_ports[1],
                lease_timeout_ns=self._c.SFT_LEASE_TIMEOUT_NS,
                layer_pause_ns=int(layer_paused_after * 1e9)))
            for ifname in interfaces:
                self._attach(ifname, xdp)
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ----

    def _pin(self) -> None:
        self.pin_dir.mkdir(parents=True, exist_ok=True)
        for name, m in self.maps.items():
            self.obj.pin_map(m, self.pin_dir / name)
        for name in PROGRAMS:
            self.obj.pin_program(name, self.pin_dir / f"prog_{name}")

    def _attach(self, ifname: str, xdp: bool) -> None:
        """TC everywhere; XDP (an early filter only) where it is worth it: not on
        loopback, where it would run in generic mode on every local packet."""
        ifindex = socket.if_nametoindex(ifname)
        if xdp and not _is_loopback(ifname):
            attachment = libbpf.attach_xdp(ifindex, self.xdp_program)
            self._attachments.append(attachment)
            if attachment.fallback:
                log.warning(
                    "XDP on %s runs in generic (skb) mode: the driver refused native mode "
                    "(%s); media is served all the same. For native XDP turn the offload "
                    "off (ethtool -K %s gro off lro off, or for virtio_net guest_csum off) "
                    "and restart", ifname, attachment.fallback, ifname)
        self._attachments.append(
            libbpf.attach_tc(ifindex, self.tc_program, self._tc_handle, TC_PRIORITY))
        self._served[ifindex] = ifname
        if _is_loopback(ifname):
            self._accept_local_copies(ifname)

    def _accept_local_copies(self, ifname: str) -> None:
        """A copy cloned onto lo from a packet that came in on a NIC carries no route,
        so the stack would take its source (our own address) for a martian and drop
        it: ``accept_local`` on lo lets it through (every packet on lo is local
        anyway). Restored on close."""
        path = Path(f"/proc/sys/net/ipv4/conf/{ifname}/accept_local")
        try:
            before = path.read_text().strip()
            if before != "1":
                path.write_text("1")
                self._restore_sysctls.append((path, before))
                log.info("net.ipv4.conf.%s.accept_local=1 while the kernel data plane serves "
                         "it (copies from remote publishers to clients on this host)", ifname)
        except OSError as exc:
            log.warning("cannot set net.ipv4.conf.%s.accept_local=1 (%s): clients on this host "
                        "get nothing from publishers on other interfaces; set it by hand",
                        ifname, exc)

    def _serve_path(self, leg_id: int, ifindex: int) -> None:
        """Attaches TC on the interface a leg's media takes when it is not one of
        ``-O`` (loopback for a client or TURN relay on this host, another NIC):
        a leg is never left on a path the programs do not see."""
        with self._home.entered():
            ifname = socket.if_indextoname(ifindex)
            if ifindex not in self._served:
                self._attach(ifname, xdp=False)
                log.info("data plane: kernel (eBPF) now also on %s, the path of leg %d",
                         ifname, leg_id)
        self._leg_paths[leg_id] = ifname

    def legs_by_interface(self) -> dict[str, int]:
        """Live legs per interface their media takes (for logs and metrics)."""
        with self._lock:
            counts: dict[str, int] = {}
            for leg_id in self._legs:
                ifname = self._leg_paths.get(leg_id, "unresolved")
                counts[ifname] = counts.get(ifname, 0) + 1
            return counts

    def _remove_stale(self) -> None:
        """Detach and unpin what a previous process of this instance left."""
        if not self.pin_dir.exists():
            return
        stale_ids = set()
        for name in PROGRAMS:
            pin = self.pin_dir / f"prog_{name}"
            if pin.exists():
                fd = libbpf.obj_get(pin)
                try:
                    stale_ids.add(libbpf.prog_id_of_fd(fd))
                finally:
                    os.close(fd)
        for ifindex, _name in socket.if_nameindex():
            for mode in (libbpf.XDP_FLAGS_DRV_MODE, libbpf.XDP_FLAGS_SKB_MODE):
                try:
                    prog_id = libbpf.xdp_prog_id(ifindex, mode)
                except libbpf.AttachFailed:
                    continue
                if prog_id in stale_ids:
                    libbpf.detach_xdp(ifindex, prog_id, mode)
            tc_id = libbpf.tc_prog_id(ifindex, self._tc_handle, TC_PRIORITY)
            if tc_id in stale_ids:
                libbpf.detach_tc(ifindex, self._tc_handle, TC_PRIORITY, tc_id)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        log.info("removed stale pins and programs of instance %s", self.instance)

    def close(self) -> None:
        """Detach, unpin and free everything this instance created."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=5)
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        with self._home.entered():  # ifindexes mean something only there
            for attachment in reversed(self._attachments):
                try:
                    attachment.detach()
                except libbpf.BpfError as exc:
                    log.warning("%s", exc)
            self._attachments.clear()
            for path, value in self._restore_sysctls:
                try:
                    path.write_text(value)
                except OSError as exc:
                    log.warning("could not restore %s to %s: %s", path, value, exc)
            self._restore_sysctls.clear()
        self._home.close()
        events = getattr(self, "_events", None)
        if events is not None:
            events.close()
        # numpy views pin the mmaps (and keep the native fill's raw pointer valid): drop first
        self._ks_views = self._ks_native = self._slot_next = None
        twcc = getattr(self, "_twcc", None)
        if twcc is not None:
            twcc.close()
        for mm_name in ("_keystream_mm", "_slot_state_mm"):
            mm = getattr(self, mm_name, None)
            if mm is not None:
                mm.close()
        for name in MAPS:
            (self.pin_dir / name).unlink(missing_ok=True)
        for name in PROGRAMS:
            (self.pin_dir / f"prog_{name}").unlink(missing_ok=True)
        try:
            self.pin_dir.rmdir()
        except OSError:
            pass
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
        route = libbpf.off_event_loop(self._resolve_route, spec.local_addr[0],
                                      spec.remote_addr[0])
        rx_inner, rx_outer = rx.hmac_states()
        tx_inner, tx_outer = tx.hmac_states()
        value = self.abi.new(
            "sft_leg", leg_id=spec.leg_id,
            conference_id=spec.conference_id, local_ip=_ip(spec.local_addr[0]),
            remote_ip=_ip(spec.remote_addr[0]), local_port=_be16(spec.local_addr[1]),
            remote_port=_be16(spec.remote_addr[1]), ifindex=route.ifindex if route else 0,
            ext_audio_level=spec.extensions.audio_level, ext_rid=spec.extensions.rid,
            ext_frame_descriptor=spec.extensions.frame_descriptor,
            ext_transport_cc=spec.extensions.transport_cc, twcc_ring=twcc_ring,
            flags=self._c.SFT_LEG_ACTIVE)
        if route:
            value.src_mac = list(route.src_mac)
            value.dst_mac = list(route.dst_mac)
            self._serve_path(spec.leg_id, route.ifindex)
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

    def _resolve_route(self, local_ip: str, remote_ip: str) -> Route | None:
        with self._home.entered():  # setns is per thread: enter on the thread that asks
            return resolve_route(local_ip, remote_ip)

    def _local_key(self, local: tuple[str, int]) -> bytes:
        return self.abi.pack("sft_local_key", local_ip=_ip(local[0]), local_port=_be16(local[1]))

    def _addr_key(self, spec_local: tuple[str, int], remote: tuple[str, int]) -> bytes:
        return self.abi.pack("sft_addr_key", remote_ip=_ip(remote[0]), local_ip=_ip(spec_local[0]),
                             remote_port=_be16(remote[1]), local_port=_be16(spec_local[1]))

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
            leg = _Leg(spec=spec, rx=rx, tx=tx, value=self._leg_value(spec, rx, tx, twcc_ring),
                       addr_key=self._addr_key(spec.local_addr, spec.remote_addr),
                       twcc_ring=twcc_ring)
        except BaseException:  # e.g. an IPv6 address: the ring stays free
            self._free_twcc_rings.appendleft(twcc_ring)
            raise
        self._twcc.reset(twcc_ring)
        key = struct.pack("<I", spec.leg_id)
        # recorded first: a failed write below is undone by remove_leg, which
        # deletes every entry keyed by this leg (deleting a missing one is fine)
        self._legs[spec.leg_id] = leg
        try:
            self.maps["sft_leg_state"].update(key, self.abi.pack(
                "sft_leg_state", audio_level_fp=127 << 8))
            self._write_leg(leg)
            self.set_lease(spec.leg_id, time.monotonic_ns())
            self.maps["sft_leg_by_addr"].update(leg.addr_key, key)
            self.maps["sft_leg_by_local"].update(self._local_key(spec.local_addr), key)
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

    def _write_leg(self, leg: _Leg) -> None:
        self.maps["sft_legs"].update(struct.pack("<I", leg.spec.leg_id),
                                     bytes(self.abi.ffi.buffer(leg.value)))

    def set_lease(self, leg_id: int, monotonic_ns: int) -> None:
        """The kernel serves the leg until ``monotonic_ns`` + the lease timeout."""
        self.maps["sft_leases"].update(struct.pack("<I", leg_id), struct.pack("<Q", monotonic_ns))

    @_locked
    def update_leg_address(self, leg_id: int, remote_addr: tuple[str, int],
                           transport: asyncio.DatagramTransport | None = None) -> None:
        leg = self._legs[leg_id]
        new_spec = dataclasses.replace(leg.spec, remote_addr=remote_addr,
                                       transport=transport or leg.spec.transport)
        new_key = self._addr_key(new_spec.local_addr, remote_addr)
        leg.value = self._leg_value(new_spec, leg.rx, leg.tx, leg.twcc_ring)
        leg.spec = new_spec
        self._write_leg(leg)
        self.maps["sft_leg_by_addr"].update(new_key, struct.pack("<I", leg_id))
        if new_key != leg.addr_key:
            self.maps["sft_leg_by_addr"].delete(leg.addr_key)
            leg.addr_key = new_key

    @_locked
    def remove_leg(self, leg_id: int) -> None:
        leg = self._legs.pop(leg_id, None)
        if leg is None:
            return
        key = struct.pack("<I", leg_id)
        self.maps["sft_leg_by_addr"].delete(leg.addr_key)
        self.maps["sft_leg_by_local"].delete(self._local_key(leg.spec.local_addr))
        self._leg_paths.pop(leg_id, None)
        self._warned_userspace.discard(leg_id)
        self._stranded.pop(leg_id, None)
        self._added_at.pop(leg_id, None)
        self.maps["sft_fanout"].delete(key)
        for slot_id in list(self._fed_by.get(leg_id, ())):
            self._point_slot(self._slots[slot_id], None)
        for slot_id in leg.audio_slots + leg.video_slots:
            self._delete_slot(slot_id)
        for ssrc in list(leg.streams):
            self._delete_stream(leg, ssrc)
        for stale, _state in self.maps["sft_stream_state"].lookup_all():
            if struct.unpack_from("<I", stale)[0] == leg_id:
                self.maps["sft_stream_state"].delete(stale)
        self.maps["sft_legs"].delete(key)
        self.maps["sft_leases"].delete(key)
        self.maps["sft_leg_state"].delete(key)
        self._free_twcc_rings.append(leg.twcc_ring)  # FIFO: reused last

    # ---- publishers ----

    @_locked
    def set_publisher(self, leg_id: int, audio_ssrcs: tuple[int, ...],
                      video_ssrcs: dict[int, Layer]) -> None:
        leg = self._legs[leg_id]
        wanted: dict[int, tuple[StreamKind, int | None]] = dict.fromkeys(audio_ssrcs, (StreamKind.AUDIO, None))
        wanted.update({ssrc: (StreamKind.VIDEO, int(layer)) for ssrc, layer in video_ssrcs.items()})
        for ssrc in list(leg.streams):
            if ssrc not in wanted:
                self._delete_stream(leg, ssrc)
        for ssrc, (kind, layer) in wanted.items():
            current = leg.streams.get(ssrc)
            if current and current[:2] == (kind, layer):
                continue
            if current is None and not self._stream_room(leg, kind):
                self._refuse_stream(leg, ssrc, "declared")
                continue
            self._write_stream(leg, ssrc, kind, layer)

    def _stream_room(self, leg: _Leg, kind: StreamKind) -> bool:
        """A leg gets keystream rings for one audio stream and one video stream per
        layer: what admission reserved for it (``can_admit``)."""
        have = sum(1 for k, _layer, _ring in leg.streams.values() if k == kind)
        return have < (1 if kind == StreamKind.AUDIO else self._c.SFT_LAYERS)

    def _refuse_stream(self, leg: _Leg, ssrc: int, how: str) -> None:
        self._streams_refused += 1
        log.info("leg %d: %s stream %08x refused: it already has every stream it may "
                 "publish", leg.spec.leg_id, how, ssrc)

    def _write_stream(self, leg: _Leg, ssrc: int, kind: StreamKind, layer: int | None) -> None:
        if ssrc in leg.streams:
            ring = leg.streams[ssrc][2]
        else:
            size = self._ingress_ring_factor * (
                self._audio_ring if kind == StreamKind.AUDIO else self._video_ring)
            # a quarter behind the newest packet: reordered ones decrypt
            ring = _Ring(base=self._rings.alloc(size), size=size, ssrc=ssrc, session=leg.rx,
                         length=self._keystream_length(kind), behind=size // 4)
        leg.streams[ssrc] = (kind, layer, ring)
        self.maps["sft_streams"].update(
            self.abi.pack("sft_stream_key", leg_id=leg.spec.leg_id, ssrc=ssrc),
            self.abi.pack("sft_stream", ks_base=ring.base, ks_size=ring.size, kind=int(kind),
                          layer=self._c.SFT_LAYER_UNKNOWN if layer is None else layer))
        self._refill_stream(leg, ssrc)

    def _delete_stream(self, leg: _Leg, ssrc: int) -> None:
        _kind, _layer, ring = leg.streams.pop(ssrc)
        self._stream_keys.pop((leg.spec.leg_id, ssrc), None)
        self.maps["sft_streams"].delete(
            self.abi.pack("sft_stream_key", leg_id=leg.spec.leg_id, ssrc=ssrc))
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
        ring = _Ring(base=self._rings.alloc(size), size=size, ssrc=ssrc, session=tx,
                     length=self._keystream_length(kind), behind=max(1, size // 8))
        slot_id = self._free_slot_ids.popleft()
        slot = _Slot(slot_id=slot_id, subscriber=subscriber, kind=kind, ssrc=ssrc, ring=ring)
        self._slots[slot_id] = slot
        try:
            key = struct.pack("<I", slot_id)
            self.maps["sft_slot_state"].update(key, self.abi.pack(
                "sft_slot_state", next_index=self._slot_initial_index()))
            self._write_slot(slot)
            self._refill_slot(slot)
        except BaseException:
            self._delete_slot(slot_id)
            raise
        return slot_id

    def _write_slot(self, slot: _Slot) -> None:
        source = slot.source
        self.maps["sft_slots"].update(struct.pack("<I", slot.slot_id), self.abi.pack(
            "sft_slot", subscriber=slot.subscriber, ssrc=slot.ssrc,
            publisher=source.publisher if source else 0, csrc=source.csrc if source else 0,
            generation=slot.generation, ks_base=slot.ring.base, ks_size=slot.ring.size,
            kind=int(slot.kind), layer=int(source.layer) if source else 0,
            flags=self._c.SFT_SLOT_ACTIVE if source else 0))

    def _delete_slot(self, slot_id: int) -> None:
        slot = self._slots.pop(slot_id)
        if slot.source is not None:
            self._point_slot(slot, None)
        self.maps["sft_slots"].update(struct.pack("<I", slot_id),
                                      bytes(self.abi.sizeof("sft_slot")))
        self._rings.free(slot.ring.base, slot.ring.size)
        self._free_slot_ids.append(slot_id)

    @_locked
    def set_slot(self, subscriber: int, kind: StreamKind, index: int,
                 source: SlotSource | None) -> None:
        leg = self._legs[subscriber]
        slots = leg.audio_slots if kind == StreamKind.AUDIO else leg.video_slots
        self._point_slot(self._slots[slots[index]], source)

    def _point_slot(self, slot: _Slot, source: SlotSource | None) -> None:
        if source == slot.source:
            return
        old = slot.source.publisher if slot.source else None
        if old is not None:
            self._fed_by[old].pop(slot.slot_id, None)
        if source is not None:
            self._fed_by.setdefault(source.publisher, {})[slot.slot_id] = None
        slot.source = source
        new = source.publisher if source else None
        if new != old:  # a new source starts afresh, at its keyframe
            slot.generation = (slot.generation + 1) & 0xFFFFFFFF
        # else another layer of the same publisher: the program moves to it at that
        # layer's keyframe and forwards the current one until then
        self._write_slot(slot)
        for publisher in {old, source.publisher if source else None} - {None}:
            self._write_fanout(publisher)  # type: ignore[arg-type]

    def _write_fanout(self, publisher: int) -> None:
        slot_ids = list(self._fed_by.get(publisher, ()))
        key = struct.pack("<I", publisher)
        if not slot_ids:
            self._fed_by.pop(publisher, None)
            self.maps["sft_fanout"].delete(key)
            return
        if len(slot_ids) > self._c.SFT_MAX_FANOUT:
            log.error("publisher %d feeds %d slots; the kernel serves the first %d",
                      publisher, len(slot_ids), self._c.SFT_MAX_FANOUT)
            slot_ids = slot_ids[:self._c.SFT_MAX_FANOUT]
        value = self.abi.new("sft_fanout", count=len(slot_ids))
        value.slot_ids[0:len(slot_ids)] = slot_ids
        self.maps["sft_fanout"].update(key, bytes(self.abi.ffi.buffer(value)))

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
        footprint = leg_keystream_entries(self._leg_rings(audio_slots, video_slots))
        return max(0, min(c.SFT_MAX_LEGS - len(self._legs),
                          c.SFT_MAX_STREAMS // c.SFT_MAX_SSRCS_PER_LEG - len(self._legs),
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
        ffi = self.abi.ffi
        received = {leg_id: dict.fromkeys(StreamKind, 0) for leg_id in self._legs}
        packets_off = ffi.offsetof("struct sft_stream_state", "packets")
        for key, raw in self.maps["sft_stream_state"].lookup_all():  # one syscall for all
            leg_id, ssrc = struct.unpack_from("<II", key)
            leg = self._legs.get(leg_id)
            if leg is not None:
                # the kernel learns undeclared SSRCs from their RID: video
                kind = leg.streams[ssrc][0] if ssrc in leg.streams else StreamKind.VIDEO
                received[leg_id][kind] += struct.unpack_from("<Q", raw, packets_off)[0]
        stride = self.maps["sft_slot_state"].entry_stride
        sent_off = ffi.offsetof("struct sft_slot_state", "packets")
        return {leg_id: LegMedia(
            received[leg_id], self._stranded.get(leg_id, 0),
            tuple(struct.unpack_from("<Q", self._slot_state_mm, slot_id * stride + sent_off)[0]
                  for slot_id in leg.audio_slots + leg.video_slots),
            self._leg_paths.get(leg_id, "unresolved"))
            for leg_id, leg in self._legs.items()}

    # ---- reading ----

    @_locked
    def read_audio_levels(self) -> dict[int, float]:
        publishing = {leg_id for leg_id, leg in self._legs.items()
                      if any(kind == StreamKind.AUDIO for kind, _l, _r in leg.streams.values())}
        offset = self.abi.ffi.offsetof("struct sft_leg_state", "audio_level_fp")
        levels = {}
        for key, raw in self.maps["sft_leg_state"].lookup_all():  # one syscall for all legs
            (leg_id,) = struct.unpack("<I", key)
            if leg_id in publishing:
                levels[leg_id] = struct.unpack_from("<I", raw, offset)[0] / 256.0
        return levels

    @_locked
    def read_transport_arrivals(self) -> dict[int, list[tuple[int, int]]]:
        now_us = time.monotonic_ns() // 1000
        arrivals = {}
        for leg_id, leg in self._legs.items():
            records = self._twcc.read(leg.twcc_ring, now_us)
            if records:
                arrivals[leg_id] = records
        return arrivals

    def _sum_percpu(self, map_name: str, key: bytes) -> int:
        return sum(struct.unpack("<Q", v)[0] for v in self.maps[map_name].lookup_percpu(key))

    def read_counters(self) -> dict[Counter, int]:
        return {c: self._sum_percpu("sft_counters", struct.pack("<I", c.value)) for c in Counter}

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
        return {name.removeprefix("SFT_K_"): self._sum_percpu("sft_kcounters",
                                                              struct.pack("<I", value))
                for name, value in self.abi.enum_members("sft_kcounter").items()
                if name != "SFT_K_MAX"}

    def reset_conference(self, conference_id: int) -> None:
        # a packet still in flight may count once more: the id is reused, so the
        # entry does not leak, and the next conference of this id starts near 0
        self.maps["sft_conf_packets"].delete(struct.pack("<I", conference_id))

    def read_conference_packets(self) -> dict[int, int]:
        m = self.maps["sft_conf_packets"]
        return {struct.unpack("<I", key)[0]: self._sum_percpu("sft_conf_packets", key)
                for key in m.keys()}

    # ---- keystream refill and leases ----

    def _keystream_views(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The mmapped ``sft_keystream`` map as (entries, stride) bytes, its index_tag
        words, and the offset of the keystream bytes in an entry (numpy views)."""
        views = getattr(self, "_ks_views", None)
        if views is None:
            ffi = self.abi.ffi
            m = self.maps["sft_keystream"]
            assert ffi.offsetof("struct sft_keystream", "index_tag") == 0
            assert ffi.offsetof("struct sft_keystream", "ssrc") == 8
            assert m.entry_stride % 8 == 0
            raw = np.frombuffer(self._keystream_mm, dtype=np.uint8,
                                count=m.max_entries * m.entry_stride).reshape(
                                    m.max_entries, m.entry_stride)
            views = self._ks_views = (raw, raw.view(np.uint64)[:, 0],
                                      ffi.offsetof("struct sft_keystream", "bytes"))
        return views

    def _native_fill(self) -> tuple[Any, Any, int, int, int] | None:
        """(lib, map pointer, stride, bytes offset, entries) of the native keystream
        fill, or None (not built, or disabled with ``native_keystream = False``). The
        pointer is valid while ``_ks_views`` pins the mmap (both dropped in close)."""
        if not self.native_keystream:
            return None
        args = getattr(self, "_ks_native", None)
        if args is None:
            mod = native.keystream()
            if mod is None:
                return None
            raw, _tags, bytes_off = self._keystream_views()
            args = self._ks_native = (mod.lib, mod.ffi.cast("uint8_t *", raw.ctypes.data),
                                      raw.shape[1], bytes_off, raw.shape[0])
        return args

    def _write_keystream(self, ring: _Ring, indices: range) -> None:
        """Writes the keystream of consecutive indices into one ring (the last
        ``ring.size`` of them if there are more): per entry the tag is cleared, the
        bytes and header (ssrc, valid_len) written, and the tag set last."""
        if not indices:
            return
        if len(indices) > ring.size:
            indices = indices[-ring.size:]
        if self._native_fill() is None:
            self._write_keystream_numpy(ring, indices)
            return
        self._write_keystreams_native([(ring, indices[0], len(indices))])

    def _write_keystreams(self, jobs: list[tuple[_Ring, int, int]]) -> None:
        """Writes runs (ring, first index, count <= ring.size) of keystream, natively in
        one call (``bpf/native/keystream.c``), else with numpy (one AES call per run)."""
        if self._native_fill() is None:
            self._write_keystreams_numpy(jobs)
            return
        self._write_keystreams_native(jobs)

    _REQ = struct.Struct("<QIIIIII16s14s2x")  # struct sft_ks_req, bpf/native/keystream.h

    def _write_keystreams_native(self, jobs: list[tuple[_Ring, int, int]]) -> None:
        """One C call for every run: bytes, header, then tag of each entry (keystream.c)."""
        lib, base, stride, bytes_off, entries = self._native_fill()  # type: ignore[misc]
        pack = self._REQ.pack
        reqs = b"".join([pack(first, ring.base, ring.size, ring.ssrc, count, ring.length, 0,
                              ring.session.enc_key, ring.session.salt)
                         for ring, first, count in jobs if count > 0])
        if not reqs:
            return
        written = lib.sft_keystream_fill(base, stride, bytes_off, entries, reqs,
                                         len(reqs) // self._REQ.size)
        if written < 0:
            raise KernelDataPlaneError(f"native keystream fill failed ({written})")
        for ring, first, count in jobs:
            if count > 0:
                ring.filled_until = first + count

    def _write_keystream_numpy(self, ring: _Ring, indices: range) -> None:
        """Writes the keystream of consecutive indices into one ring: one AES call, then
        per contiguous run of entries (at most two, the ring may wrap) the tags are
        cleared, bytes and headers (ssrc, valid_len) written, and the tags set last."""
        if not indices:
            return
        if len(indices) > ring.size:
            indices = indices[-ring.size:]
        first, count = indices[0], len(indices)
        stream = ring.session.keystream_array(ring.ssrc, first, count, ring.length)
        raw, tags, bytes_off = self._keystream_views()
        header = np.frombuffer(struct.pack("<IHH", ring.ssrc, ring.length, 0), dtype=np.uint8)
        pos, done = first & (ring.size - 1), 0
        while done < count:
            n = min(count - done, ring.size - pos)
            lo = ring.base + pos
            tags[lo:lo + n] = 0  # invalid while being written
            raw[lo:lo + n, bytes_off:bytes_off + ring.length] = stream[done:done + n]
            raw[lo:lo + n, 8:16] = header
            tags[lo:lo + n] = np.arange(first + done + 1, first + done + n + 1, dtype=np.uint64)
            done += n
            pos = 0
        ring.filled_until = first + count

    def _write_keystreams_numpy(self, jobs: list[tuple[_Ring, int, int]]) -> None:
        """Writes runs (ring, first index, count <= ring.size) of keystream: per entry
        length, one numpy pass builds every counter block and one AES call per run
        encrypts them; then the entries' tags are cleared, bytes and headers (ssrc,
        valid_len) written, and the tags set last, each step for all entries at once."""
        raw, tags, bytes_off = self._keystream_views()
        by_length: dict[int, list[tuple[_Ring, int, int]]] = {}
        for job in jobs:
            if job[2] > 0:
                by_length.setdefault(job[0].length, []).append(job)
        for length, group in by_length.items():
            if len(group) == 1:  # fewer numpy steps for one ring
                ring, first, count = group[0]
                self._write_keystream_numpy(ring, range(first, first + count))
                continue
            stream = keystream_batch([(ring.session, ring.ssrc, first, count)
                                      for ring, first, count in group], length)
            counts = np.fromiter((c for _r, _f, c in group), dtype=np.int64, count=len(group))
            total = int(counts.sum())
            firsts = np.repeat(np.fromiter((f for _r, f, _c in group), dtype=np.int64,
                                           count=len(group)), counts)
            step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts,
                                                                counts)
            indices = firsts + step
            rows = (np.repeat(np.fromiter((r.base for r, _f, _c in group), dtype=np.int64,
                                          count=len(group)), counts)
                    + (indices & np.repeat(np.fromiter((r.size - 1 for r, _f, _c in group),
                                                       dtype=np.int64, count=len(group)),
                                           counts)))
            header = np.zeros(total, dtype=[("ssrc", "<u4"), ("valid_len", "<u2"),
                                            ("pad", "<u2")])
            header["ssrc"] = np.repeat(np.fromiter((r.ssrc for r, _f, _c in group),
                                                   dtype=np.uint32, count=len(group)), counts)
            header["valid_len"] = length
            tags[rows] = 0  # invalid while being written
            raw[rows, bytes_off:bytes_off + length] = stream
            raw[rows, 8:16] = header.view(np.uint8).reshape(total, 8)
            tags[rows] = (indices + 1).astype(np.uint64)
            for ring, first, count in group:
                ring.filled_until = first + count

    @staticmethod
    def _needs_top_up(ring: _Ring, start: int, ahead: int) -> bool:
        """Whether a periodic top-up should write: at least a quarter of the ``ahead``
        entries wanted from ``start`` on were used since the last write (so each write
        is a batch, while at least 3/4 of the headroom stays), or ``start`` is not
        covered at all."""
        have = ring.filled_until - start
        return not ahead - max(1, ahead // 4) < have <= ring.size

    def _slot_next_index(self, slot_id: int) -> int:
        stride = self.maps["sft_slot_state"].entry_stride
        return struct.unpack_from("<Q", self._slot_state_mm, slot_id * stride)[0]

    def _refill_slot(self, slot: _Slot, next_index: int | None = None) -> None:
        """Keystream for the slot's next ``ring.ahead`` indices."""
        if next_index is None:
            next_index = self._slot_next_index(slot.slot_id)
        self._write_keystream(slot.ring, slot.ring.fill_range(next_index,
                                                              next_index + slot.ring.ahead))

    def _stream_state(self, leg_id: int, ssrc: int) -> bytes | None:
        key = self._stream_keys.get((leg_id, ssrc))
        if key is None:
            key = self._stream_keys[(leg_id, ssrc)] = self.abi.pack(
                "sft_stream_key", leg_id=leg_id, ssrc=ssrc)
        raw: bytes | None = self.maps["sft_stream_state"].lookup(key)
        return raw

    def _stream_highest_index(self, leg_id: int, ssrc: int) -> int | None:
        raw = self._stream_state(leg_id, ssrc)
        return None if raw is None else struct.unpack_from("<Q", raw, self._highest_off)[0]

    def read_receive_stats(self, leg_id: int, ssrc: int) -> ReceiveStats | None:
        with self._lock:
            raw = self._stream_state(leg_id, ssrc)
        if raw is None:
            return None
        state = self.abi.unpack("sft_stream_state", raw)
        return ReceiveStats(received=state.packets, first_seq=state.first_index,
                            highest_seq=state.highest_index, jitter=state.jitter_q4 >> 4)

    def _refill_stream(self, leg: _Leg, ssrc: int, index: int | None = None,
                       force: bool = True,
                       jobs: list[tuple[_Ring, int, int]] | None = None) -> None:
        """Keystream for the stream's next ``ring.ahead`` indices past its newest packet
        (``ring.behind`` stay behind it for reordering). With ``jobs``, the write is queued."""
        _kind, _layer, ring = leg.streams[ssrc]
        if index is None:
            index = self._stream_highest_index(leg.spec.leg_id, ssrc)
            if index is None:
                return  # first packet unseen: its miss event says where to start
        if not force and not self._needs_top_up(ring, index + 1, ring.ahead):
            return
        todo = ring.fill_range(index + 1, index + 1 + ring.ahead)
        if jobs is None:
            self._write_keystream(ring, todo)
        elif todo:
            todo = todo[-ring.size:]
            jobs.append((ring, todo[0], len(todo)))

    def _top_up_slots(self, jobs: list[tuple[_Ring, int, int]]) -> None:
        """The periodic slot top-up: every active slot's next index read at once from
        the mmapped ``sft_slot_state``; a slot is refilled (``ring.ahead`` indices) only
        once a quarter of those is used, so each write is a batch. Queued in ``jobs``."""
        active = [s for s in self._slots.values() if s.source is not None]
        if not active:
            return
        ids = np.fromiter((s.slot_id for s in active), dtype=np.int64, count=len(active))
        filled = np.fromiter((s.ring.filled_until for s in active), dtype=np.int64,
                             count=len(active))
        size = np.fromiter((s.ring.size for s in active), dtype=np.int64, count=len(active))
        ahead = np.fromiter((s.ring.ahead for s in active), dtype=np.int64, count=len(active))
        nexts = self._slot_next_view()[ids].astype(np.int64)
        have = filled - nexts  # as _needs_top_up, for every slot at once
        for i in np.flatnonzero((have <= ahead - np.maximum(1, ahead // 4))
                                | (have > size)).tolist():
            ring, next_index = active[i].ring, int(nexts[i])
            todo = ring.fill_range(next_index, next_index + ring.ahead)
            if todo:
                jobs.append((ring, todo[0], len(todo)))

    def _slot_next_view(self) -> np.ndarray:
        view = getattr(self, "_slot_next", None)
        if view is None:
            m = self.maps["sft_slot_state"]
            assert self.abi.ffi.offsetof("struct sft_slot_state", "next_index") == 0
            view = self._slot_next = np.frombuffer(
                self._slot_state_mm, dtype=np.uint64,
                count=m.max_entries * m.entry_stride // 8).reshape(
                    m.max_entries, m.entry_stride // 8)[:, 0]
        return view

    def _on_event(self, data: bytes) -> None:
        ev = self.abi.unpack("sft_event", data)
        if ev.type == self._c.SFT_EV_SLOT_KEYSTREAM:
            slot = self._slots.get(ev.owner)
            if slot is not None:
                self._refill_slot(slot)
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
            self._refill_stream(leg, ev.ssrc, ev.index)

    @_locked
    def maintain(self, top_up: bool = True) -> None:
        """One round of the periodic work: events, keystream top-up, leases."""
        self._events.consume()
        if top_up:
            self._top_up()
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
            value = self._sum_percpu("sft_kcounters",
                                     struct.pack("<I", getattr(self._c, f"SFT_K_{name}")))
            if value:
                self._failures_logged.add(name)
                log.warning("kernel data plane: %d× %s: %s (logged once; see "
                            "sft_dataplane_detail_total{counter=\"%s\"})",
                            value, name, advice, name)

    def _top_up(self) -> None:
        """Keystream for every active slot and stream that used a quarter of its ring."""
        jobs: list[tuple[_Ring, int, int]] = []
        self._top_up_slots(jobs)
        highest = {struct.unpack("<II", key): struct.unpack_from("<Q", raw, self._highest_off)[0]
                   for key, raw in self.maps["sft_stream_state"].lookup_all()}
        for leg in self._legs.values():
            for ssrc in leg.streams:
                index = highest.get((leg.spec.leg_id, ssrc))
                if index is not None:  # else its first packet's miss event says where
                    self._refill_stream(leg, ssrc, index, force=False, jobs=jobs)
        self._write_keystreams(jobs)

    def _ensure_worker(self) -> None:
        """Starts the maintenance thread when an event loop runs (sftd); synchronous
        users (tests, tools) call maintain() themselves."""
        if self._worker is not None or self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._worker = threading.Thread(target=self._work, name=f"sft-kernel-{self.instance}",
                                        daemon=True)
        self._worker.start()

    def _work(self) -> None:
        epoll_fd = self._events.epoll_fd
        next_top_up = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            top_up = now >= next_top_up  # events (misses) are served at once regardless
            if top_up:
                next_top_up = now + self._top_up_interval
            try:
                self.maintain(top_up)
            except Exception:  # noqa: BLE001 - keep refilling; the error is logged
                log.exception("kernel data plane maintenance failed")
            # the ring buffer's epoll fd: woken by a keystream miss event at once
            select.select([epoll_fd], [], [], self._maintain_interval)

