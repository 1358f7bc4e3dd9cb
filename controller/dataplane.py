"""The data-plane contract: what the controller asks of whatever moves media.

Two implementations exist: ``controller.userspace.UserspaceDataPlane`` (Python,
pylibsrtp; the reference) and ``bpf.dataplane.KernelDataPlane`` (eBPF on the
host NIC). Both take the same verbs; neither imports the conference model.

Vocabulary (see ``controller.model`` for the whole of it):
  leg        one ICE/DTLS-SRTP connection, one per participant, by ``leg_id``;
  publisher  a leg whose RTP is forwarded (audio SSRC, video SSRCs by layer);
  slot       one sendonly m-line of a subscriber leg, with the SSRC the SFT
             chose for it; ``set_slot`` points a slot at a publisher or at
             nothing. The controller only points slots at publishers that the
             subscriber and publisher have mutually authorised, so an unset
             slot is the data plane's whole isolation story.

Per-packet work belongs to the data plane: SRTP unprotect once per publisher
packet, the SSRC/sequence/timestamp rewrite onto each slot with CC=1 and the
slot's CSRC, SRTP protect with the subscriber leg's keys, send. Video slots
switch source (publisher or layer) only on a keyframe. Audio levels are read
from the header extension and smoothed here; slot *selection* runs in the
controller from ``read_audio_levels``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Leg ids start at 1; ``handle_packet(UNVALIDATED_SOURCE, …)`` counts a packet
# that arrived on a leg's socket from an address ICE has not validated.
UNVALIDATED_SOURCE = 0

# A simulcast layer without media for this long counts as paused (a sender
# pauses its higher layers when its estimate drops) and slots that prefer it
# fall back to the other layer. Kept equal to SFT_LAYER_STALE_NS in
# bpf/include/sft_abi.h (a test compares the two).
LAYER_PAUSED_AFTER = 0.5  # seconds


class StreamKind(enum.IntEnum):
    AUDIO = 0
    VIDEO = 1


class Layer(enum.IntEnum):
    """Simulcast layer of a video stream, learned from RID ``l``/``h``."""

    LOW = 0
    HIGH = 1


class Counter(enum.IntEnum):
    """Data-plane counters. Kept identical to ``enum sft_counter`` in
    ``bpf/include/sft_abi.h`` (a test compares the two)."""

    RX_PACKETS = 0  # media packets received from legs
    RX_BYTES = 1
    TX_PACKETS = 2  # packets sent to subscribers
    TX_BYTES = 3
    DROP_AUTH = 4  # SRTP authentication failed
    DROP_REPLAY = 5  # SRTP replay window rejected it
    DROP_UNKNOWN_LEG = 6  # from an address no live leg owns
    DROP_MALFORMED = 7  # not parseable RTP
    DROP_NO_ROUTE = 8  # valid, but no slot subscribes to it
    DROP_PADDING = 9  # padding-only packet
    # video before its layer is known or before a keyframe, keystream not there yet
    DROP_NOT_READY = 10
    DROP_SSRC_LIMIT = 11  # a new SSRC past MAX_SSRCS_PER_LEG: no state is made for it
    DROP_LEASE_EXPIRED = 12  # kernel: the controller stopped renewing the leg's lease
    DROP_LEG_REPLACED = 13  # kernel: the leg changed hands while the packet was read
    DROP_ADJUST_FAILED = 14  # kernel: the packet could not be grown for the CSRC
    DROP_UNKNOWN_SSRC = 15  # an SSRC the leg neither declared nor named by a RID
    # a copy older than its slot's switch to the source, or moved onto a number the slot
    # sent by a padding packet's shift: sent, it would reuse an SRTP index
    DROP_STALE = 16


# SSRCs one leg may publish: 1 audio + simulcast layers + RTX, with room to spare
# (SFT_MAX_SSRCS_PER_LEG in bpf/include/sft_abi.h; a test compares the two).
MAX_SSRCS_PER_LEG = 8


SRTP_AES_CM_128_HMAC_SHA1_80 = "SRTP_AES128_CM_SHA1_80"
SRTP_AEAD_AES_128_GCM = "SRTP_AEAD_AES_128_GCM"
SRTP_AEAD_AES_256_GCM = "SRTP_AEAD_AES_256_GCM"


@dataclass(frozen=True)
class SrtpKeys:
    """Keys exported from one leg's DTLS handshake (RFC 5764).

    ``rx`` is master key || master salt the client protects with; ``tx`` is
    what the SFT protects toward the client. ``profile`` is the OpenSSL name.
    """

    profile: str
    rx: bytes
    tx: bytes


@dataclass(frozen=True)
class ExtensionIds:
    """RTP header-extension ids negotiated for a leg (0 = not negotiated)."""

    audio_level: int = 1
    rid: int = 4
    repaired_rid: int = 5
    frame_descriptor: int = 11
    transport_cc: int = 3  # transport-wide sequence number (controller/twcc.py)


@dataclass(frozen=True)
class LegSpec:
    leg_id: int
    conference_id: int  # small integer, for per-conference counters
    local_addr: tuple[str, int]  # our socket (the host candidate's real address)
    remote_addr: tuple[str, int]  # ICE-validated peer address
    srtp: SrtpKeys
    audio_slot_ssrcs: tuple[int, ...]  # SFT-chosen SSRC of each audio slot
    video_slot_ssrcs: tuple[int, ...]
    extensions: ExtensionIds = field(default_factory=ExtensionIds)
    # The socket the leg's ICE pair uses; the userspace plane sends through it.
    transport: asyncio.DatagramTransport | None = None


@dataclass(frozen=True)
class SlotSource:
    """What a slot forwards: ``publisher``'s stream of ``kind``, with ``csrc``
    written as the single CSRC. ``layer`` is the preferred video layer; a
    publisher that sends only one layer is forwarded at the layer it has."""

    publisher: int
    csrc: int
    layer: Layer = Layer.HIGH


@dataclass(frozen=True)
class ReceiveStats:
    """RFC 3550 receive statistics of one publisher stream, for receiver reports."""

    received: int  # authentic packets
    first_seq: int  # extended sequence number (SRTP index) of the first one
    highest_seq: int  # extended highest sequence number
    jitter: int  # interarrival jitter, RTP timestamp units


@dataclass(frozen=True)
class LegMedia:
    """One leg's media so far (totals since ``add_leg``), for the watch that finds
    legs whose media goes nowhere (``controller.media_watch``)."""

    received: dict[StreamKind, int]  # authentic media packets from the leg, by kind
    stranded: int  # media from the leg that reached user space and was dropped there
    slot_packets: tuple[int, ...]  # packets sent on each slot, audio slots then video
    interface: str  # the interface its media takes ("any" on the userspace plane)


# Audio slots in every participant's offer (the loudest speakers), a fact the
# SDP and every plane's sizing share.
AUDIO_SLOTS = 5

# Video slots of the participant that capacity figures count in
# (sft_capacity_participants_remaining, the kernel plane's keystream sizing).
CAPACITY_VSTREAMS = 9


class DataPlaneUnavailable(RuntimeError):
    """This data plane cannot run here; ``str()`` says why and what to do."""


class DataPlane(Protocol):
    name: str  # "userspace" | "kernel"

    @property
    def srtp_profiles(self) -> tuple[str, ...]:
        """What it can protect/unprotect, preferred first."""

    def add_leg(self, spec: LegSpec) -> None:
        """Start forwarding for a leg whose ICE and DTLS are done."""

    def update_leg_address(self, leg_id: int, remote_addr: tuple[str, int],
                           transport: asyncio.DatagramTransport | None = None) -> None:
        """The leg's ICE pair changed (ICE restart): send there from now on."""

    def remove_leg(self, leg_id: int) -> None:
        """Stop everything to and from the leg; slots pointing at it go empty."""

    def set_publisher(self, leg_id: int, audio_ssrcs: tuple[int, ...],
                      video_ssrcs: dict[int, Layer]) -> None:
        """SSRCs the leg declared in its answer. Video SSRCs that only appear
        with a RID are learned by the data plane itself."""

    def set_slot(self, subscriber: int, kind: StreamKind, index: int,
                 source: SlotSource | None) -> None:
        """Point one slot of ``subscriber`` at a publisher's stream, or clear it."""

    def handle_packet(self, leg_id: int, data: bytes) -> None:
        """An SRTP packet (not SRTCP) that reached user space on the leg's socket."""

    def can_admit(self, legs: Sequence[tuple[int, int]]) -> str | None:
        """Why the data plane could not take legs of (audio slots, video slots)
        besides those it has, or None if it can (checked before a join is answered)."""

    def remaining_legs(self, audio_slots: int, video_slots: int) -> int | None:
        """About how many more such legs fit, or None for no limit of its own."""

    def read_audio_levels(self) -> dict[int, float]:
        """Smoothed audio level (−dBov, 0 loudest … 127 silent) per publisher leg."""

    def read_receive_stats(self, leg_id: int, ssrc: int) -> ReceiveStats | None:
        """What arrived of one publisher SSRC so far (None: nothing authentic yet)."""

    def read_transport_arrivals(self) -> dict[int, list[tuple[int, int]]]:
        """Per leg, the (transport-wide sequence number, arrival in CLOCK_MONOTONIC ns)
        of each authentic packet carrying the transport-cc extension since the last
        call, in arrival order. Only legs with records appear."""

    def read_counters(self) -> dict[Counter, int]:
        """Totals since start, summed over CPUs."""

    def read_conference_packets(self) -> dict[int, int]:
        """Forwarded packets per live conference_id."""

    def reset_conference(self, conference_id: int) -> None:
        """The conference ended: forget its packet count (its id may be reused)."""

    def read_detail_counters(self) -> dict[str, int]:
        """Implementation-specific counters by name (e.g. kernel drop reasons,
        media packets that reached user space on the kernel path)."""

    def read_leg_media(self) -> dict[int, LegMedia]:
        """Every live leg's media totals."""

    def read_userspace_media_drops(self) -> dict[str, int]:
        """Media dropped in user space although this plane should have handled it,
        by reason (``sft_userspace_media_dropped_total``; none on the userspace
        plane, whose drops are ``read_counters``' reasons)."""

    def legs_by_interface(self) -> dict[str, int]:
        """Live legs by the interface their media path takes ("any" where the plane
        serves every path alike, as the userspace plane's sockets do)."""

    def close(self) -> None:
        """Detach and free everything this data plane created."""
