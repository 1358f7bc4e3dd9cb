"""The controller's own record of what it wrote into the kernel's maps, per leg
and per slot: what the maps hold, plus what only the controller needs (SRTP
sessions, keystream rings, the slot's current source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sftd.controller.dataplane import LegSpec, SlotSource, StreamKind

from .rings import KeystreamRing
from .srtp import SrtpSession


class KernelStreamRecord(NamedTuple):
    """A stream a leg publishes: its kind, simulcast layer (None: learned by the
    kernel from the RID) and rx keystream ring."""

    kind: StreamKind
    layer: int | None
    ring: KeystreamRing


@dataclass
class KernelLegRecord:
    spec: LegSpec
    rx: SrtpSession
    tx: SrtpSession
    value: Any  # the struct sft_leg cdata written to sft_legs
    addr_key: bytes
    twcc_ring: int
    audio_slots: list[int] = field(default_factory=list)
    video_slots: list[int] = field(default_factory=list)
    streams: dict[int, KernelStreamRecord] = field(default_factory=dict)  # by SSRC

    @property
    def leg_id(self) -> int:
        return self.spec.leg_id


@dataclass
class KernelSlotRecord:
    slot_id: int
    subscriber: int
    kind: StreamKind
    ssrc: int
    ring: KeystreamRing
    source: SlotSource | None = None
    generation: int = 0
    layer_move: bool = False  # the last change moved within one publisher's layers
