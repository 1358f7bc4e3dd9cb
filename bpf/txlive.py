"""Transmit paths on a veth pair (prototype, measured by ``benchmarks/tx_bench.py``,
checked by ``tests/kernel/test_tx_live.py``).

- :class:`TxLive`: the live-frames transmitter. ``bpf/src/txlive.bpf.c`` runs under
  BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES; its slots and control blocks
  are BPF_F_MMAPABLE arrays the C loop (``bpf/native/txpaths.c``) writes.
- :class:`TxSink`: the receiving end, ``bpf/src/txsink.bpf.c`` in driver mode on
  the veth peer: counts and drops, and when verifying records per sequence number
  the copies, length, destination and a hash of the bytes.
- :class:`VethNamespaces`: two fresh network namespaces joined by a veth pair,
  made and deleted by name, and :func:`entered` to run code in one of them.
- :func:`expected_frame` / :func:`payload` / :func:`frame_hash`: what the C loops
  send, computed independently in Python, for the comparison.

Layouts are those of ``bpf/include/txlive.h``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import mmap
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftd.bpf import abi as abi_mod
from sftd.bpf import libbpf

BUILD = Path(abi_mod.PACKAGE_DIR) / "build"
TX_OBJECT = BUILD / "txlive.bpf.o"
SINK_OBJECT = BUILD / "txsink.bpf.o"

SLOT_SIZE = 2048
SLOTS = 1024
CTL_SIZE = 40  # struct txlive_ctl
CTL_FORMAT = "<IIIIQQQ"
MAX_SEQ = 131072
RECORD = struct.Struct("<IIIHHQ")  # struct txsink_record
STATS = struct.Struct("<QQQQ")  # struct txsink_stats
CONFIG = struct.Struct("<IIHHI")  # struct txsink_config
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1
HEADERS_LEN = 42
PATTERN_LEN = 256 + 2048


def module() -> Any:
    """The cffi module of bpf/native/txpaths.c."""
    import importlib

    try:
        return importlib.import_module("sftd.bpf._txpaths")
    except ImportError as exc:
        raise RuntimeError(f"the transmit loops are not built ({exc}): run "
                           "`python -m sftd.bpf.native.txpaths_build`") from exc


# ------------------------------------------------------------------ the bytes sent
def payload(pattern: bytes, seq: int, length: int) -> bytes:
    """The UDP payload of sequence number ``seq`` (txpaths.c write_payload)."""
    body = pattern[seq & 255:(seq & 255) + length]
    return struct.pack("!I", seq & 0xFFFFFFFF) + body[4:]


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def expected_frame(src_mac: bytes, dst_mac: bytes, saddr: str, daddr: str, sport: int,
                   dport: int, data: bytes) -> bytes:
    """Ethernet/IPv4/UDP as engine/src/xsk.c's templates write them: DSCP 0, id 0,
    DF, TTL 64, UDP checksum 0."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(data), 0, 0x4000, 64, 17, 0,
                               ipaddress.IPv4Address(saddr).packed,
                               ipaddress.IPv4Address(daddr).packed))
    ip[10:12] = struct.pack("!H", _ip_checksum(bytes(ip)))
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    return dst_mac + src_mac + b"\x08\x00" + bytes(ip) + udp + data


def frame_hash(data: bytes) -> int:
    """txsink.bpf.c's hash: FNV-1a over 8-byte little-endian words, then the tail
    bytes, xor the length."""
    h = FNV_OFFSET
    words = len(data) // 8
    for (w,) in struct.iter_unpack("<Q", data[:words * 8]):
        h = ((h ^ w) * FNV_PRIME) & MASK64
    for b in data[words * 8:]:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h ^ len(data)


