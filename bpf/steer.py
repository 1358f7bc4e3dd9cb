"""Loader of ``bpf/src/steer.bpf.c``: XDP steering of legs' RTP into AF_XDP sockets.

One :class:`Steering` per media interface: it loads its own copy of the object
(its own maps), writes the media port range, attaches in driver mode where the
driver has it (generic mode otherwise, logged), and pins its maps under
``/sys/fs/bpf/sftd/steer-<instance>-<ifname>/`` (``bpf/xdpprog.py``). The
controller registers each live leg's 5-tuple with :meth:`Steering.add_leg`; the
AF_XDP port of each receive queue enters the ``sft_xsks`` map
(``xsk_port_attach_map`` with :attr:`Steering.xskmap_fd`).
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
from pathlib import Path

from sftd.bpf import abi as abi_mod
from sftd.bpf import libbpf
from sftd.bpf.xdpprog import PinnedXdpProgram, XdpProgramError

OBJECT_PATH = Path(__file__).resolve().parent / "build" / "steer.bpf.o"
PROGRAM = "sft_steer"
MAPS = ("sft_steer_config", "sft_steer_legs", "sft_xsks", "sft_steer_counters")


class SteerCounter(enum.IntEnum):
    """What the steering program did with a packet; ``enum sft_steer_counter``."""

    PASS_STUN = 0
    PASS_DTLS = 1
    PASS_RTCP = 2
    REDIRECT = 3
    PASS_NO_SOCKET = 4
    DROP_SHORT = 5
    DROP_JUNK = 6
    DROP_UNKNOWN = 7
    DROP_FRAGMENT = 8
    DROP_IP_OPTIONS = 9
    DROP_BAD_LENGTH = 10


class SteeringError(XdpProgramError):
    """The steering program could not be set up or given a leg."""


def _be32(addr: str) -> int:
    """An IPv4 address as the __be32 the program compares."""
    ip = ipaddress.ip_address(addr)
    if ip.version != 4:
        raise SteeringError(f"{addr}: XDP steering handles IPv4 only; IPv6 legs stay on "
                            "the socket path")
    return int.from_bytes(ip.packed, "little")


class Steering:
    """The steering program on one interface, with its own maps and pins."""

    def __init__(self, ifname: str, media_ports: tuple[int, int], instance: str) -> None:
        if not 0 < media_ports[0] <= media_ports[1] <= 65535:
            raise SteeringError(f"bad media port range {media_ports}")
        self._abi = abi_mod.load()
        self.prog = PinnedXdpProgram(OBJECT_PATH, PROGRAM, MAPS, ifname,
                                     f"steer-{instance}-{ifname}")
        self.maps = self.prog.maps
        try:
            self.maps["sft_steer_config"].update(
                struct.pack("<I", 0),
                self._abi.pack("sft_steer_config", port_min=media_ports[0],
                               port_max=media_ports[1]))
        except BaseException:
            self.prog.close()
            raise
        self.prog.attach()

    @property
    def native(self) -> bool:
        return self.prog.native

    @property
    def xskmap_fd(self) -> int:
        return self.maps["sft_xsks"].fd

    def _key(self, local: tuple[str, int], remote: tuple[str, int]) -> bytes:
        return self._abi.pack("sft_addr_key", remote_ip=_be32(remote[0]),
                              local_ip=_be32(local[0]),
                              remote_port=socket.htons(remote[1]),
                              local_port=socket.htons(local[1]))

    def add_leg(self, local: tuple[str, int], remote: tuple[str, int], leg_id: int,
                queue: int = 0) -> None:
        """RTP from ``remote`` to ``local`` (an ICE-validated pair) goes to AF_XDP."""
        try:
            self.maps["sft_steer_legs"].update(
                self._key(local, remote), self._abi.pack("sft_steer_leg", leg_id=leg_id,
                                                         queue=queue))
        except libbpf.MapOperationFailed as exc:
            raise SteeringError(f"leg {leg_id} {remote} -> {local} not steered: {exc} "
                                f"(at most {self._abi.consts.SFT_STEER_MAX_LEGS} legs)") from exc

    def remove_leg(self, local: tuple[str, int], remote: tuple[str, int]) -> bool:
        return self.maps["sft_steer_legs"].delete(self._key(local, remote))

    def counters(self) -> dict[SteerCounter, int]:
        totals = self.prog.percpu_totals("sft_steer_counters", len(SteerCounter))
        return {c: totals[c.value] for c in SteerCounter}

    @property
    def obj(self) -> libbpf.BpfObject:
        return self.prog.obj

    def close(self) -> None:
        """Detach, unpin (by name) and free; safe to call twice."""
        self.prog.close()

    def __enter__(self) -> Steering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
