"""The native engine's AF_XDP I/O (``--native-io xdp``): the controller's half.

On each media interface (``-O``) the steering program (``bpf/steer.py``) is
attached and one AF_XDP port per receive queue is opened in the engine
(``sfte_add_port``), owned by worker ``queue % workers``. Each live leg's
ICE-validated 5-tuple is registered with the steering program, which then
redirects that leg's RTP into the port of the queue it arrives on; STUN, DTLS
and RTCP go on to the leg's socket. Copies to a leg leave from a port of the
interface its route takes, framed with the MACs of the kernel's neighbour table
(``bpf/attach.py resolve_route``, the kernel plane's lookup).

Only workers with a port on every interface can transmit a whole conference
through AF_XDP, so conferences are placed on those (:attr:`XdpIo.workers`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger("sftd.native")

XSK_RING_SIZE = 2048  # frames per ring: 2 x 2048 x 2 KiB = 8 MiB of UMEM per port
XSK_MODE_AUTO = 0  # enum xsk_bind_mode: zero-copy where the driver has it


class XdpIoUnavailable(RuntimeError):
    """AF_XDP I/O cannot run here; ``str()`` says why."""


def receive_queues(ifname: str) -> int:
    """The interface's receive queues (one AF_XDP port each)."""
    queues = Path(f"/sys/class/net/{ifname}/queues")
    return max(1, len(list(queues.glob("rx-*")))) if queues.exists() else 1


class XdpIo:
    """Steering programs and AF_XDP ports of one engine; ``close`` undoes them."""

    def __init__(self, ffi: Any, lib: Any, engine: Any, *, interfaces: tuple[str, ...],
                 media_ports: tuple[int, int], instance: str, workers: int) -> None:
        from sftd.bpf.attach import is_loopback

        if workers < 1:
            raise XdpIoUnavailable("AF_XDP ports need worker threads (-w 1 or more)")
        if not interfaces:
            raise XdpIoUnavailable("no media interface (-O) to attach to")
        for ifname in interfaces:
            try:
                loopback = is_loopback(ifname)
            except OSError as exc:
                raise XdpIoUnavailable(f"no interface {ifname!r}: {exc}") from exc
            if loopback:
                raise XdpIoUnavailable(f"{ifname} is a loopback interface, where AF_XDP "
                                       "receives nothing of use; name the NIC with -O")
        self._ffi, self._lib = ffi, lib
        self._steering: dict[str, Any] = {}
        self.ifindexes: dict[int, str] = {}
        self.zerocopy = True
        owners: dict[str, set[int]] = {}
        err = ffi.new("char[256]")
        try:
            from sftd.bpf.steer import Steering

            for ifname in interfaces:
                steering = Steering(ifname, media_ports, instance)
                self._steering[ifname] = steering
                ifindex = socket.if_nametoindex(ifname)
                self.ifindexes[ifindex] = ifname
                for queue in range(receive_queues(ifname)):
                    worker = queue % workers
                    mode = lib.sfte_add_port(engine, worker, ifindex, queue, XSK_RING_SIZE,
                                             XSK_MODE_AUTO, steering.xskmap_fd, err, 256)
                    if mode < 0:
                        raise XdpIoUnavailable(ffi.string(err).decode(errors="replace"))
                    self.zerocopy &= bool(mode)
                    owners.setdefault(ifname, set()).add(worker)
        except XdpIoUnavailable:
            self.close()
            raise
        except Exception as exc:  # BPF or socket failure: the reason goes to the log
            self.close()
            raise XdpIoUnavailable(str(exc)) from exc
        # workers that can send to a leg on any of the interfaces
        self.workers = sorted(set.intersection(*owners.values()))
        self.summary = ", ".join(
            f"{ifname} ({receive_queues(ifname)} queues, "
            f"{'driver' if s.native else 'generic'} XDP)" for ifname, s in self._steering.items())

    def fill_path(self, path: Any, local: tuple[str, int], remote: tuple[str, int]) -> None:
        """``struct sfte_path`` of a leg: its 5-tuple, and the interface and MACs
        towards ``remote`` when the route leaves by one of the ports' interfaces."""
        from sftd.bpf import libbpf
        from sftd.bpf.attach import resolve_route

        path.local_host = local[0].encode()
        path.local_port = local[1]
        path.ifindex = 0
        route = libbpf.call_on_loopless_thread(resolve_route, remote[0])
        if route is None or route.ifindex not in self.ifindexes:
            log.info("copies to %s:%d go by the socket: %s", *remote,
                     "no route or neighbour entry" if route is None else
                     "its route leaves by an interface without AF_XDP ports")
            return
        path.ifindex = route.ifindex
        path.src_mac = route.src_mac
        path.dst_mac = route.dst_mac

    def register(self, leg_id: int, local: tuple[str, int], remote: tuple[str, int]) -> None:
        """The leg's RTP from ``remote`` to ``local`` goes to the ports from now on."""
        from sftd.bpf.steer import SteeringError

        if ipaddress.ip_address(remote[0]).version != 4:
            log.info("leg %d: IPv6, so its media stays on the socket path", leg_id)
            return
        for ifname, steering in self._steering.items():
            try:
                steering.add_leg(local, remote, leg_id)
            except SteeringError as exc:  # IPv6, or the map is full: the socket path
                log.warning("leg %d on %s stays on the socket path: %s", leg_id, ifname, exc)

    def unregister(self, local: tuple[str, int], remote: tuple[str, int]) -> None:
        from sftd.bpf.steer import SteeringError

        for steering in self._steering.values():
            try:
                steering.remove_leg(local, remote)
            except SteeringError:
                pass  # never registered (IPv6)

    def counters(self) -> dict[str, int]:
        """The steering programs' counters, summed over the interfaces."""
        totals: dict[str, int] = {}
        for steering in self._steering.values():
            for counter, value in steering.counters().items():
                totals[f"STEER_{counter.name}"] = totals.get(f"STEER_{counter.name}", 0) + value
        return totals

    def close(self) -> None:
        """Detaches and unpins every steering program (by name); the ports go with
        the engine."""
        for steering in self._steering.values():
            try:
                steering.close()
            except Exception as exc:  # noqa: BLE001 - close the others all the same
                log.warning("closing XDP steering: %s", exc)
        self._steering.clear()
