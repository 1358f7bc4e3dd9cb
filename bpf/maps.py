"""Map verbs: the kernel data plane's state as the BPF programs read it, written
and read through the structs of ``sft_abi.h`` (``bpf/abi.py``).

Ownership of each map is described in sft_abi.h. Keys of the maps indexed by a
plain ``__u32`` (leg, slot, conference, counter ids) are packed here; every
struct goes through the ABI. ``sft_slot_state`` is mmapped: each top-up reads
every slot's next index.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sftd.controller.dataplane import Counter, StreamKind

from . import abi as abi_mod
from . import libbpf
from .errors import KernelDataPlaneError

MAPS = ("sft_config", "sft_leg_by_addr", "sft_leg_by_local", "sft_legs", "sft_leases",
        "sft_leg_state", "sft_streams", "sft_stream_state", "sft_slots", "sft_slot_state",
        "sft_fanout", "sft_keystream", "sft_counters", "sft_kcounters", "sft_conf_packets",
        "sft_events", "sft_twcc_rings")
_U32 = struct.Struct("=I")  # a __u32 key
_U64 = struct.Struct("=Q")  # a __u64 value


def u32_key(value: int) -> bytes:
    return _U32.pack(value)


def ipv4_be32(addr: str) -> int:
    """An IPv4 address as the __be32 the kernel compares (host int of network bytes)."""
    ip = ipaddress.ip_address(addr)
    if ip.version != 4:
        raise KernelDataPlaneError(f"{addr}: the kernel data plane handles IPv4 only")
    return int.from_bytes(ip.packed, "little")


def be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


class KernelMaps:
    """The loaded object's maps by name, and the verbs the data plane writes them with."""

    def __init__(self, obj: libbpf.BpfObject, abi: abi_mod.Abi) -> None:
        self.abi = abi
        self._c = abi.consts
        self.by_name = {name: obj.map(name) for name in MAPS}
        slot_state = self.by_name["sft_slot_state"]
        if slot_state.entry_stride != abi.sizeof("sft_slot_state"):
            raise KernelDataPlaneError("sft_slot_state differs from sft_abi.h: make -C bpf")
        self._slot_state_mm = slot_state.mmap()
        self._slot_state_buffer = abi.ffi.from_buffer(self._slot_state_mm)
        self._slot_states: Any = abi.ffi.cast("struct sft_slot_state *",
                                              self._slot_state_buffer)
        # each top-up reads every slot's next index: as 64-bit words, the fastest read
        self._slot_state_words = memoryview(self._slot_state_mm).cast("Q")
        self._slot_stride_words = slot_state.entry_stride // 8
        self._next_index_word = abi.ffi.offsetof("struct sft_slot_state", "next_index") // 8
        self._stream_keys: dict[tuple[int, int], bytes] = {}

    def __getitem__(self, name: str) -> libbpf.Map:
        return self.by_name[name]

    def items(self) -> Iterable[tuple[str, libbpf.Map]]:
        return self.by_name.items()

    def close(self) -> None:
        self._slot_states = None
        self._slot_state_words.release()
        self.abi.ffi.release(self._slot_state_buffer)
        self._slot_state_mm.close()

    # ---- keys ----

    def stream_key(self, leg_id: int, ssrc: int) -> bytes:
        key = self._stream_keys.get((leg_id, ssrc))
        if key is None:
            key = self._stream_keys[(leg_id, ssrc)] = self.abi.pack(
                "sft_stream_key", leg_id=leg_id, ssrc=ssrc)
        return key

    def local_key(self, local: tuple[str, int]) -> bytes:
        return self.abi.pack("sft_local_key", local_ip=ipv4_be32(local[0]),
                             local_port=be16(local[1]))

    def addr_key(self, local: tuple[str, int], remote: tuple[str, int]) -> bytes:
        return self.abi.pack("sft_addr_key", remote_ip=ipv4_be32(remote[0]),
                             local_ip=ipv4_be32(local[0]), remote_port=be16(remote[1]),
                             local_port=be16(local[1]))

    # ---- configuration ----

    def write_config(self, media_ports: tuple[int, int], layer_pause_ns: int) -> None:
        self.by_name["sft_config"].update(u32_key(0), self.abi.pack(
            "sft_config", port_min=media_ports[0], port_max=media_ports[1],
            lease_timeout_ns=self._c.SFT_LEASE_TIMEOUT_NS, layer_pause_ns=layer_pause_ns))

    # ---- legs ----

    def init_leg_state(self, leg_id: int) -> None:
        self.by_name["sft_leg_state"].update(u32_key(leg_id), self.abi.pack(
            "sft_leg_state", audio_level_fp=127 << 8))

    def write_leg(self, leg_id: int, value: Any) -> None:
        """``value``: a ``struct sft_leg`` cdata."""
        self.by_name["sft_legs"].update(u32_key(leg_id), bytes(self.abi.ffi.buffer(value)))

    def set_lease(self, leg_id: int, monotonic_ns: int) -> None:
        self.by_name["sft_leases"].update(u32_key(leg_id), _U64.pack(monotonic_ns))

    def bind_address(self, addr_key: bytes, leg_id: int) -> None:
        self.by_name["sft_leg_by_addr"].update(addr_key, u32_key(leg_id))

    def unbind_address(self, addr_key: bytes) -> None:
        self.by_name["sft_leg_by_addr"].delete(addr_key)

    def bind_local(self, local: tuple[str, int], leg_id: int) -> None:
        self.by_name["sft_leg_by_local"].update(self.local_key(local), u32_key(leg_id))

    def unbind_local(self, local: tuple[str, int]) -> None:
        self.by_name["sft_leg_by_local"].delete(self.local_key(local))

    def delete_leg(self, leg_id: int) -> None:
        """Every entry keyed by the leg (its streams' receive state included);
        deleting a missing one is fine."""
        key = u32_key(leg_id)
        self.delete_fanout(leg_id)
        for stale, _state in self.by_name["sft_stream_state"].lookup_all():
            if self.abi.unpack("sft_stream_key", stale).leg_id == leg_id:
                self.by_name["sft_stream_state"].delete(stale)
        for name in ("sft_legs", "sft_leases", "sft_leg_state"):
            self.by_name[name].delete(key)

    # ---- publisher streams ----

    def write_stream(self, leg_id: int, ssrc: int, ks_base: int, ks_size: int,
                     kind: StreamKind, layer: int | None) -> None:
        self.by_name["sft_streams"].update(self.stream_key(leg_id, ssrc), self.abi.pack(
            "sft_stream", ks_base=ks_base, ks_size=ks_size, kind=int(kind),
            layer=self._c.SFT_LAYER_UNKNOWN if layer is None else layer))

    def delete_stream(self, leg_id: int, ssrc: int) -> None:
        key = self.stream_key(leg_id, ssrc)
        del self._stream_keys[(leg_id, ssrc)]
        self.by_name["sft_streams"].delete(key)

    def stream_state(self, leg_id: int, ssrc: int) -> Any | None:
        """The stream's ``struct sft_stream_state`` (kernel-owned), or None before
        its first authentic packet."""
        raw = self.by_name["sft_stream_state"].lookup(self.stream_key(leg_id, ssrc))
        return None if raw is None else self.abi.unpack("sft_stream_state", raw)

    def stream_states(self) -> Iterator[tuple[Any, Any]]:
        """(``sft_stream_key``, ``sft_stream_state``) of every stream, read in one
        syscall per few thousand; each pair is valid until the next is taken."""
        ffi = self.abi.ffi
        for keys, values, count in self.by_name["sft_stream_state"].lookup_batches():
            key_array = ffi.cast("struct sft_stream_key *", ffi.from_buffer(keys))
            state_array = ffi.cast("struct sft_stream_state *", ffi.from_buffer(values))
            for i in range(count):
                yield key_array[i], state_array[i]

    # ---- slots ----

    def init_slot_state(self, slot_id: int, next_index: int) -> None:
        self.by_name["sft_slot_state"].update(u32_key(slot_id), self.abi.pack(
            "sft_slot_state", next_index=next_index))

    def write_slot(self, slot_id: int, **fields: int) -> None:
        self.by_name["sft_slots"].update(u32_key(slot_id), self.abi.pack("sft_slot", **fields))

    def clear_slot(self, slot_id: int) -> None:
        self.by_name["sft_slots"].update(u32_key(slot_id), bytes(self.abi.sizeof("sft_slot")))

    def slot_next_index(self, slot_id: int) -> int:
        """The SRTP index the slot's next copy takes (kernel-owned, mmapped)."""
        return int(self._slot_state_words[slot_id * self._slot_stride_words
                                          + self._next_index_word])

    def slot_packets(self, slot_id: int) -> int:
        return int(self._slot_states[slot_id].packets)

    def slot_state(self, slot_id: int) -> Any:
        """The slot's live ``struct sft_slot_state`` in the mmapped map."""
        return self._slot_states[slot_id]

    def write_fanout(self, publisher: int, slot_ids: Sequence[int]) -> None:
        value = self.abi.new("sft_fanout", count=len(slot_ids))
        value.slot_ids[0:len(slot_ids)] = list(slot_ids)
        self.by_name["sft_fanout"].update(u32_key(publisher), bytes(self.abi.ffi.buffer(value)))

    def delete_fanout(self, publisher: int) -> None:
        self.by_name["sft_fanout"].delete(u32_key(publisher))

    # ---- counters and levels ----

    def sum_percpu(self, map_name: str, key: bytes) -> int:
        return sum(_U64.unpack(v)[0] for v in self.by_name[map_name].lookup_percpu(key))

    def counters(self) -> dict[Counter, int]:
        return {c: self.sum_percpu("sft_counters", u32_key(c.value)) for c in Counter}

    def kernel_counter(self, name: str) -> int:
        """One detail counter (``enum sft_kcounter``) by name without the prefix."""
        return self.sum_percpu("sft_kcounters", u32_key(getattr(self._c, f"SFT_K_{name}")))

    def kernel_counters(self) -> dict[str, int]:
        """Detail counters (``enum sft_kcounter``), by name without the prefix."""
        return {name.removeprefix("SFT_K_"): self.sum_percpu("sft_kcounters", u32_key(value))
                for name, value in self.abi.enum_members("sft_kcounter").items()
                if name != "SFT_K_MAX"}

    def audio_levels(self) -> dict[int, float]:
        """Each leg's smoothed audio level (``sft_leg_state``), in one syscall for all."""
        levels = {}
        for key, raw in self.by_name["sft_leg_state"].lookup_all():
            state = self.abi.unpack("sft_leg_state", raw)
            levels[_U32.unpack(key)[0]] = state.audio_level_fp / 256.0
        return levels

    def reset_conference(self, conference_id: int) -> None:
        self.by_name["sft_conf_packets"].delete(u32_key(conference_id))

    def conference_packets(self) -> dict[int, int]:
        m = self.by_name["sft_conf_packets"]
        return {_U32.unpack(key)[0]: self.sum_percpu("sft_conf_packets", key)
                for key in m.keys()}
