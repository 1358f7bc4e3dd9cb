"""Pins and attachment: where the kernel data plane's programs and maps are
pinned (``/sys/fs/bpf/sftd/<instance>/``), the interfaces its programs run on,
and what a crashed process of the same instance left behind.

TC (clsact ingress) runs on every interface served; XDP, an early filter only,
on those where it is worth it (not loopback). An interface a leg's media takes
that is not among them is added when the leg is (``serve_path``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import libbpf

log = logging.getLogger(__name__)

PIN_ROOT = libbpf.BPFFS / "sftd"
TC_PRIORITY = 0x5F7  # our filter's priority on clsact ingress; the handle is per instance
PROGRAMS = ("sft_xdp_ingress", "sft_tc_ingress")
_IFF_LOOPBACK = 0x8
_SIOCGIFFLAGS = 0x8913


def tc_handle(instance: str) -> int:
    """The TC filter handle of an instance: instances on one host never share one."""
    return (zlib.crc32(instance.encode()) & 0xFFFF) or 1


def is_loopback(ifname: str) -> bool:
    """IFF_LOOPBACK of ``ifname`` in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sH14x", ifname.encode()[:15], 0))
    return bool(struct.unpack_from("16sH", raw)[1] & _IFF_LOOPBACK)


def _mac(text: str | None) -> bytes:
    return bytes.fromhex(text.replace(":", "")) if text else bytes(6)


@dataclass
class Route:
    ifindex: int
    src_mac: bytes
    dst_mac: bytes


def resolve_route(remote_ip: str) -> Route | None:
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
            if link["flags"] & _IFF_LOOPBACK:  # no L2 addresses
                return Route(oif, bytes(6), bytes(6))
            for neigh in ipr.get_neighbours(ifindex=oif):
                if neigh.get_attr("NDA_DST") == next_hop and neigh.get_attr("NDA_LLADDR"):
                    return Route(oif, src_mac, _mac(neigh.get_attr("NDA_LLADDR")))
    except Exception as exc:  # noqa: BLE001 - an unresolved route is retried later
        log.debug("route to %s unresolved: %s", remote_ip, exc)
    return None


def pin(obj: libbpf.BpfObject, maps: Iterable[tuple[str, libbpf.Map]], pin_dir: Path) -> None:
    pin_dir.mkdir(parents=True, exist_ok=True)
    for name, m in maps:
        obj.pin_map(m, pin_dir / name)
    for name in PROGRAMS:
        obj.pin_program(name, pin_dir / f"prog_{name}")


def unpin(pin_dir: Path, map_names: Iterable[str]) -> None:
    """Removes this instance's pins, by name, and the directory once empty."""
    for name in map_names:
        (pin_dir / name).unlink(missing_ok=True)
    for name in PROGRAMS:
        (pin_dir / f"prog_{name}").unlink(missing_ok=True)
    try:
        pin_dir.rmdir()
    except OSError:
        pass


def remove_stale(pin_dir: Path, handle: int, instance: str) -> None:
    """Detach and unpin what a previous process of this instance left: every
    program pinned in ``pin_dir`` (``prog_*``) comes off XDP, and off TC at the
    instance's ``handle``, on the interfaces of this network namespace."""
    if not pin_dir.exists():
        return
    stale_ids = set()
    for pinned in sorted(pin_dir.glob("prog_*")):
        fd = libbpf.obj_get(pinned)
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
        tc_id = libbpf.tc_prog_id(ifindex, handle, TC_PRIORITY)
        if tc_id in stale_ids:
            libbpf.detach_tc(ifindex, handle, TC_PRIORITY, tc_id)
    shutil.rmtree(pin_dir, ignore_errors=True)
    log.info("removed stale pins and programs of instance %s", instance)


class Attachments:
    """The programs' attachments of one instance, in the network namespace it was
    created in, and the sysctls changed for them; ``close`` undoes all of it."""

    def __init__(self, xdp_program: libbpf.Program, tc_program: libbpf.Program,
                 handle: int) -> None:
        self.xdp_program = xdp_program
        self.tc_program = tc_program
        self.handle = handle
        self.attachments: list[libbpf.Attachment] = []
        self.served: dict[int, str] = {}  # ifindex -> name of every interface TC serves
        self._restore_sysctls: list[tuple[Path, str]] = []
        self.home = libbpf.NetnsHome()

    def attach(self, ifname: str, xdp: bool) -> None:
        """TC everywhere; XDP where it is worth it: not on loopback, where it would
        run in generic mode on every local packet."""
        ifindex = socket.if_nametoindex(ifname)
        loopback = is_loopback(ifname)
        if xdp and not loopback:
            attachment = libbpf.attach_xdp(ifindex, self.xdp_program)
            self.attachments.append(attachment)
            if attachment.fallback:
                log.warning(
                    "XDP on %s runs in generic (skb) mode: the driver refused native mode "
                    "(%s); media is served all the same. For native XDP turn the offload "
                    "off (ethtool -K %s gro off lro off, or for virtio_net guest_csum off) "
                    "and restart", ifname, attachment.fallback, ifname)
        self.attachments.append(
            libbpf.attach_tc(ifindex, self.tc_program, self.handle, TC_PRIORITY))
        self.served[ifindex] = ifname
        if loopback:
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

    def serve_path(self, leg_id: int, ifindex: int) -> str:
        """Attaches TC on the interface a leg's media takes when it is not served yet
        (loopback for a client or TURN relay on this host, another NIC): a leg is
        never left on a path the programs do not see. Returns the interface's name."""
        with self.home.entered():
            ifname = socket.if_indextoname(ifindex)
            if ifindex not in self.served:
                self.attach(ifname, xdp=False)
                log.info("data plane: kernel (eBPF) now also on %s, the path of leg %d",
                         ifname, leg_id)
        return ifname

    def resolve_route(self, remote_ip: str) -> Route | None:
        """``resolve_route`` in the instance's namespace; setns is per thread, so
        the thread that asks enters it."""
        with self.home.entered():
            return resolve_route(remote_ip)

    def close(self) -> None:
        with self.home.entered():  # ifindexes mean something only there
            for attachment in reversed(self.attachments):
                try:
                    attachment.detach()
                except libbpf.BpfError as exc:
                    log.warning("%s", exc)
            self.attachments.clear()
            for path, value in self._restore_sysctls:
                try:
                    path.write_text(value)
                except OSError as exc:
                    log.warning("could not restore %s to %s: %s", path, value, exc)
            self._restore_sysctls.clear()
        self.home.close()