# ------------------------------------------------------------------ namespaces
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Runs the block with this thread in the named network namespace."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class VethNamespaces:
    """Namespaces ``<tag>-s`` (sender) and ``<tag>-r`` (receiver) joined by veth
    ends ``<short>s``/``<short>r``. The sender has ``10.78.0.1/24`` and reaches
    every destination ``10.79.0.0/16`` through the receiver's end ``10.78.0.2``
    (a permanent neighbour entry: no ARP)."""

    tag: str
    sender_ip: str = "10.78.0.1"
    gateway_ip: str = "10.78.0.2"
    destinations: str = "10.79.0.0/16"
    ns_s: str = field(init=False)
    ns_r: str = field(init=False)
    if_s: str = field(init=False)
    if_r: str = field(init=False)
    mac_s: bytes = field(init=False, default=b"")
    mac_r: bytes = field(init=False, default=b"")
    created: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.ns_s, self.ns_r = f"{self.tag}-s", f"{self.tag}-r"
        short = self.tag.replace("-", "")[:14]
        self.if_s, self.if_r = f"{short}s", f"{short}r"

    def _mac(self, ns: str, ifname: str) -> bytes:
        link = json.loads(_ip("-j", "-n", ns, "link", "show", "dev", ifname).stdout)[0]
        return bytes.fromhex(str(link["address"]).replace(":", ""))

    def create(self) -> VethNamespaces:
        _ip("netns", "add", self.ns_s)
        self.created = True
        _ip("netns", "add", self.ns_r)
        _ip("link", "add", self.if_s, "netns", self.ns_s, "type", "veth", "peer", "name",
            self.if_r, "netns", self.ns_r)
        for ns, ifname, addr in ((self.ns_s, self.if_s, self.sender_ip),
                                 (self.ns_r, self.if_r, self.gateway_ip)):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            "net.ipv6.conf.all.disable_ipv6=1"], check=False, capture_output=True)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
        self.mac_s = self._mac(self.ns_s, self.if_s)
        self.mac_r = self._mac(self.ns_r, self.if_r)
        _ip("-n", self.ns_s, "neigh", "replace", self.gateway_ip, "lladdr",
            ":".join(f"{b:02x}" for b in self.mac_r), "dev", self.if_s, "nud", "permanent")
        _ip("-n", self.ns_s, "route", "add", self.destinations, "via", self.gateway_ip)
        return self

    def ifindex(self, ns: str, ifname: str) -> int:
        with entered(ns):
            return socket.if_nametoindex(ifname)

    def delete(self) -> None:
        """Deletes both namespaces by name (the veth pair goes with them)."""
        for ns in (self.ns_s, self.ns_r):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self.created = False

    def __enter__(self) -> VethNamespaces:
        try:
            return self.create()
        except BaseException:
            self.delete()
            raise

    def __exit__(self, *exc: object) -> None:
        self.delete()


# ------------------------------------------------------------------ BPF objects
class TxLive:
    """The live-frames transmitter's program and its mmapped slots/control blocks.

    ``hold_ifindex``: an interface of the calling thread's namespace to attach the
    program to in generic mode (its packets pass untouched), so that it stays in
    the kernel's XDP dispatcher: otherwise every test run with repeat > 1 adds it
    and removes it again, and the removal sleeps for an RCU grace period (~25 ms
    measured). 0: no attachment (each call then sleeps)."""

    def __init__(self, hold_ifindex: int = 0) -> None:
        if not TX_OBJECT.exists():
            raise RuntimeError(f"{TX_OBJECT} is not built: run `make -C bpf`")
        self.obj = libbpf.BpfObject.open(TX_OBJECT)
        try:
            self.obj.load(("txlive_tx",))
            self.prog = self.obj.program("txlive_tx")
            slots, ctl = self.obj.map("txlive_slots"), self.obj.map("txlive_ctl")
            if slots.entry_stride != SLOT_SIZE or ctl.entry_stride != CTL_SIZE:
                raise RuntimeError("txlive.h and bpf/txlive.py disagree on the layouts")
            self.slots: mmap.mmap = slots.mmap()
            self.ctl: mmap.mmap = ctl.mmap()
            self._hold: libbpf.Attachment | None = None
            if hold_ifindex:
                self._hold = libbpf.attach_xdp(hold_ifindex, self.prog, native=False)
        except BaseException:
            self.obj.close()
            raise

    def control(self, cpu: int) -> dict[str, int]:
        names = ("base", "count", "next", "ifindex", "sent", "bad", "overrun")
        return dict(zip(names, struct.unpack_from(CTL_FORMAT, self.ctl, cpu * CTL_SIZE)))

    def close(self) -> None:
        if self._hold is not None:
            with contextlib.suppress(OSError):
                self._hold.detach()
            self._hold = None
        self.slots.close()
        self.ctl.close()
        self.obj.close()

    def __enter__(self) -> TxLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Record:
    count: int
    length: int
    daddr: str
    dport: int
    hash: int


