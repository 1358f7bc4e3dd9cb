"""Python face of the AF_XDP port module (``engine/src/xsk.{h,c}``, built by
``python -m sftd.engine.xsk_build``). The engine drives ports from C; this
wrapper serves the controller (setup, statistics), tests and benchmarks.
Like the C port, an :class:`XskPort` belongs to one thread.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any


class XskError(OSError):
    """An AF_XDP port could not be made or used."""


def module() -> ModuleType:
    try:
        return importlib.import_module("sftd.engine._xsk")
    except ImportError as exc:
        raise XskError(f"the AF_XDP module is not built ({exc}): run "
                       "`python -m sftd.engine.xsk_build` (scripts/setup.sh does)") from exc


def _be32(addr: str) -> int:
    """An IPv4 address as the C side's network-order uint32."""
    return int.from_bytes(ipaddress.IPv4Address(addr).packed, "little")


def _addr(be32: int) -> str:
    return str(ipaddress.IPv4Address(int(be32).to_bytes(4, "little")))


@dataclass(frozen=True)
class Datagram:
    """One received UDP datagram, copied out of the UMEM."""

    payload: bytes
    remote: tuple[str, int]
    local: tuple[str, int]


class UdpTemplate:
    """Ethernet/IPv4/UDP headers towards one destination (``xsk_udp_template``)."""

    def __init__(self, src_mac: bytes, dst_mac: bytes, local: tuple[str, int],
                 remote: tuple[str, int], dscp: int = 0) -> None:
        mod = module()
        self.c = mod.ffi.new("struct xsk_udp_template *")
        mod.lib.xsk_udp_template_build(self.c, src_mac, dst_mac, _be32(local[0]),
                                       _be32(remote[0]), socket.htons(local[1]),
                                       socket.htons(remote[1]), dscp)


class XskPort:
    """One AF_XDP socket on (interface, queue) with its UMEM and rings."""

    def __init__(self, ifname: str, queue: int = 0, *, ring_size: int = 0,
                 frame_size: int = 0, mode: str = "auto", need_wakeup: bool = True) -> None:
        self._mod = module()
        ffi, lib = self._mod.ffi, self._mod.lib
        modes = {"auto": lib.XSK_MODE_AUTO, "copy": lib.XSK_MODE_COPY,
                 "zerocopy": lib.XSK_MODE_ZEROCOPY}
        if mode not in modes:
            raise ValueError(f"mode {mode!r} is none of {sorted(modes)}")
        cfg = ffi.new("struct xsk_config *")
        cfg.ifindex = socket.if_nametoindex(ifname)
        cfg.queue_id = queue
        cfg.ring_size = ring_size
        cfg.frame_size = frame_size
        cfg.mode = modes[mode]
        cfg.need_wakeup = int(need_wakeup)
        out = ffi.new("struct xsk_port **")
        err = ffi.new("char[]", 256)
        ret = lib.xsk_port_open(cfg, out, err, 256)
        if ret < 0:
            raise XskError(-ret, f"AF_XDP port on {ifname} queue {queue}: "
                                 f"{ffi.string(err).decode(errors='replace')}")
        self.port: Any = out[0]
        self.ifname = ifname
        self.queue = queue
        self._rx = ffi.new("struct xsk_rx_desc[]", 256)
        self._tx = ffi.new("struct xsk_tx_desc[]", 256)

    @property
    def fd(self) -> int:
        return int(self._mod.lib.xsk_port_fd(self.port))

    @property
    def zerocopy(self) -> bool:
        return bool(self._mod.lib.xsk_port_zerocopy(self.port))

    def attach(self, xskmap_fd: int) -> None:
        """Become the target of this port's queue in an XSKMAP."""
        ret = self._mod.lib.xsk_port_attach_map(self.port, xskmap_fd)
        if ret < 0:
            raise XskError(-ret, f"AF_XDP port on {self.ifname} queue {self.queue}: "
                                 "XSKMAP update refused (is the map an XSKMAP?)")

    def receive(self, max_packets: int = 256) -> list[Datagram]:
        """What the rx ring holds now (up to max_packets), copied; frames released."""
        ffi, lib = self._mod.ffi, self._mod.lib
        n = lib.xsk_rx_batch(self.port, self._rx, min(max_packets, len(self._rx)))
        out = []
        for i in range(n):
            d = self._rx[i]
            out.append(Datagram(bytes(ffi.buffer(d.payload, d.payload_len)),
                                (_addr(d.saddr), socket.ntohs(d.sport)),
                                (_addr(d.daddr), socket.ntohs(d.dport))))
        lib.xsk_rx_release(self.port, self._rx, n)
        lib.xsk_kick(self.port)
        return out

    def send(self, packets: list[tuple[bytes, UdpTemplate]]) -> int:
        """Queues and kicks up to one ring's worth; returns how many were queued."""
        ffi, lib = self._mod.ffi, self._mod.lib
        n = lib.xsk_tx_reserve(self.port, self._tx, min(len(packets), len(self._tx)))
        for i in range(n):
            payload, template = packets[i]
            d = self._tx[i]
            ffi.memmove(d.payload, payload, len(payload))
            d.payload_len = len(payload)
            d.tmpl = template.c
        queued = int(lib.xsk_tx_submit(self.port, self._tx, n))
        self.flush()
        return queued

    def flush(self, max_kicks: int = 1000) -> None:
        """Kicks until the kernel took every queued frame (copy mode: 32 per kick)."""
        lib = self._mod.lib
        for _ in range(max_kicks):
            ret = lib.xsk_kick(self.port)
            if ret < 0:
                raise XskError(-ret, f"AF_XDP port on {self.ifname}: transmit kick failed")
            if not lib.xsk_tx_unsent(self.port):
                return
        raise XskError(0, f"AF_XDP port on {self.ifname}: the kernel took no frames "
                          f"in {max_kicks} kicks (interface down?)")

    def echo(self, template: UdpTemplate, duration_ns: int, busy_poll: bool = False) -> int:
        """Runs the C echo loop (xsk_loop.h) for duration_ns; returns packets echoed."""
        return int(self._mod.lib.xsk_echo_run(self.port, template.c, duration_ns, busy_poll))

    def blast(self, template: UdpTemplate, payload_len: int, window: int,
              duration_ns: int, busy_poll: bool = False) -> dict[str, int]:
        """Runs the C windowed sender (xsk_loop.h); sent, received and elapsed_ns."""
        ffi = self._mod.ffi
        out = ffi.new("struct xsk_blast_result *")
        self._mod.lib.xsk_blast_run(self.port, template.c, payload_len, window, duration_ns,
                                    busy_poll, out)
        return {name: int(getattr(out, name))
                for name, _ in ffi.typeof("struct xsk_blast_result").fields}

    def complete(self) -> int:
        return int(self._mod.lib.xsk_complete(self.port))

    @property
    def in_flight(self) -> int:
        return int(self._mod.lib.xsk_tx_in_flight(self.port))

    def stats(self) -> dict[str, int]:
        ffi = self._mod.ffi
        out = ffi.new("struct xsk_port_stats *")
        self._mod.lib.xsk_port_stats(self.port, out)
        return {name: int(getattr(out, name))
                for name, _ in ffi.typeof("struct xsk_port_stats").fields}

    def close(self) -> None:
        if self.port is not None:
            self._mod.lib.xsk_port_close(self.port)
            self.port = None

    def __enter__(self) -> XskPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
