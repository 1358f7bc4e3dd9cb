"""The kernel plane's keystream map is sized per participant by sftd, from the ring
allocator's own arithmetic: the participants it is sized for really fit."""

from __future__ import annotations

import pytest

from sftd.bpf import abi as abi_mod
from sftd.bpf import sizing
from sftd.bpf.dataplane import KernelDataPlaneError, leg_ring_sizes
from sftd.bpf.rings import RingAllocator
from sftd.controller.dataplane import AUDIO_SLOTS, CAPACITY_VSTREAMS


def _participant_rings() -> list[int]:
    return leg_ring_sizes(AUDIO_SLOTS, CAPACITY_VSTREAMS, sizing.KEYSTREAM_AUDIO_RING,
                          sizing.KEYSTREAM_VIDEO_RING, sizing.KEYSTREAM_INGRESS_RING_FACTOR)


@pytest.mark.parametrize("participants", [1, 50, 128, 300])
def test_the_map_holds_the_participants_it_is_sized_for(participants: int) -> None:
    """Every ring of every participant allocates, alignment holes included."""
    rings = RingAllocator(sizing.keystream_entries(participants))
    for _ in range(participants):
        for size in _participant_rings():
            rings.alloc(size)


def test_the_per_participant_figure_counts_alignment_holes() -> None:
    """Rings start at a multiple of their size: 5·16 + 9·32 slot entries and 64 +
    2·128 ingress ones (688) take 768 (docs/limits.md); one more participant than
    the figure allows would not fit."""
    per_participant = sizing.keystream_entries_per_participant()
    assert sum(_participant_rings()) == 688
    assert per_participant == 768
    rings = RingAllocator(per_participant * 10 - 1)
    with pytest.raises(KernelDataPlaneError):
        for _ in range(10):
            for size in _participant_rings():
                rings.alloc(size)


def test_keystream_memory_per_participant() -> None:
    """768 entries of 1472 bytes: 1.08 MiB a participant (the 80 entries of
    alignment holes are what takes it past 1 MiB)."""
    entry = abi_mod.load().sizeof("sft_keystream")
    assert sizing.keystream_entries_per_participant() * entry < 1.1 * (1 << 20)
    for participants in (1, 50, 128, 1000):
        entries = sizing.keystream_entries(participants)
        wanted = participants * sizing.keystream_entries_per_participant()
        # rounded up to 1024 entries, and never below the 16384 the tests use
        assert wanted <= entries < max(wanted, 16384) + 1024
    assert sizing.keystream_entries(0) == sizing.keystream_entries(128)  # the default
