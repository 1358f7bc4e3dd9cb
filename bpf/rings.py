"""Keystream rings: which entries of the shared ``sft_keystream`` map belong to
which publisher stream (rx) or subscriber slot (tx), and how many a leg takes.

Each ring is a power-of-two range of entries, aligned to its size, so the
kernel finds an index's entry with a mask (``sft_keystream_for``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import abi as abi_mod
from .errors import KernelDataPlaneError
from .srtp import SrtpSession

# Opus packets stay far below; video entries take SFT_KEYSTREAM_BYTES (sft_abi.h)
AUDIO_KEYSTREAM_BYTES = 512


@dataclass
class KeystreamRing:
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
    # the keystream fill's request for this ring, built once (bpf/keystream.py)
    fill_request: Any = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def ahead(self) -> int:
        return self.size - self.behind

    @functools.cached_property
    def top_up_floor(self) -> int:
        """Entries ahead of the reader at or below which a periodic top-up writes:
        a quarter of ``ahead`` used, so each write is a batch while at least 3/4
        of the headroom stays."""
        return self.ahead - max(1, self.ahead // 4)

    def fill_range(self, start: int, end: int) -> range:
        """Indices still to write so that [start, end) is covered."""
        fresh = self.filled_until < 0 or not start <= self.filled_until < start + self.size
        first = start if fresh else self.filled_until
        return range(first, max(first, end))


# (ring, first SRTP index, count): one run of entries to write
KeystreamRun = tuple[KeystreamRing, int, int]


class RingAllocator:
    """Power-of-two ranges of keystream entries."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._next = 0
        self._free: dict[int, list[int]] = {}

    @property
    def high_water(self) -> int:
        """End of the highest range ever handed out."""
        return self._next

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
    footprint = RingAllocator(1 << 30)
    for size in sizes:
        footprint.alloc(size)
    largest = max(sizes, default=1)
    return -(-footprint.high_water // largest) * largest
