"""How sftd sizes the kernel plane's keystream rings and map (the figures
docs/limits.md explains)."""

from __future__ import annotations

from sftd.controller.dataplane import AUDIO_SLOTS, CAPACITY_VSTREAMS

from .dataplane import leg_keystream_entries, leg_ring_sizes

# Keystream rings per stream/slot, topped up every 50 ms on their own thread:
# 16 audio packets (320 ms at 50/s) and 32 video packets (a keyframe burst).
KEYSTREAM_AUDIO_RING = 16
KEYSTREAM_VIDEO_RING = 32
KEYSTREAM_INGRESS_RING_FACTOR = 4  # a publisher's rings: 64 audio, 128 per video layer
DEFAULT_PARTICIPANTS = 128  # what the map is sized for without --max-participants


def keystream_entries_per_participant() -> int:
    """Map entries a participant with CAPACITY_VSTREAMS video slots takes, as the
    kernel plane's ring allocator places its rings (768 with the sizes above)."""
    return leg_keystream_entries(leg_ring_sizes(
        AUDIO_SLOTS, CAPACITY_VSTREAMS, KEYSTREAM_AUDIO_RING, KEYSTREAM_VIDEO_RING,
        KEYSTREAM_INGRESS_RING_FACTOR))


def keystream_entries(max_participants: int) -> int:
    """Keystream map size (1.5 KB per entry): for --max-participants if set, else
    for DEFAULT_PARTICIPANTS."""
    wanted = (max_participants or DEFAULT_PARTICIPANTS) * keystream_entries_per_participant()
    return max(1 << 14, -(-wanted // 1024) * 1024)
