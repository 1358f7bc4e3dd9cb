"""WireClient: one participant of a Wire conference call through an SFT, on aiortc.

Lifecycle (docs/protocol.md §2–§4)::

    client = WireClient("http://127.0.0.1:8585", convid)
    await client.join()        # CONFCONN -> SETUP offer -> answer -> CONFCONN ack
    ...                        # data channel: CONFPART <-> CONFPART resp, CONFSTREAMS, PING
    await client.hangup()      # HANGUP over the data channel, then close

What it publishes: a tone on mid ``audio`` (:class:`~sftclient.media.ToneTrack`,
loudness settable with :meth:`WireClient.set_amplitude`) and a moving VP8
pattern on mid ``video``, with RID ``h`` in the rtp-stream-id extension as Wire
clients send it (sftd forwards no video before it has seen a RID).

What it records (:class:`Received`): per sender, resolved from each packet's
CSRC through the latest CONFPART (``ssrc_audio``/``ssrc_video``), decoded audio
and video frames and packets; CSRCs no CONFPART explains; which CSRCs arrive on
which slot mid; every data-channel message; join timings.

aiortc internals used (aiortc pinned to 1.16.0 in pyproject.toml):
``RTCRtpReceiver._handle_rtp_packet`` (wrapped per receiver to read CSRCs; aiortc
1.16 does not implement ``getContributingSources``), the receiver's private
decoder queue and timestamp mapper (to tie decoded frames to the CSRC of their
packets), the sender's private header-extension map (to write the RID), and
``transceiver._headerExtensions`` (to answer with the RID extension), and the
DTLS transport's RTP router (to deliver RFC 5104 FIRs, see ``_route_fir_by_fci``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import queue
import secrets
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceServer, RTCIceTransportPolicy
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtpPacket,
)

from sftd import econn

from . import sdp as sdpmod
from .media import PatternTrack, ToneTrack

log = logging.getLogger("sftd.sftclient")

TOOL = "sft-probe"
TOOLVER = "0.1.0"
DATA_CHANNEL_LABEL = "calling-3.0"
RID_URI = sdpmod.RID_URI


class JoinError(Exception):
    """The SFT answered the join with an HTTP error (``status``, ``text``)."""

    def __init__(self, status: int, text: str, stage: str = "CONFCONN") -> None:
        super().__init__(f"{stage}: HTTP {status}: {text.strip()[:300]}")
        self.status = status
        self.text = text
        self.stage = stage


class JoinRejected(Exception):
    """The SFT answered with a CONFCONN whose ``status`` is not 0."""

    def __init__(self, status: int, message: econn.Message) -> None:
        super().__init__(f"CONFCONN rejected with status {status}")
        self.status = status
        self.message = message


@dataclass(frozen=True, order=True)
class Person:
    userid: str
    clientid: str

    def __str__(self) -> str:
        return f"{self.userid}/{self.clientid}"


@dataclass
class PersonStats:
    """What arrived from one sender."""

    audio_frames: int = 0  # decoded
    video_frames: int = 0  # decoded
    audio_packets: int = 0
    video_packets: int = 0
    first_audio: float | None = None  # time.monotonic() of the first decoded frame
    first_video: float | None = None
    last_audio: float | None = None  # of the last packet
    last_video: float | None = None
    audio_mids: set[str] = field(default_factory=set)
    video_mids: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {"audio_frames": self.audio_frames, "video_frames": self.video_frames,
                "audio_packets": self.audio_packets, "video_packets": self.video_packets,
                "audio_mids": sorted(self.audio_mids), "video_mids": sorted(self.video_mids)}


@dataclass
class Received:
    """Everything the client observed since it joined."""

    by_person: dict[Person, PersonStats] = field(default_factory=dict)
    # (kind, csrc) -> packets whose CSRC no CONFPART (the latest one) explained
    unknown_csrc_packets: Counter[tuple[str, int]] = field(default_factory=Counter)
    unknown_frames: Counter[str] = field(default_factory=Counter)  # kind -> decoded frames
    # (kind, csrc) -> all packets, explained or not
    csrc_packets: Counter[tuple[str, int]] = field(default_factory=Counter)
    no_csrc_packets: Counter[str] = field(default_factory=Counter)  # mid -> packets with CC=0
    # mid -> packets missing in the slot's sequence (the SFT promises continuous
    # sequence numbers per slot; aiortc has no loss recovery through an SFT)
    seq_gaps: Counter[str] = field(default_factory=Counter)
    seq_reordered: Counter[str] = field(default_factory=Counter)  # mid -> late/duplicate
    # mid -> csrc -> monotonic time of the last packet
    slot_last_seen: dict[str, dict[int, float]] = field(default_factory=dict)
    messages: list[econn.Message] = field(default_factory=list)  # data channel, in order
    confpart: econn.Message | None = None  # the latest CONFPART from the SFT
    confparts: int = 0
    pongs: int = 0

    def person(self, userid: str, clientid: str | None = None) -> PersonStats:
        """Stats for one sender (by userid alone if clientid is None); empty if none."""
        for p, stats in self.by_person.items():
            if p.userid == userid and (clientid is None or p.clientid == clientid):
                return stats
        return PersonStats()


class _AddressPatch:
    """Scoped replacement of ``aioice.ice.get_host_addresses``.

    aioice never offers loopback host candidates and otherwise offers every
    interface; tests need exactly ``127.0.0.1``. The patch is held only while
    one client gathers (a per-event-loop lock serialises clients), so the
    library's behaviour outside :meth:`WireClient.join` is unchanged.
    """

    _locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
        weakref.WeakKeyDictionary())

    @classmethod
    def lock(cls) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop not in cls._locks:
            cls._locks[loop] = asyncio.Lock()
        return cls._locks[loop]

    @staticmethod
    @contextlib.contextmanager
    def addresses(addresses: list[str]) -> Iterator[None]:
        original = aioice.ice.get_host_addresses

        def patched(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

        aioice.ice.get_host_addresses = patched
        try:
            yield
        finally:
            aioice.ice.get_host_addresses = original


class _RidHeaderExtensionsMap(HeaderExtensionsMap):
    """Writes RID ``h`` on every packet of the upstream video, like Wire clients."""

    def __init__(self, rid: str = "h") -> None:
        super().__init__()
        self.rid = rid

    def set(self, values: HeaderExtensions) -> tuple[int, bytes]:
        if values.rtp_stream_id is None:
            values.rtp_stream_id = self.rid
        return super().set(values)


def _route_fir_by_fci(dtls_transport: Any) -> None:
    """Make aiortc honour RFC 5104 FIR as sftd sends it.

    A FIR's media-source field is 0 and the target SSRCs are in the FCI;
    aiortc 1.16 routes payload-specific feedback by the media-source field
    only, so it drops every FIR and a publisher whose first keyframe went out
    before anyone subscribed would never send another (its VP8 GOP is 3000
    frames). This wraps the connection's RTP router (one per DTLS transport)
    to also deliver a FIR to the senders named in its FCI.
    """
    router = dtls_transport._rtp_router
    if getattr(router, "_sftclient_fir", False):
        return
    original = router.route_rtcp

    def route_rtcp(packet: Any) -> set[Any]:
        recipients = original(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            fci = packet.fci
            for pos in range(0, len(fci) - 7, 8):
                sender = router.senders.get(int.from_bytes(fci[pos:pos + 4], "big"))
                if sender is not None:
                    recipients.add(sender)
        return recipients

    router.route_rtcp = route_rtcp
    router._sftclient_fir = True


class _TaggingQueue(queue.Queue):  # type: ignore[type-arg]
    """The receiver's decoder queue, remembering which CSRC each frame came from."""

    def __init__(self, slot: ClientSlot) -> None:
        super().__init__()
        self._slot = slot

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            _codec, encoded = item
            self._slot.tag_frame(encoded.timestamp)
        super().put(item, block, timeout)


