"""Transport-wide arrival records: the mmapped ``sft_twcc_rings``, one ring per
leg, read from ``tail`` to the kernel's ``head`` (layout in sft_abi.h)."""

from __future__ import annotations

from typing import Any

from . import abi as abi_mod
from . import libbpf


class TwccRings:
    def __init__(self, rings_map: libbpf.Map, abi: abi_mod.Abi) -> None:
        ffi = abi.ffi
        if rings_map.entry_stride != abi.sizeof("sft_twcc_ring"):
            raise ValueError("sft_twcc_rings entries differ from sft_abi.h: make -C bpf")
        self._records = abi.consts.SFT_TWCC_RECORDS
        self._lap_valid = abi.consts.SFT_TWCC_LAP_VALID
        # a record is written as one 8-byte store: read it as one, then take it apart
        self._seq_shift = 8 * ffi.offsetof("struct sft_twcc_record", "seq")
        self._lap_shift = 8 * ffi.offsetof("struct sft_twcc_record", "lap")
        self._arrival_shift = 8 * ffi.offsetof("struct sft_twcc_record", "arrival_us")
        self._ffi = ffi
        self._mm = rings_map.mmap()
        self._buffer = ffi.from_buffer(self._mm)
        self._rings: Any = ffi.cast("struct sft_twcc_ring *", self._buffer)
        self._stalled: dict[int, int] = {}  # ring -> position found unwritten last time

    def _words(self, ring: int) -> Any:
        return self._ffi.cast("uint64_t *", self._ffi.addressof(self._rings[ring], "records"))

    def reset(self, ring: int) -> None:
        """Empty the ring for a new leg (before the kernel can see it)."""
        entry = self._rings[ring]
        self._ffi.memmove(self._ffi.addressof(entry, "records"),
                          bytes(self._ffi.sizeof(entry.records)), self._ffi.sizeof(entry.records))
        entry.head = entry.tail = 0
        self._stalled.pop(ring, None)

    def read(self, ring: int, now_us: int) -> list[tuple[int, int]]:
        """(sequence number, arrival in monotonic ns) of the records written since
        the last read. A reserved record not yet written ends the batch, unless it
        was already missing at the last read (then it is skipped)."""
        entry = self._rings[ring]
        tail, head = int(entry.tail), int(entry.head)
        if head <= tail:
            return []
        tail = max(tail, head - self._records)  # racing writers overshot a full ring
        words = self._words(ring)
        mask = self._records - 1
        out: list[tuple[int, int]] = []
        position = tail
        while position < head:
            word = int(words[position & mask])
            expected = self._lap_valid | ((position // self._records) & 0x7FFF)
            if (word >> self._lap_shift) & 0xFFFF != expected:
                break
            arrival = (word >> self._arrival_shift) & 0xFFFFFFFF
            arrival_us = now_us - ((now_us - arrival) & 0xFFFFFFFF)
            out.append(((word >> self._seq_shift) & 0xFFFF, arrival_us * 1000))
            position += 1
        if position == head:
            entry.tail = head
        elif self._stalled.pop(ring, None) == position:
            entry.tail = position + 1  # unwritten for a whole round: skip it
        else:
            self._stalled[ring] = position
            entry.tail = position
        return out

    def close(self) -> None:
        self._rings = None
        self._ffi.release(self._buffer)
        self._mm.close()
