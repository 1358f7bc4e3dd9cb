"""One single-program XDP (or TC ingress) object on one interface, with its own maps
pinned by name.

Shared by the steering program (``bpf/steer.py``, XDP) and the load generator's
sink (``sftload/sink.py``, TC ingress): open and load the object, pin the named
maps under ``/sys/fs/bpf/sftd/<pin_name>/`` with the program itself (a crashed
process's program is found by that pin, detached from the interface and
unpinned), attach (XDP in driver mode where the driver has it), and undo
exactly that on close.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from pathlib import Path

from sftd.bpf import libbpf

log = logging.getLogger(__name__)

PIN_ROOT = libbpf.BPFFS / "sftd"


class XdpProgramError(RuntimeError):
    """The XDP program could not be set up."""


# the clsact ingress slot of a tc_hook program (the kernel plane's priority is 0x5F7)
TC_HANDLE, TC_PRIORITY = 1, 0x5F8


class PinnedXdpProgram:
    def __init__(self, object_path: Path, program: str, maps: tuple[str, ...], ifname: str,
                 pin_name: str, tc_hook: bool = False) -> None:
        if not pin_name or "/" in pin_name or "/" in ifname:
            raise XdpProgramError(f"bad pin name {pin_name!r} or interface {ifname!r}")
        if not object_path.exists():
            raise XdpProgramError(f"{object_path} is not built: run `make -C bpf`")
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:
            raise XdpProgramError(f"no interface {ifname!r} in this network namespace") from exc
        self.ifname = ifname
        self.tc_hook = tc_hook  # a TC ingress program instead of XDP
        self.program = program
        self.map_names = maps
        self.pin_dir = PIN_ROOT / pin_name
        self._attachment: libbpf.Attachment | None = None
        self.obj = libbpf.BpfObject.open(object_path)
        try:
            self.obj.load((program,))
            self.maps = {name: self.obj.map(name) for name in maps}
        except BaseException:
            self.obj.close()
            raise

    @property
    def _program_pin(self) -> Path:
        return self.pin_dir / f"prog_{self.program}"

    def attach(self, native: bool = True) -> None:
        """Pins the maps and attaches (native: driver mode where the driver has it, else
        generic); call once the maps hold their configuration."""
        try:
            self._remove_stale()
            self.pin_dir.mkdir(parents=True, exist_ok=True)
            for name, m in self.maps.items():
                self.obj.pin_map(m, self.pin_dir / name)
            self.obj.pin_program(self.program, self._program_pin)
            prog = self.obj.program(self.program)
            self._attachment = (libbpf.attach_tc(self.ifindex, prog, TC_HANDLE, TC_PRIORITY)
                                if self.tc_hook else libbpf.attach_xdp(self.ifindex, prog, native))
        except BaseException:
            self.close()
            raise
        if native and not self.tc_hook and self._attachment.fallback:
            log.warning("%s on %s runs in generic XDP mode (driver mode refused: %s)",
                        self.program, self.ifname, self._attachment.fallback)

    @property
    def native(self) -> bool:
        """Whether the program runs in the driver (not generic/skb) mode."""
        return (self._attachment is not None
                and self._attachment.flags == libbpf.XDP_FLAGS_DRV_MODE)

    def percpu_totals(self, map_name: str, count: int) -> list[int]:
        """Entries 0..count-1 of a per-CPU array of u64, summed over CPUs."""
        m = self.maps[map_name]
        return [sum(struct.unpack("<Q", v)[0] for v in m.lookup_percpu(struct.pack("<I", i)))
                for i in range(count)]

    def _remove_stale(self) -> None:
        """Detaches and unpins what a crashed process of the same pin name left."""
        if self._program_pin.exists():
            fd = libbpf.obj_get(self._program_pin)
            try:
                stale_id = libbpf.prog_id_of_fd(fd)
            finally:
                os.close(fd)
            if self.tc_hook:  # each only if it still runs stale_id
                libbpf.detach_tc(self.ifindex, TC_HANDLE, TC_PRIORITY, stale_id,
                                 destroy_hook=True)
            else:
                for mode in (libbpf.XDP_FLAGS_DRV_MODE, libbpf.XDP_FLAGS_SKB_MODE):
                    libbpf.detach_xdp(self.ifindex, stale_id, mode)
            log.info("removed the stale %s of %s from %s", self.program, self.pin_dir,
                     self.ifname)
        self._remove_pins()

    def _remove_pins(self) -> None:
        for name in (*self.map_names, self._program_pin.name):
            (self.pin_dir / name).unlink(missing_ok=True)
        if self.pin_dir.exists():
            self.pin_dir.rmdir()

    def close(self) -> None:
        """Detach, unpin (by name) and free; safe to call twice."""
        if self._attachment is not None:
            self._attachment.detach()
            self._attachment = None
        self._remove_pins()
        self.obj.close()