class ClientSlot:
    """One receiving m-line (a forwarding slot, or our upstream mid)."""

    def __init__(self, client: WireClient, transceiver: RTCRtpTransceiver) -> None:
        self.client = client
        self.mid: str = transceiver.mid or ""
        self.kind: str = transceiver.kind
        self.receiver = transceiver.receiver
        self.current_csrc: int | None = None
        self.last_seq: int | None = None
        self._raw_ts_csrc: OrderedDict[int, int | None] = OrderedDict()
        self._pts_csrc: OrderedDict[int, int | None] = OrderedDict()
        self.frames = 0
        self.packets = 0
        self.task: asyncio.Task[None] | None = None

    def install(self) -> None:
        receiver = self.receiver
        original = receiver._handle_rtp_packet

        async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.on_packet(packet)
            await original(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
        receiver._RTCRtpReceiver__decoder_queue = _TaggingQueue(self)  # type: ignore[attr-defined]

    def on_packet(self, packet: RtpPacket) -> None:
        self.packets += 1
        seq = packet.sequence_number
        if self.last_seq is not None:
            step = (seq - self.last_seq) & 0xFFFF
            if 1 < step < 0x8000:  # forward jump: packets missing on this slot
                self.client.received.seq_gaps[self.mid] += step - 1
            elif step == 0 or step >= 0x8000:
                self.client.received.seq_reordered[self.mid] += 1
        if self.last_seq is None or 0 < ((seq - self.last_seq) & 0xFFFF) < 0x8000:
            self.last_seq = seq
        csrc = packet.csrc[0] if packet.csrc else None
        self.current_csrc = csrc
        self._raw_ts_csrc[packet.timestamp] = csrc
        _trim(self._raw_ts_csrc)
        self.client._on_media_packet(self.mid, self.kind, csrc)

    def tag_frame(self, mapped_ts: int) -> None:
        mapper = self.receiver._RTCRtpReceiver__timestamp_mapper  # type: ignore[attr-defined]
        raw = mapper._last
        csrc = self._raw_ts_csrc.get(raw, self.current_csrc) if raw is not None else None
        self._pts_csrc[mapped_ts] = csrc
        _trim(self._pts_csrc)

    async def consume(self) -> None:
        track = self.receiver.track
        if track is None:
            return
        while True:
            try:
                frame = await track.recv()
            except Exception:  # MediaStreamError when the track ends
                return
            self.frames += 1
            pts = frame.pts
            csrc = self._pts_csrc.get(pts, self.current_csrc) if pts is not None else None
            self.client._on_decoded_frame(self.mid, self.kind, csrc)


def _trim(d: OrderedDict[int, Any], limit: int = 256) -> None:
    while len(d) > limit:
        d.popitem(last=False)


class WireClient:
    """One Wire participant (user, client) joining one conference through an SFT.

    ``refuse``: userids this client does not authorise in its CONFPART reply
    (default: authorise everyone). ``local_addresses``: the only host
    addresses ICE gathers on (loopback allowed). ``ice_servers``: STUN/TURN
    servers (none by default); with ``relay_only`` only TURN relay candidates are
    gathered and used, as a browser with ``iceTransportPolicy: "relay"``.
    """

    def __init__(
        self,
        base_url: str,
        convid: str,
        userid: str | None = None,
        clientid: str | None = None,
        *,
        local_addresses: Iterable[str] = ("127.0.0.1",),
        refuse: Iterable[str] = (),
        authorize: Callable[[dict[str, Any]], bool] | None = None,
        amplitude: float = 0.3,
        audio: bool = True,
        video: bool = True,
        video_size: tuple[int, int] = (160, 120),
        fps: int = 15,
        vstreams: int = 9,
        confstreams_mode: str = "list",
        ping_interval: float = 5.0,
        username: str | None = None,
        credential: str | None = None,
        toolver: str = TOOLVER,
        confconn_extra: dict[str, Any] | None = None,
        ice_servers: Iterable[RTCIceServer] = (),
        relay_only: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.convid = convid
        self.userid = userid or secrets.token_hex(16)
        self.clientid = clientid or secrets.token_hex(8)
        self.sessid = secrets.token_hex(4)
        self.local_addresses = list(local_addresses)
        self.refuse = set(refuse)
        self._authorize = authorize
        self.vstreams = vstreams
        self.confstreams_mode = confstreams_mode
        self.ping_interval = ping_interval
        self.pinging = True
        self.username = username
        self.credential = credential
        self.toolver = toolver
        self.confconn_extra = dict(confconn_extra or {})
        self.ice_servers = list(ice_servers)
        self.relay_only = relay_only  # gather and use only relay candidates (TURN)

        seed = int(hashlib.sha256(self.userid.encode()).hexdigest()[:4], 16)

        def new_tracks() -> tuple[ToneTrack | None, PatternTrack | None]:
            return (ToneTrack(amplitude) if audio else None,
                    PatternTrack(*video_size, fps=fps, seed=seed) if video else None)

        self._new_tracks = new_tracks
        self.audio_track, self.video_track = new_tracks()

        self.received = Received()
        self.offer: str | None = None
        self.answer: str | None = None
        self.setup: econn.Message | None = None  # the SFT's SETUP offer message
        self.sft_url: str | None = None
        self.t_confconn: float | None = None
        self.t_setup: float | None = None  # offer received
        self.t_connected: float | None = None  # ICE+DTLS connected
        self.t_datachannel: float | None = None
        self.t_first_audio: float | None = None
        self.t_first_video: float | None = None
        self.state = "new"  # new, joining, joined, closed

        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._slots: dict[str, ClientSlot] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._audio_people: dict[int, Person] = {}
        self._video_people: dict[int, Person] = {}
        self._channel_open = asyncio.Event()
        self._confpart_event = asyncio.Event()
        self._closing = False

    # ------------------------------------------------------------------ identity
    @property
    def person(self) -> Person:
        return Person(self.userid, self.clientid)

    @property
    def join_time_video(self) -> float | None:
        """Seconds from sending CONFCONN to the first decoded video frame."""
        if self.t_confconn is None or self.t_first_video is None:
            return None
        return self.t_first_video - self.t_confconn

    @property
    def join_time_audio(self) -> float | None:
        if self.t_confconn is None or self.t_first_audio is None:
            return None
        return self.t_first_audio - self.t_confconn

    @property
    def join_url(self) -> str:
        return f"{self.base_url}/sft/{self.convid}"

    def _message(self, msg_type: str, resp: bool, **fields: Any) -> econn.Message:
        return econn.Message(type=msg_type, sessid=self.sessid, resp=resp,
                             src_userid=self.userid, src_clientid=self.clientid,
                             fields=fields)

    def confconn(self, update: bool = False) -> econn.Message:
        fields: dict[str, Any] = {
            "status": 0, "update": update, "selective_audio": True,
            "selective_video": True, "vstreams": self.vstreams, "tool": TOOL,
            "toolver": self.toolver, "ice_servers": [],
        }
        if self.username is not None:
            fields["username"] = self.username
        if self.credential is not None:
            fields["credential"] = self.credential
        fields.update(self.confconn_extra)
        msg = self._message(econn.CONFCONN, False, **fields)
        msg.dest_userid = "SFT"
        return msg

    # ------------------------------------------------------------------ join
    async def _post(self, url: str, msg: econn.Message, stage: str) -> econn.Message:
        assert self._http is not None
        async with self._http.post(url, data=msg.encode(),
                                   headers={"Content-Type": "application/json"}) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise JoinError(resp.status, text, stage)
        try:
            return econn.decode(text)
        except econn.EconnError as exc:
            raise JoinError(resp.status, f"undecodable reply ({exc}): {text}", stage) from None

    async def join(self, timeout: float = 20.0) -> None:
        """Join: returns once the SFT acknowledged our answer (media may still be
        connecting). Raises JoinError / JoinRejected / asyncio.TimeoutError."""
        if self.state != "new":
            raise RuntimeError(f"join() in state {self.state}")
        self.state = "joining"
        try:
            await asyncio.wait_for(self._join(), timeout)
        except BaseException:
            await self.close()
            raise
        self.state = "joined"

    async def _join(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.t_confconn = time.monotonic()
        reply = await self._post(self.join_url, self.confconn(), "CONFCONN")
        if reply.type == econn.CONFCONN:
            status = reply.get("status", 0)
            raise JoinRejected(status if isinstance(status, int) else -1, reply)
        if reply.type != econn.SETUP or reply.resp:
            raise JoinError(200, f"expected a SETUP offer, got {reply.to_dict()}")
        self.t_setup = time.monotonic()
        self.setup = reply
        self.offer = reply.get("sdp")
        self.sft_url = (reply.get("url") or self.base_url).rstrip("/")

        await self._negotiate(self.offer)

        ack = await self._post(f"{self.sft_url}/sft/{self.convid}", self._message(
            econn.SETUP, True, sdp=self.answer, props=self._props()), "SETUP")
        if ack.type != econn.CONFCONN or ack.get("status", 0) != 0:
            raise JoinRejected(ack.get("status", -1), ack)

    async def _negotiate(self, offer: str) -> None:
        pc = RTCPeerConnection(RTCConfiguration(
            iceServers=self.ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            iceTransportPolicy=(RTCIceTransportPolicy.RELAY if self.relay_only
                                else RTCIceTransportPolicy.ALL)))
        self.pc = pc

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self._on_datachannel(channel)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.t_connected is None:
                self.t_connected = time.monotonic()
            log.debug("%s: connection %s", self.userid[:8], pc.connectionState)

        # Our upstream: first audio and first video transceiver take mids
        # "audio"/"video" (aiortc matches remote m-lines to unassigned
        # transceivers of the same kind in order); the slots get recvonly ones.
        audio_dir = "sendrecv" if self.audio_track else "inactive"
        video_dir = "sendrecv" if self.video_track else "inactive"
        pc.addTransceiver(self.audio_track or "audio", direction=audio_dir)
        video_tr = pc.addTransceiver(self.video_track or "video", direction=video_dir)

        summary = sdpmod.summarize(offer)
        await pc.setRemoteDescription(RTCSessionDescription(
            sdp=sdpmod.munge_offer_for_aiortc(offer), type="offer"))

        # Answer with the RID extension on the upstream video and write RID "h".
        video_m = summary.by_mid(video_tr.mid or "")
        if self.video_track and video_m is not None and RID_URI in video_m.extmaps:
            exts = video_tr._headerExtensions
            if not any(e.uri == RID_URI for e in exts):
                exts.append(RTCRtpHeaderExtensionParameters(id=video_m.extmaps[RID_URI],
                                                            uri=RID_URI))
            video_tr.sender._RTCRtpSender__rtp_header_extensions_map = (  # type: ignore[attr-defined]
                _RidHeaderExtensionsMap("h"))

        _route_fir_by_fci(video_tr.sender.transport)

        for tr in pc.getTransceivers():
            if tr.mid is None:
                continue
            slot = ClientSlot(self, tr)
            slot.install()
            self._slots[slot.mid] = slot

        answer = await pc.createAnswer()
        async with _AddressPatch.lock():
            with _AddressPatch.addresses(self.local_addresses):
                await pc.setLocalDescription(answer)
        self.answer = pc.localDescription.sdp

        for slot in self._slots.values():
            if slot.receiver.track is not None:
                slot.task = asyncio.ensure_future(slot.consume())
                self._tasks.append(slot.task)
        self._tasks.append(asyncio.ensure_future(self._ping_loop()))

    # ------------------------------------------------------------------ media accounting
    def _resolve(self, kind: str, csrc: int | None) -> Person | None:
        if csrc is None:
            return None
        table = self._audio_people if kind == "audio" else self._video_people
        return table.get(csrc)

    def _stats(self, person: Person) -> PersonStats:
        stats = self.received.by_person.get(person)
        if stats is None:
            stats = self.received.by_person[person] = PersonStats()
        return stats

    def _on_media_packet(self, mid: str, kind: str, csrc: int | None) -> None:
        now = time.monotonic()
        rec = self.received
        if csrc is None:
            rec.no_csrc_packets[mid] += 1
            return
        rec.csrc_packets[(kind, csrc)] += 1
        rec.slot_last_seen.setdefault(mid, {})[csrc] = now
        person = self._resolve(kind, csrc)
        if person is None:
            rec.unknown_csrc_packets[(kind, csrc)] += 1
            return
        stats = self._stats(person)
        if kind == "audio":
            stats.audio_packets += 1
            stats.last_audio = now
            stats.audio_mids.add(mid)
        else:
            stats.video_packets += 1
            stats.last_video = now
            stats.video_mids.add(mid)

    def _on_decoded_frame(self, mid: str, kind: str, csrc: int | None) -> None:
        now = time.monotonic()
        if kind == "audio" and self.t_first_audio is None:
            self.t_first_audio = now
        if kind == "video" and self.t_first_video is None:
            self.t_first_video = now
        person = self._resolve(kind, csrc)
        if person is None:
            self.received.unknown_frames[kind] += 1
            return
        stats = self._stats(person)
        if kind == "audio":
            stats.audio_frames += 1
            if stats.first_audio is None:
                stats.first_audio = now
        else:
            stats.video_frames += 1
            if stats.first_video is None:
                stats.first_video = now

    def slot_sources(self, kind: str, window: float = 1.0) -> dict[str, set[int]]:
        """mid -> CSRCs seen on that slot in the last ``window`` seconds."""
        cutoff = time.monotonic() - window
        out: dict[str, set[int]] = {}
        for mid, seen in self.received.slot_last_seen.items():
            slot = self._slots.get(mid)
            if slot is None or slot.kind != kind:
                continue
            recent = {c for c, t in seen.items() if t >= cutoff}
            if recent:
                out[mid] = recent
        return out

    def slot_mids(self, kind: str) -> list[str]:
        """Slot mids of one kind in offer order (upstream mids excluded)."""
        return [m for m, s in self._slots.items() if s.kind == kind
                and m not in ("audio", "video")]

    def people_for(self, kind: str) -> dict[int, Person]:
        """CSRC -> person for one kind, from the latest CONFPART."""
        return dict(self._audio_people if kind == "audio" else self._video_people)

    # ------------------------------------------------------------------ data channel
    def _on_datachannel(self, channel: Any) -> None:
        if self.t_datachannel is None:
            self.t_datachannel = time.monotonic()
        if channel.label != DATA_CHANNEL_LABEL:
            log.warning("%s: unexpected data channel label %r", self.userid[:8], channel.label)
        self.channel = channel

        @channel.on("message")
        def on_message(data: Any) -> None:
            self._on_dc_message(data)

        @channel.on("close")
        def on_close() -> None:
            self._channel_open.clear()

        if channel.readyState == "open":
            self._channel_open.set()
        else:
            @channel.on("open")
            def on_open() -> None:
                self._channel_open.set()

    def _send(self, msg: econn.Message) -> bool:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return False
        ch.send(msg.encode().decode())
        return True

    def _on_dc_message(self, data: Any) -> None:
        try:
            msg = econn.decode(data)
        except econn.EconnError as exc:
            log.warning("%s: undecodable data-channel message %r: %s", self.userid[:8],
                        data[:200], exc)
            return
        self.received.messages.append(msg)
        if msg.type == econn.CONFPART and not msg.resp:
            self._on_confpart(msg)
        elif msg.type == econn.PING:
            if msg.resp:
                self.received.pongs += 1
            else:
                self._send(self._message(econn.PING, True))

    def authorizes(self, participant: dict[str, Any]) -> bool:
        if participant.get("userid") in self.refuse:
            return False
        if self._authorize is not None:
            return bool(self._authorize(participant))
        return True

    def _on_confpart(self, msg: econn.Message) -> None:
        self.received.confpart = msg
        self.received.confparts += 1
        participants = msg.get("participants") or []
        audio: dict[int, Person] = {}
        video: dict[int, Person] = {}
        for p in participants:
            person = Person(str(p.get("userid", "")), str(p.get("clientid", "")))
            for key, table in (("ssrc_audio", audio), ("ssrc_video", video)):
                with contextlib.suppress(TypeError, ValueError):
                    ssrc = int(p.get(key))
                    if ssrc:
                        table[ssrc] = person
        self._audio_people, self._video_people = audio, video
        self._confpart_event.set()
        self.answer_confpart(msg)
        self.send_confstreams()

    def answer_confpart(self, msg: econn.Message | None = None) -> None:
        """Reply to a CONFPART (the latest by default) with our authorisations."""
        msg = msg or self.received.confpart
        if msg is None:
            return
        participants = []
        for p in msg.get("participants") or []:
            q = dict(p)
            q["authorized"] = self.authorizes(p)
            participants.append(q)
        fields = {k: v for k, v in msg.fields.items() if k != "participants"}
        fields["participants"] = participants
        self._send(self._message(econn.CONFPART, True, **fields))

    def others(self) -> list[dict[str, Any]]:
        """Participants of the latest CONFPART other than ourselves, join order."""
        msg = self.received.confpart
        if msg is None:
            return []
        return [p for p in msg.get("participants") or []
                if (p.get("userid"), p.get("clientid")) != (self.userid, self.clientid)]

    def send_confstreams(self, mode: str | None = None,
                         streams: list[dict[str, Any]] | None = None) -> bool:
        mode = mode or self.confstreams_mode
        if streams is None:
            streams = []
            if mode == "list":
                streams = [{"userid": p.get("userid"), "clientid": p.get("clientid"),
                            "quality": 0} for p in self.others()
                           if self.authorizes(p)][: self.vstreams]
        return self._send(self._message(econn.CONFSTREAMS, False, mode=mode, streams=streams))

    def send_propsync(self, props: dict[str, str] | None = None, **more: str) -> bool:
        props = dict(props or {"videosend": "true" if self.video_track else "false",
                               "screensend": "false", "audiocbr": "false",
                               "muted": "false"})
        props.update(more)
        return self._send(self._message(econn.PROPSYNC, False, props=props))

    def send_ping(self) -> bool:
        return self._send(self._message(econn.PING, False))

    async def _ping_loop(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._channel_open.wait()
            self.send_ping()
            while True:
                await asyncio.sleep(self.ping_interval)
                if self.pinging:
                    self.send_ping()

    def stop_pinging(self) -> None:
        self.pinging = False

    def start_pinging(self) -> None:
        self.pinging = True

    # ------------------------------------------------------------------ controls
    def set_amplitude(self, amplitude: float) -> None:
        """Tone loudness in [0, 1]; 0 is digital silence (level 127)."""
        if self.audio_track is not None:
            self.audio_track.amplitude = amplitude

    async def wait_for(self, predicate: Callable[[], bool], timeout: float,
                       what: str = "condition", interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.userid[:8]}: timed out after {timeout}s "
                                           f"waiting for {what}")
            await asyncio.sleep(interval)

    async def wait_datachannel(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._channel_open.wait(), timeout)

    async def wait_confpart(self, predicate: Callable[[econn.Message], bool] | None = None,
                            timeout: float = 10.0) -> econn.Message:
        def ok() -> bool:
            msg = self.received.confpart
            return msg is not None and (predicate is None or predicate(msg))
        await self.wait_for(ok, timeout, "CONFPART")
        assert self.received.confpart is not None
        return self.received.confpart

    def confpart_people(self) -> list[Person]:
        msg = self.received.confpart
        if msg is None:
            return []
        return [Person(p.get("userid", ""), p.get("clientid", ""))
                for p in msg.get("participants") or []]

    async def reconnect(self, timeout: float = 20.0) -> None:
        """What Wire's engine does when it re-creates its connection (a camera
        back on, a network change): close the peer connection, CONFCONN
        ``update:true``, answer the SFT's UPDATE offer from a new one."""
        if self.state != "joined":
            raise RuntimeError(f"reconnect() in state {self.state}")
        for task in self._tasks:
            task.cancel()
        self._tasks, self._slots, self.channel = [], {}, None
        self._channel_open.clear()
        old_pc = self.pc
        reply = await asyncio.wait_for(
            self._post(self.join_url, self.confconn(update=True), "CONFCONN"), timeout)
        if old_pc is not None:  # let go of the old connection, as the engine does
            await old_pc.close()
        for track in (self.audio_track, self.video_track):
            if track is not None:
                track.stop()
        self.audio_track, self.video_track = self._new_tracks()
        if reply.type != econn.UPDATE or reply.resp:
            raise JoinError(200, f"expected an UPDATE offer, got {reply.to_dict()}")
        self.offer = reply.get("sdp")
        await self._negotiate(self.offer)
        ack = await asyncio.wait_for(self._post(
            f"{self.sft_url}/sft/{self.convid}",
            self._message(econn.UPDATE, True, sdp=self.answer, props=self._props()),
            "UPDATE"), timeout)
        if ack.type != econn.CONFCONN or ack.get("status", 0) != 0:
            raise JoinRejected(ack.get("status", -1), ack)

    def _props(self) -> dict[str, str]:
        return {"videosend": "true" if self.video_track else "false",
                "screensend": "false", "audiocbr": "false", "muted": "false"}

    async def hangup(self) -> None:
        """Send HANGUP over the data channel, give SCTP a moment, close."""
        if self._send(self._message(econn.HANGUP, False)):
            await asyncio.sleep(0.2)
        await self.close()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.state = "closed"
        for task in self._tasks:
            task.cancel()
        for track in (self.audio_track, self.video_track):
            if track is not None:
                track.stop()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 5)
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 2)
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> WireClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------ reporting
    def summary(self) -> dict[str, Any]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 1)

        return {
            "userid": self.userid, "clientid": self.clientid, "convid": self.convid,
            "state": self.state,
            "join_ms": {"first_video": ms(self.join_time_video),
                        "first_audio": ms(self.join_time_audio),
                        "offer": ms(None if self.t_setup is None or self.t_confconn is None
                                    else self.t_setup - self.t_confconn),
                        "connected": ms(None if self.t_connected is None
                                        or self.t_confconn is None
                                        else self.t_connected - self.t_confconn)},
            "participants": [str(p) for p in self.confpart_people()],
            "received": {str(p): s.as_dict() for p, s in sorted(self.received.by_person.items())},
            "unknown_csrc_packets": {f"{k}:{c}": n for (k, c), n
                                     in self.received.unknown_csrc_packets.items()},
            "unknown_frames": dict(self.received.unknown_frames),
            "seq_gaps": dict(self.received.seq_gaps),
            "confparts": self.received.confparts, "pongs": self.received.pongs,
            "messages": Counter(m.type + ("/resp" if m.resp else "")
                                for m in self.received.messages),
        }


def dumps_summary(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)