class TxSink:
    """txsink.bpf.c in driver mode on ``ifindex`` (of the calling thread's namespace)."""

    def __init__(self, ifindex: int) -> None:
        if not SINK_OBJECT.exists():
            raise RuntimeError(f"{SINK_OBJECT} is not built: run `make -C bpf`")
        self.obj = libbpf.BpfObject.open(SINK_OBJECT)
        self._attachment: libbpf.Attachment | None = None
        self._mms: list[mmap.mmap] = []
        try:
            self.obj.load(("txsink",))
            self.config_map = self.obj.map("txsink_config")
            self.stats_map = self.obj.map("txsink_stats")
            self.records_map = self.obj.map("txsink_records")
            self.stats_mm = self.stats_map.mmap()
            self._mms.append(self.stats_mm)
            self.records_mm = self.records_map.mmap()
            self._mms.append(self.records_mm)
            self.prog = self.obj.program("txsink")
            self.configure(verify=False, hash_from=0, ports=(1, 65535))
            self._attachment = libbpf.attach_xdp(ifindex, self.prog, native=True)
            if self._attachment.flags != libbpf.XDP_FLAGS_DRV_MODE:
                raise RuntimeError(f"txsink: driver mode refused ({self._attachment.fallback})")
        except BaseException:
            self.close()
            raise

    def configure(self, verify: bool, hash_from: int, ports: tuple[int, int]) -> None:
        self.config_map.update(struct.pack("<I", 0),
                               CONFIG.pack(int(verify), hash_from, ports[0], ports[1], 0))

    def reset(self) -> None:
        """Zeroes the statistics and every record."""
        self.stats_mm[:] = bytes(len(self.stats_mm))
        self.records_mm[:] = bytes(len(self.records_mm))

    def stats(self) -> dict[str, int]:
        return dict(zip(("packets", "bytes", "out_of_range", "short_frames"),
                        STATS.unpack_from(self.stats_mm, 0)))

    def records(self, count: int) -> list[Record]:
        """Records of sequence numbers 0..count-1."""
        out = []
        for seq in range(count):
            n, length, daddr, dport, _, h = RECORD.unpack_from(self.records_mm, seq * RECORD.size)
            out.append(Record(n, length, socket.inet_ntoa(struct.pack("<I", daddr)),
                              socket.ntohs(dport), h))
        return out

    def program_ns(self, frame: bytes, repeat: int = 200_000) -> float:
        """The program's own time per frame (BPF_PROG_TEST_RUN, not live): what the
        receiving end adds to the sender's core per packet, beyond the veth."""
        return self.prog.test_run(frame, repeat=repeat).duration_ns

    def close(self) -> None:
        if self._attachment is not None:
            with contextlib.suppress(OSError):
                self._attachment.detach()
            self._attachment = None
        for mm in self._mms:
            mm.close()
        self._mms.clear()
        self.obj.close()


# ------------------------------------------------------------------ the loops
PATHS = ("udp-sendmmsg", "udp-connected", "udp-per-dest", "packet-ring", "xsk-copy", "live")
RAW_PATHS = ("packet-ring", "xsk-copy", "live")


@dataclass
class Traffic:
    """What one loop sends: sequence numbers seq_start.. to destinations
    (daddr_base + d, dport_base + d), d = seq % ndest."""

    payload_len: int
    batch: int = 64
    payload_len_odd: int = 0  # odd sequence numbers' payload bytes (0: payload_len)
    ndest: int = 256
    packets: int = 0  # 0: for ``seconds``
    seconds: float = 0.0
    seq_start: int = 0
    sport: int = 5000
    dport_base: int = 20000
    daddr_base: str = "10.79.0.1"

    def length(self, seq: int) -> int:
        return self.payload_len_odd if seq & 1 and self.payload_len_odd else self.payload_len

    def destination(self, seq: int) -> tuple[str, int]:
        d = seq % self.ndest
        return (str(ipaddress.IPv4Address(self.daddr_base) + d), self.dport_base + d)


