"""The conference model.

Vocabulary, used everywhere in this project:
  Conference   one call on this SFT, keyed by the Wire conversation id (convid);
  Participant  one client device in a conference, keyed "<convid>.<userid>.<clientid>",
               in join order; the first is the key generator;
  Leg          the participant's ICE/DTLS-SRTP connection (controller.leg);
  Stream       what a participant publishes: one audio SSRC, video SSRCs per layer;
  Slot         one sendonly m-line of a subscriber: 5 audio, ``vstreams`` video;
  Subscription a slot pointed at a publisher's stream (controller.dataplane.set_slot).
Publisher and subscriber are roles of a participant, not classes.

Lifecycle of a participant: ``offered`` (SETUP sent, waiting for the answer,
10 s) → ``connecting`` (ICE/DTLS) → ``connected`` (in CONFPART, PINGs every
5 s, ended after 20 s without) → ``ended``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from .dataplane import ExtensionIds, Layer, SlotSource
from .leg import ParticipantLeg
from .rtcp import ReportState

SILENCE_LEVEL = 110  # smoothed −dBov at or above which a speaker slot is freed


class ParticipantKey(NamedTuple):
    """Wire's "<convid>.<userid>.<clientid>", kept as a tuple: ids may contain dots."""

    convid: str
    userid: str
    clientid: str

    def __str__(self) -> str:
        return f"{self.convid}.{self.userid}.{self.clientid}"


@dataclass
class StreamRequest:
    """One CONFSTREAMS entry: a wanted person and quality (0 any, 1 low, 2 high)."""

    userid: str
    clientid: str
    quality: int


@dataclass(eq=False)
class Participant:
    key: ParticipantKey
    convid: str
    userid: str
    clientid: str
    sessid: str
    vstreams: int
    leg: ParticipantLeg
    join_index: int
    ssrc_video: int  # synthetic, unique in the conference; CSRC of its video
    audio_slot_ssrcs: tuple[int, ...]
    video_slot_ssrcs: tuple[int, ...]
    slot_labels: tuple[str, ...] = ()  # stream label of each slot, audio then video
    simulcast: bool = True  # offer simulcast receive (its engine handles it)
    sft_url_given: bool = False
    state: str = "offered"
    ssrc_audio: int = 0
    video_ssrcs: list[int] = field(default_factory=list)
    authorized: set[ParticipantKey] = field(default_factory=set)  # whom this one authorised
    stream_mode: str | None = None  # None until the first CONFSTREAMS
    stream_requests: list[StreamRequest] = field(default_factory=list)
    muted: bool = False
    props: dict[str, str] | None = None  # latest PROPSYNC (or answer) props, relayed
    restarting: bool = False  # an ICE-restart offer awaits its answer
    sdp_session_id: int = field(default_factory=lambda: random.randrange(1 << 62))
    sdp_version: int = 1
    extensions: ExtensionIds = field(default_factory=ExtensionIds)
    last_ping: float = field(default_factory=time.monotonic)
    keyframe_requested_at: float = 0.0  # monotonic time of the last FIR to it
    keyframe_request_pending: bool = False  # a FIR waits for the interval to end
    report_state: dict[int, ReportState] = field(default_factory=dict)  # by publisher SSRC
    offered_at: float = field(default_factory=time.monotonic)
    # What the data plane currently has for this subscriber's slots.
    audio_sources: list[SlotSource | None] = field(default_factory=list)
    video_sources: list[SlotSource | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.audio_sources = [None] * len(self.audio_slot_ssrcs)
        self.video_sources = [None] * len(self.video_slot_ssrcs)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def wants_layer(self, request: StreamRequest) -> Layer:
        return Layer.LOW if request.quality == 1 else Layer.HIGH


@dataclass(eq=False)
class Conference:
    convid: str
    conference_id: int  # small integer for the data plane's counters
    participants: list[Participant] = field(default_factory=list)  # join order
    speakers: list[ParticipantKey | None] = field(
        default_factory=lambda: [None] * 4)  # audio slots 1–4
    next_join_index: int = 0
    # Whether a CONFPART already told someone whether to start: only the first
    # CONFPART of a new conference may say should_start.
    started: bool = False

    def connected(self) -> list[Participant]:
        return [p for p in self.participants if p.connected]

    def move_to_end(self, participant: Participant) -> None:
        """A rejoin (CONFCONN update:true) sends the participant to the end of
        the join order, as Wire's sftd does: it cannot be the key generator
        while others are there."""
        self.participants.remove(participant)
        self.participants.append(participant)
        participant.join_index = self.next_join_index
        self.next_join_index += 1

    @property
    def key_generator(self) -> Participant | None:
        live = self.connected()
        return live[0] if live else None

    def video_by_level(self) -> bool:
        """Whether a subscriber picks its video by audio level (CONFSTREAMS "level")."""
        return any(p.stream_mode == "level" for p in self.participants)

    @staticmethod
    def mutual(a: Participant, b: Participant) -> bool:
        return b.key in a.authorized and a.key in b.authorized


def update_speakers(conference: Conference, levels: dict[ParticipantKey, float]) -> None:
    """Audio slots 1–4 (docs/protocol.md §4): a speaker keeps its slot until it is
    silent (smoothed level ≥ 110); a louder new speaker takes the first slot
    whose occupant is quieter. ``levels`` maps participant key → smoothed −dBov."""
    key_generator = conference.key_generator
    live = {p.key for p in conference.connected()}
    speakers = conference.speakers
    for i, key in enumerate(speakers):
        if key is not None and (key not in live or levels.get(key, 127) >= SILENCE_LEVEL
                                or (key_generator is not None and key == key_generator.key)):
            speakers[i] = None
    candidates = sorted(
        (levels.get(p.key, 127), p.join_index, p.key) for p in conference.connected()
        if p.key not in speakers and levels.get(p.key, 127) < SILENCE_LEVEL
        and (key_generator is None or p.key != key_generator.key))
    for level, _, key in candidates:
        for i, occupant in enumerate(speakers):
            if occupant is None or levels.get(occupant, 127) > level:
                speakers[i] = key
                break
