"""The kernel plane's keystream map is sized per participant by sftd: every ring a
participant needs must fit, within performance.md's 1 MiB of map memory each."""

from __future__ import annotations

from bpf import abi as abi_mod
from signalling import cli

AUDIO_SLOTS, VIDEO_SLOTS = 5, 9  # Wire's audio slots, vstreams at most
VIDEO_LAYERS = 2  # simulcast l/h


def _entries_one_participant_needs() -> int:
    slots = AUDIO_SLOTS * cli.KEYSTREAM_AUDIO_RING + VIDEO_SLOTS * cli.KEYSTREAM_VIDEO_RING
    ingress = cli.KEYSTREAM_INGRESS_RING_FACTOR * (
        cli.KEYSTREAM_AUDIO_RING + VIDEO_LAYERS * cli.KEYSTREAM_VIDEO_RING)
    return slots + ingress


def test_every_ring_of_a_participant_fits_its_share() -> None:
    assert _entries_one_participant_needs() <= cli.KEYSTREAM_ENTRIES_PER_PARTICIPANT


def test_keystream_memory_stays_under_a_mebibyte_per_participant() -> None:
    entry = abi_mod.load().sizeof("sft_keystream")
    assert cli.KEYSTREAM_ENTRIES_PER_PARTICIPANT * entry < 1 << 20
    for participants in (1, 50, 128, 1000):
        entries = cli.keystream_entries(participants)
        assert entries >= participants * cli.KEYSTREAM_ENTRIES_PER_PARTICIPANT
        # rounded up to 1024 entries, and never below the 16384 the tests use
        assert entries < max(participants * cli.KEYSTREAM_ENTRIES_PER_PARTICIPANT, 16384) + 1024
    assert cli.keystream_entries(0) == cli.keystream_entries(128)  # the default