class Sender:
    """Runs the C loops of bpf/native/txpaths.c on the calling thread, which must
    be in the sender namespace of ``topo``."""

    def __init__(self, topo: VethNamespaces, pattern: bytes, live: TxLive | None = None) -> None:
        if len(pattern) < PATTERN_LEN:
            raise ValueError(f"pattern must be >= {PATTERN_LEN} bytes")
        self.mod = module()
        self.topo = topo
        self.pattern = pattern
        self._pattern_c = self.mod.ffi.new("uint8_t[]", pattern)
        self.live = live
        self.ifindex = socket.if_nametoindex(topo.if_s)

    def _config(self, t: Traffic) -> Any:
        ffi = self.mod.ffi
        cfg = ffi.new("struct txp_config *")
        cfg.payload_len = t.payload_len
        cfg.payload_len_odd = t.payload_len_odd
        cfg.batch = t.batch
        cfg.ndest = t.ndest
        cfg.seq_start = t.seq_start
        cfg.packets = t.packets
        cfg.duration_ns = int(t.seconds * 1e9)
        cfg.saddr = int.from_bytes(ipaddress.IPv4Address(self.topo.sender_ip).packed, "little")
        cfg.daddr_base = int(ipaddress.IPv4Address(t.daddr_base))
        cfg.sport = t.sport
        cfg.dport_base = t.dport_base
        cfg.src_mac = self.topo.mac_s
        cfg.dst_mac = self.topo.mac_r
        cfg.pattern = self._pattern_c
        return cfg

    def _udp_sockets(self, path: str, t: Traffic) -> list[socket.socket]:
        socks = []
        try:
            if path == "udp-sendmmsg":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((self.topo.sender_ip, t.sport))
                return socks
            for d in range(t.ndest):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                if path == "udp-connected":
                    s.bind((self.topo.sender_ip, 0))
                    s.connect(t.destination(d))
                else:  # a socket per leg, each on its own port
                    s.bind((self.topo.sender_ip, 0))
            return socks
        except BaseException:
            for s in socks:
                s.close()
            raise

    def run(self, path: str, t: Traffic, kernel_batch: int = 0) -> dict[str, int]:
        """One loop; the C result as a dict. kernel_batch: the live path's
        batch_size (default: t.batch)."""
        ffi, lib = self.mod.ffi, self.mod.lib
        cfg = self._config(t)
        res = ffi.new("struct txp_result *")
        if path.startswith("udp-"):
            socks = self._udp_sockets(path, t)
            try:
                fds = ffi.new("int[]", [s.fileno() for s in socks])
                mode = {"udp-sendmmsg": lib.TXP_UDP_ONE_SOCKET,
                        "udp-connected": lib.TXP_UDP_CONNECTED,
                        "udp-per-dest": lib.TXP_UDP_PER_DEST}[path]
                ret = lib.txp_udp(cfg, fds, len(socks), mode, res)
            finally:
                for s in socks:
                    s.close()
        elif path == "packet-ring":
            ret = lib.txp_packet_ring(cfg, self.ifindex, max(256, 2 * t.batch), res)
        elif path == "xsk-copy":
            err = ffi.new("char[]", 256)
            ret = lib.txp_xsk(cfg, self.ifindex, 2048, res, err, 256)
            if ret and err[0] != b"\0":
                raise OSError(-ret, f"{path}: {ffi.string(err).decode()}")
        elif path == "live":
            if self.live is None:
                raise ValueError("the live path needs a TxLive")
            ret = lib.txp_live(cfg, self.live.prog.fd, ffi.from_buffer(self.live.slots),
                               ffi.from_buffer(self.live.ctl), 0, self.ifindex,
                               kernel_batch or t.batch, res)
        else:
            raise ValueError(f"no path {path!r}: one of {PATHS}")
        if ret:
            raise OSError(-ret, f"{path}: {os.strerror(-ret)}")
        return {name: int(getattr(res, name)) for name in
                ("sent", "syscalls", "errors", "elapsed_ns", "thread_ns", "last_errno")}

    def expected(self, path: str, t: Traffic, seq: int) -> tuple[bytes, int]:
        """(bytes the sink hashes, frame length) of sequence number seq on path."""
        daddr, dport = t.destination(seq)
        data = payload(self.pattern, seq, t.length(seq))
        frame = expected_frame(self.topo.mac_s, self.topo.mac_r, self.topo.sender_ip, daddr,
                               t.sport, dport, data)
        return (frame if path in RAW_PATHS else data), len(frame)


def hash_from(path: str) -> int:
    """Where the sink's hash starts: the whole frame on raw paths, the UDP payload
    where the kernel writes the headers."""
    return 0 if path in RAW_PATHS else HEADERS_LEN


def compare(sender: Sender, sink: TxSink, path: str, t: Traffic) -> dict[str, Any]:
    """What the sink recorded for the sequence numbers ``t`` sent against what
    ``path`` should have sent: missing, duplicated and wrong (length,
    destination or bytes) sequence numbers."""
    if not 0 < t.packets or t.seq_start + t.packets > MAX_SEQ:
        raise ValueError(f"verify runs send sequence numbers below {MAX_SEQ}")
    missing, duplicated, wrong = [], [], []
    records = sink.records(t.seq_start + t.packets)[t.seq_start:]
    for seq, rec in enumerate(records, start=t.seq_start):
        if rec.count == 0:
            missing.append(seq)
            continue
        if rec.count > 1:
            duplicated.append(seq)
        data, length = sender.expected(path, t, seq)
        if (rec.length, (rec.daddr, rec.dport), rec.hash) != (length, t.destination(seq),
                                                              frame_hash(data)):
            wrong.append(seq)
    return {"packets": t.packets, "missing": len(missing), "duplicated": len(duplicated),
            "wrong": len(wrong), "first_bad": (missing + duplicated + wrong)[:5],
            "sink": sink.stats()}
