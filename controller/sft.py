"""The SFT: conferences, participants and their legs, driven by econn
messages from the HTTP API and the data channel, programming the data plane."""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate

from sftd import econn

from . import rtcp, twcc
from .dataplane import (
    AUDIO_SLOTS,
    CAPACITY_VSTREAMS,
    UNVALIDATED_SOURCE,
    Counter,
    DataPlane,
    Layer,
    LegSpec,
    SlotSource,
    StreamKind,
)
from .leg import LegIceConnection, ParticipantLeg, PortRange, PortsExhausted
from .media_watch import MediaWatch
from .model import Conference, Participant, ParticipantKey, StreamRequest, update_speakers
from .sdp import (
    OfferParams,
    SdpError,
    build_offer,
    offers_simulcast,
    parse_answer,
    tool_line,
)
from .supervise import Supervisor

log = logging.getLogger("sftd")

AUDIO_SELECTION_INTERVAL = 0.1
KEYFRAME_AFTER_CONNECT = 0.3  # seconds
KEYFRAME_RELAY_INTERVAL = 0.3  # seconds: a publisher's keyframe takes about this long
HANGUP_LINGER = 0.2  # seconds between answering a HANGUP and closing the leg
MAX_VIDEO_SSRCS = 4  # per publisher: simulcast layers learned from SRs beyond this are ignored
TIMER_INTERVAL = 0.5


@dataclass
class SftConfig:
    url: str
    media_addresses: list[str]
    advertised_address: str | None = None
    media_ports: tuple[int, int] = (32768, 61000)
    use_client_turn: bool = False
    fir_interval_ms: int = 1000
    setup_timeout: float = 10.0
    ping_timeout: float = 20.0
    max_participants: int = 0  # 0 = unlimited
    max_conference_size: int = 0
    participants_per_cpu_estimate: int = 50
    version: str = "0.1.0"


@dataclass
class JoinResult:
    """What the HTTP layer answers a CONFCONN with."""

    http_status: int
    message: econn.Message | None = None
    reason: str = ""


class Sft:
    def __init__(self, config: SftConfig, dataplane: DataPlane) -> None:
        self.config = config
        self.dataplane = dataplane
        self.certificate = RTCCertificate.generateCertificate()
        self.ports = PortRange(*config.media_ports)
        self.conferences: dict[str, Conference] = {}
        self.participants: dict[ParticipantKey, Participant] = {}
        self.by_leg: dict[int, Participant] = {}
        self.draining = False
        self.participants_total = 0
        self.calls_total = 0
        self._next_leg_id = 1
        self._next_conference_id = 1
        self._seqno = 0
        self._fir_seq = 0
        self.supervisor = Supervisor()
        self.refused: collections.Counter[str] = collections.Counter()  # sft_refused_total
        self.media_watch = MediaWatch()  # legs whose media goes nowhere
        self._media_check_due = 0.0
        # ended conferences' ids, reused oldest first so that ids (and the data
        # plane's per-conference counters) stay as few as the live conferences
        self._free_conference_ids: collections.deque[int] = collections.deque()
        self.transport_feedback = twcc.TransportFeedback()
        self.idle = asyncio.Event()
        self.idle.set()
        self.on_idle: Callable[[], None] | None = None
        self._tool = tool_line(config.version)

    # ---------------------------------------------------------------- life
    def start(self) -> None:
        self.supervisor.start_loop("timers", self._timers)
        self.supervisor.start_loop("audio-selection", self._audio_selection)
        self.supervisor.start_loop("fir", self._fir_loop)
        self.supervisor.start_loop("twcc", lambda: self.transport_feedback.run(
            self.dataplane, self._feedback_target))

    async def stop(self) -> None:
        await self.supervisor.stop()
        for participant in list(self.participants.values()):
            await self.end_participant(participant, "shutdown")
        self.dataplane.close()

    def drain(self) -> None:
        """SIGTERM: refuse new participants, keep running calls."""
        if not self.draining:
            self.draining = True
            log.warning("draining: %d calls, %d participants still running",
                        len(self.conferences), len(self.participants))
        self._check_idle()

    def _check_idle(self) -> None:
        if self.participants:
            self.idle.clear()
        else:
            self.idle.set()

    def state(self) -> dict[str, float]:
        return {
            "participants": len(self.participants),
            "calls": len(self.conferences),
            "participants_total": self.participants_total,
            "calls_total": self.calls_total,
            "draining": 1 if self.draining else 0,
            "capacity_remaining": self._capacity_remaining(),
        }

    def _capacity_remaining(self) -> int:
        """Participants of CAPACITY_VSTREAMS video slots this node can still take:
        the least of free media ports, data-plane room and the CPU estimate."""
        pending = sum(1 for p in self.participants.values() if not p.connected)
        limits = [self.ports.high - self.ports.low + 1 - len(self.ports.in_use),
                  self.config.participants_per_cpu_estimate * (os.cpu_count() or 1)
                  - len(self.participants)]
        if self.config.max_participants:
            limits.append(self.config.max_participants - len(self.participants))
        room = self.dataplane.remaining_legs(AUDIO_SLOTS, CAPACITY_VSTREAMS)
        if room is not None:
            limits.append(room - pending)
        return max(0, min(limits))

    def not_ready(self) -> str | None:
        """Why this node should get no new calls now (``/readyz``), or None."""
        if self.draining:
            return "draining"
        if down := self.supervisor.down():
            return f"background loop down (restarting): {', '.join(down)}"
        return None

    def conference_packets(self) -> dict[str, int]:
        by_id = self.dataplane.read_conference_packets()
        return {c.convid: by_id.get(c.conference_id, 0) for c in self.conferences.values()}

    # ---------------------------------------------------------------- HTTP
    async def handle_econn(self, convid: str, msg: econn.Message, may_start: bool = True,
                           method: str = "POST", authenticated: bool = False) -> JoinResult:
        """One econn message over HTTP. ``authenticated``: the HTTP layer checked
        a valid token on this very message (``-a``)."""
        key = ParticipantKey(convid, msg.src_userid, msg.src_clientid)
        participant = self.participants.get(key)
        body = msg.body
        if participant is None:
            if self.draining:
                return JoinResult(303, reason="draining: join another SFT")
            if method != "POST" or not isinstance(body, econn.Confconn):
                return JoinResult(400, reason=f"unknown participant {key}: expected a "
                                  "CONFCONN POST to join")
            return await self._join(convid, key, body, may_start)
        if msg.sessid != participant.sessid and not (
                isinstance(body, econn.Confconn) and authenticated):
            # Identity is (convid, userid, clientid), which CONFPART tells every
            # participant: a different session must re-authenticate (-a) to take over.
            return JoinResult(409, reason=f"{msg.type} for {key} does not belong to its "
                              f"session (sessid {msg.sessid!r}); the offer was made to "
                              "another session" + ("" if msg.type == econn.CONFCONN else
                                                   ": answer with the sessid of the offer"))
        if isinstance(body, econn.Setup):  # SETUP or UPDATE
            if not body.resp:
                return JoinResult(400, reason=f"{msg.type} from a client must be an answer "
                                  "(resp:true); the SFT is always the offerer")
            return self._apply_answer(participant, body)
        if isinstance(body, econn.Confconn):
            if body.update and participant.connected and participant.leg.state == "connected":
                return self._restart(participant, body)
            # update:false (or an update for a leg that never connected) re-creates
            # the participant at the end of the key-generator order.
            await self.end_participant(participant, "re-created by CONFCONN", notify=False)
            return await self._join(convid, key, body, may_start)
        return JoinResult(400, reason=f"{msg.type} is not accepted over HTTP")

    def _restart(self, participant: Participant, msg: econn.Confconn) -> JoinResult:
        """CONFCONN update:true on a connected leg: an ICE restart on the same
        leg (DTLS and data channel stay). As in Wire's sftd the participant loses
        its authorisations and goes to the end of the key-generator order."""
        conference = self.conferences[participant.convid]
        participant.sessid = msg.sessid
        participant.leg.restart_ice()
        participant.leg.keep_restart_on_close = True
        participant.restarting = True
        self._deauthorize(conference, participant)
        conference.move_to_end(participant)
        self._send_confpart(conference)
        self._update_slots(conference)
        log.info("participant %s: ICE restart offered", participant.key)
        return JoinResult(200, econn.setup_offer(participant.sessid, self._offer_sdp(participant),
                                                 self.config.url, participant.userid,
                                                 participant.clientid, update=True))

    def _reconnect(self, participant: Participant) -> None:
        """The answer to an update:true offer comes from a new peer connection
        (another DTLS fingerprint: Wire's engine re-creates its connection, as
        when a camera comes back on). The participant keeps its place; a new leg
        takes the offered ICE credentials and sockets and runs a new DTLS."""
        old = participant.leg
        leg = self._new_leg(self._next_leg_id, ice=old.hand_over_restart())
        self._next_leg_id += 1
        self.by_leg.pop(old.leg_id, None)
        try:
            self.dataplane.remove_leg(old.leg_id)
        except Exception:  # noqa: BLE001 - the new leg goes on regardless
            log.exception("data plane could not remove leg %d of %s", old.leg_id,
                          participant.key)
        self.supervisor.spawn(old.close(), f"leg-{old.leg_id}-replaced")
        participant.leg = leg
        self.by_leg[leg.leg_id] = participant
        participant.state = "offered"
        participant.offered_at = time.monotonic()
        participant.audio_sources = [None] * len(participant.audio_slot_ssrcs)
        participant.video_sources = [None] * len(participant.video_slot_ssrcs)
        log.info("participant %s reconnects from a new connection (leg %d replaces %d)",
                 participant.key, leg.leg_id, old.leg_id)

    @staticmethod
    def _deauthorize(conference: Conference, participant: Participant) -> None:
        participant.authorized = set()
        for other in conference.participants:
            other.authorized.discard(participant.key)

    async def _join(self, convid: str, key: ParticipantKey, msg: econn.Confconn,
                    may_start: bool) -> JoinResult:
        conference = self.conferences.get(convid)
        if conference is not None and not conference.participants:
            self._drop_conference(conference)  # left empty by a re-create: start afresh
            conference = None
        if conference is None and not may_start:
            return JoinResult(200, econn.confconn_status(msg.sessid, econn.STATUS_JOIN_ONLY))
        limit = self.config.max_participants
        per_conf = self.config.max_conference_size
        if (limit and len(self.participants) >= limit) or (
                per_conf and conference is not None and len(conference.participants) >= per_conf):
            return JoinResult(200, econn.confconn_status(msg.sessid, econn.STATUS_LIMIT))
        vstreams = msg.vstreams
        pending = [(AUDIO_SLOTS, p.vstreams) for p in self.participants.values()
                   if not p.connected]  # admitted, not yet in the data plane
        if (full := self.dataplane.can_admit([*pending, (AUDIO_SLOTS, vstreams)])) is not None:
            log.warning("join of %s refused: %s", key, full)
            self.refused["join_dataplane_full"] += 1
            return JoinResult(200, econn.confconn_status(msg.sessid, econn.STATUS_LIMIT))
        if conference is None:
            if self._free_conference_ids:
                conference_id = self._free_conference_ids.popleft()
            else:
                conference_id = self._next_conference_id
                self._next_conference_id += 1
            conference = Conference(convid, conference_id)
            self.conferences[convid] = conference
            self.calls_total += 1
        if msg.update:
            conference.started = True  # a client rejoining: nobody is told to start
        leg_id = self._next_leg_id
        self._next_leg_id += 1
        used = {p.ssrc_video for p in conference.participants}
        ssrc_video = _random_ssrc(used)
        slot_ssrcs = [_random_ssrc(used | {ssrc_video}) for _ in range(AUDIO_SLOTS + vstreams)]
        slot_labels = tuple(str(uuid.uuid4()) for _ in slot_ssrcs)
        leg = self._new_leg(leg_id, turn=self._turn_from(msg) if self.config.use_client_turn
                            else None)
        participant = Participant(
            key=key, convid=convid, userid=key.userid, clientid=key.clientid,
            sessid=msg.sessid, vstreams=vstreams, leg=leg,
            join_index=conference.next_join_index, ssrc_video=ssrc_video,
            audio_slot_ssrcs=tuple(slot_ssrcs[:AUDIO_SLOTS]),
            video_slot_ssrcs=tuple(slot_ssrcs[AUDIO_SLOTS:]), slot_labels=slot_labels,
            simulcast=offers_simulcast(msg.toolver),
            sft_url_given=bool(msg.sft_url))
        conference.next_join_index += 1
        conference.participants.append(participant)
        self.participants[key] = participant
        self.by_leg[leg_id] = participant
        self.participants_total += 1
        self._check_idle()
        try:
            await leg.gather()
        except Exception as exc:
            log.warning("offer failed for %s: %s", key, exc)
            await self.end_participant(participant, f"offer failed: {exc}")
            status = 503 if isinstance(exc, PortsExhausted) else 500
            return JoinResult(status, reason=f"could not prepare the offer: {exc}")
        participant.offered_at = time.monotonic()
        log.info("participant %s offered (leg %d, conference %s)", key, leg_id, convid)
        return JoinResult(200, econn.setup_offer(msg.sessid, self._offer_sdp(participant),
                                                 self.config.url, key.userid, key.clientid,
                                                 update=msg.update))

    def _offer_sdp(self, participant: Participant) -> str:
        leg = participant.leg
        participant.sdp_version += 1
        return build_offer(OfferParams(
            session_id=participant.sdp_session_id, session_version=participant.sdp_version,
            ice_ufrag=leg.ice_ufrag, ice_pwd=leg.ice_pwd,
            fingerprint=leg.fingerprint(), candidates=tuple(leg.candidates()),
            audio_slot_ssrcs=participant.audio_slot_ssrcs,
            video_slot_ssrcs=participant.video_slot_ssrcs,
            slot_labels=participant.slot_labels, tool=self._tool,
            simulcast=participant.simulcast))

    @staticmethod
    def _turn_from(msg: econn.Confconn) -> dict[str, Any] | None:
        """-T: the first UDP TURN server of the client's CONFCONN ice_servers."""
        for server in msg.ice_servers:
            for url in [server.urls] if isinstance(server.urls, str) else server.urls:
                if url.startswith("turn:") and "transport=tcp" not in url:
                    hostport = url[5:].split("?")[0]
                    host, _, port = hostport.rpartition(":")
                    if host and port.isdigit():
                        return {"turn_server": (host, int(port)),
                                "turn_username": server.username,
                                "turn_password": server.credential}
        return None

    def _new_leg(self, leg_id: int, turn: dict[str, Any] | None = None,
                 ice: LegIceConnection | None = None) -> ParticipantLeg:
        return ParticipantLeg(leg_id, certificate=self.certificate, ports=self.ports,
                   addresses=self.config.media_addresses,
                   advertised=self.config.advertised_address,
                   srtp_profiles=self.dataplane.srtp_profiles, turn=turn,
                   on_rtp=self._on_rtp, on_rtcp=self._on_rtcp, on_message=self._on_message,
                   on_connected=self._on_connected, on_closed=self._on_leg_closed,
                   on_reject=self._on_unvalidated, on_path_change=self._on_path_changed,
                   refused=self.refused, ice=ice)

    def _apply_answer(self, participant: Participant, msg: econn.Setup) -> JoinResult:
        if participant.restarting:
            try:
                answer = parse_answer(msg.sdp)
            except SdpError as exc:
                return JoinResult(400, reason=f"bad SDP answer: {exc}")
            participant.restarting = False
            if participant.leg.state == "closed" or \
                    not set(answer.fingerprints) & participant.leg.remote_fingerprints:
                self._reconnect(participant)
                return self._apply_answer(participant, msg)
            participant.leg.start(answer, on_restarted=self._on_path_changed)
            return JoinResult(200, econn.confconn_status(msg.sessid, econn.STATUS_OK))
        if participant.state != "offered":
            return JoinResult(400, reason="answer already applied; send CONFCONN update:true "
                              "to renegotiate")
        try:
            answer = parse_answer(msg.sdp)
        except SdpError as exc:
            return JoinResult(400, reason=f"bad SDP answer: {exc}")
        audio = answer.audio_ssrcs()
        participant.ssrc_audio = audio[0] if audio else 0
        participant.video_ssrcs = answer.video_ssrcs()
        if (props := msg.short_props()) is not None:
            participant.props = props
        participant.muted = econn.prop_is_true(msg.props, "muted")
        participant.state = "connecting"
        participant.extensions = answer.extension_ids()
        participant.leg.start(answer)
        return JoinResult(200, econn.confconn_status(msg.sessid, econn.STATUS_OK))

    # ---------------------------------------------------------------- legs
    def _on_connected(self, leg: ParticipantLeg) -> None:
        participant = self.by_leg.get(leg.leg_id)
        pair = leg.selected_pair()
        if participant is None or pair is None or leg.srtp_keys is None:
            return
        conference = self.conferences[participant.convid]
        local, remote, transport = pair
        try:
            self.dataplane.add_leg(LegSpec(
                leg_id=leg.leg_id, conference_id=conference.conference_id, local_addr=local,
                remote_addr=remote, srtp=leg.srtp_keys,
                audio_slot_ssrcs=participant.audio_slot_ssrcs,
                video_slot_ssrcs=participant.video_slot_ssrcs,
                extensions=participant.extensions,
                transport=transport))
            self.dataplane.set_publisher(
                leg.leg_id, (participant.ssrc_audio,) if participant.ssrc_audio else (),
                _declared_layers(participant.video_ssrcs))
        except Exception as exc:  # noqa: BLE001 - this participant ends, the node goes on
            log.exception("data plane refused leg %d of %s", leg.leg_id, participant.key)
            self.supervisor.spawn(self.end_participant(participant, f"data plane: {exc}"),
                                  f"end-{leg.leg_id}")
            return
        participant.state = "connected"
        participant.last_ping = time.monotonic()
        log.info("participant %s connected from %s:%d (%s, %s data plane)", participant.key,
                 remote[0], remote[1], leg.srtp_keys.profile, self.dataplane.name)
        self._send_confpart(conference)
        self._update_slots(conference)
        # A new stream's first packets may be dropped while the data plane
        # learns it (RID, keystream): ask for a keyframe once it is flowing.
        asyncio.get_running_loop().call_later(KEYFRAME_AFTER_CONNECT, self._send_fir, participant)

    def _on_path_changed(self, leg: ParticipantLeg) -> None:
        """ICE restart done, or the peer moved to another validated pair."""
        pair = leg.selected_pair()
        if pair is not None and leg.leg_id in self.by_leg:
            self.dataplane.update_leg_address(leg.leg_id, pair[1], pair[2])
            log.info("participant %s now at %s:%d", self.by_leg[leg.leg_id].key, *pair[1])

    def _on_leg_closed(self, leg: ParticipantLeg) -> None:
        participant = self.by_leg.get(leg.leg_id)
        if participant is not None and participant.restarting and participant.state != "ended":
            # the client let its old connection go after asking for an update:
            # its answer (or the ping timeout) decides
            log.info("participant %s: old connection closed, update answer pending",
                     participant.key)
            return
        if participant is not None and participant.state != "ended":
            self.supervisor.spawn(self.end_participant(participant, "connection closed"),
                                  f"end-{leg.leg_id}")

    def _on_unvalidated(self, data: bytes) -> None:
        self.dataplane.handle_packet(UNVALIDATED_SOURCE, data)  # counted, never forwarded

    def _on_rtp(self, leg: ParticipantLeg, data: bytes) -> None:
        self.dataplane.handle_packet(leg.leg_id, data)

    def _on_rtcp(self, leg: ParticipantLeg, data: bytes) -> None:
        plain = leg.unprotect_rtcp(data)
        if plain is None:
            return
        participant = self.by_leg.get(leg.leg_id)
        if participant is None:
            return
        now = time.monotonic()
        for report in rtcp.parse_sender_reports(plain):
            if report.ssrc != participant.ssrc_audio and report.ssrc not in participant.video_ssrcs:
                if len(participant.video_ssrcs) >= MAX_VIDEO_SSRCS:
                    continue  # a sender's layers are few: more is not media we forward
                # SSRCs learned from SRs: simulcast layers that only a RID announced
                participant.video_ssrcs.append(report.ssrc)
            prior = participant.report_state.setdefault(report.ssrc, rtcp.ReportState())
            stats = self.dataplane.read_receive_stats(leg.leg_id, report.ssrc)
            leg.send_rtcp(rtcp.receiver_report(participant.audio_slot_ssrcs[0],
                                               rtcp.report_block(report, now, stats, prior)))
        if wanted := rtcp.parse_keyframe_requests(plain):
            self._relay_keyframe_requests(participant, wanted, now)

    def _relay_keyframe_requests(self, subscriber: Participant, slot_ssrcs: set[int],
                                 now: float) -> None:
        """A receiver lost a slot's picture: ask the publisher on that slot for a
        keyframe (once per KEYFRAME_RELAY_INTERVAL per publisher)."""
        for index, ssrc in enumerate(subscriber.video_slot_ssrcs):
            source = subscriber.video_sources[index]
            if ssrc not in slot_ssrcs or source is None:
                continue
            publisher = self.by_leg.get(source.publisher)
            if publisher is not None and \
                    now - publisher.keyframe_requested_at >= KEYFRAME_RELAY_INTERVAL:
                self._send_fir(publisher)

    def _drop_conference(self, conference: Conference) -> None:
        if self.conferences.get(conference.convid) is conference and not conference.participants:
            del self.conferences[conference.convid]
            self.dataplane.reset_conference(conference.conference_id)
            self._free_conference_ids.append(conference.conference_id)
            log.info("conference %s ended", conference.convid)

    async def end_participant(self, participant: Participant, reason: str,
                              notify: bool = True) -> None:
        """Removes the participant everywhere; a failing step is logged and the
        rest still runs, so no socket, port, data-plane leg or ghost is left."""
        if participant.state == "ended":
            return
        was_connected = participant.connected
        participant.state = "ended"
        log.info("participant %s ended: %s", participant.key, reason)
        self.participants.pop(participant.key, None)
        self.by_leg.pop(participant.leg.leg_id, None)
        conference = self.conferences.get(participant.convid)
        if conference is not None:
            if participant in conference.participants:
                conference.participants.remove(participant)
            self._deauthorize(conference, participant)
        try:
            self.dataplane.remove_leg(participant.leg.leg_id)
        except Exception:  # noqa: BLE001 - the participant goes regardless
            log.exception("data plane could not remove leg %d of %s",
                          participant.leg.leg_id, participant.key)
        try:
            if conference is not None:
                if not conference.participants and notify:
                    self._drop_conference(conference)
                elif conference.participants and was_connected:
                    self._send_confpart(conference)
                    self._update_slots(conference)
                # else: a re-created participant comes right back (see _join)
        except Exception:  # noqa: BLE001 - the leg is still closed below
            log.exception("could not tell conference %s that %s left", participant.convid,
                          participant.key)
        finally:
            try:
                await participant.leg.close()
                await participant.leg.release_restart()
            finally:
                self._check_idle()
                if self.draining and not self.participants and self.on_idle is not None:
                    self.on_idle()

    # ---------------------------------------------------------------- data channel
    def _on_message(self, leg: ParticipantLeg, text: str) -> None:
        participant = self.by_leg.get(leg.leg_id)
        if participant is None:
            return
        try:
            msg = econn.decode(text)
        except econn.EconnError as exc:
            log.info("bad data-channel message from %s: %s", participant.key, exc)
            return
        conference = self.conferences.get(participant.convid)
        if conference is None:
            return
        body = msg.body
        if isinstance(body, econn.Ping):
            participant.last_ping = time.monotonic()
            if not body.resp:
                leg.send_message(econn.sft_message(econn.PING, msg.sessid, True).text())
        elif isinstance(body, econn.Confpart) and body.resp:
            self._on_confpart_reply(conference, participant, body)
        elif isinstance(body, econn.Confstreams):
            self._on_confstreams(conference, participant, body)
        elif isinstance(body, econn.Propsync):
            participant.props = body.props
            participant.muted = econn.prop_is_true(body.props, "muted")
            for other in conference.connected():
                if other is not participant and Conference.mutual(participant, other):
                    self._send_props(participant, other)
        elif isinstance(body, econn.Hangup):
            if not body.resp:  # Wire's engine waits for the answer before it lets go
                leg.send_message(econn.sft_message(econn.HANGUP, msg.sessid, True).text())
            self.supervisor.spawn(self._end_after(participant, "HANGUP", HANGUP_LINGER),
                                  f"end-{leg.leg_id}")

    async def _end_after(self, participant: Participant, reason: str, delay: float) -> None:
        await asyncio.sleep(delay)  # lets a last data-channel message leave first
        await self.end_participant(participant, reason)

    def _on_confpart_reply(self, conference: Conference, participant: Participant,
                           msg: econn.Confpart) -> None:
        authorized = {ParticipantKey(conference.convid, entry.userid, entry.clientid)
                      for entry in msg.participants if entry.authorized}
        authorized.discard(participant.key)
        if authorized != participant.authorized:
            before = participant.authorized
            participant.authorized = authorized
            self._update_slots(conference)
            # Each side of a newly mutual pair learns the other's latest props:
            # clients send theirs before anyone has authorised them.
            for other in conference.connected():
                if other.key in authorized and other.key not in before \
                        and Conference.mutual(participant, other):
                    self._send_props(other, participant)
                    self._send_props(participant, other)

    @staticmethod
    def _send_props(source: Participant, dest: Participant) -> None:
        if source.props is None or not dest.connected:
            return
        dest.leg.send_message(econn.Message(
            type=econn.PROPSYNC, sessid=source.sessid, resp=True, src_userid=source.userid,
            src_clientid=source.clientid, fields={"props": source.props}).text())

    def _on_confstreams(self, conference: Conference, participant: Participant,
                        msg: econn.Confstreams) -> None:
        participant.stream_mode = msg.mode
        participant.stream_requests = [
            StreamRequest(entry.userid, entry.clientid or "", entry.layer_wanted)
            for entry in (msg.streams or [])[:participant.vstreams]]
        self._update_slots(conference)

    def _send_confpart(self, conference: Conference) -> None:
        self._seqno += 1
        live = conference.connected()
        # Wire's sftd: only the first CONFPART of a new conference, sent while
        # its creator is alone, may tell it to start the call (CONFSTART).
        should_start = len(live) == 1 and not conference.started
        if live:
            conference.started = True
        entries = [{"userid": p.userid, "clientid": p.clientid, "authorized": False,
                    "ssrc_audio": str(p.ssrc_audio), "ssrc_video": str(p.ssrc_video),
                    "timestamp": p.join_index, "muted": p.muted} for p in live]
        for p in live:
            p.leg.send_message(econn.sft_message(
                econn.CONFPART, "", False, dest_userid=p.userid, dest_clientid=p.clientid,
                should_start=should_start and not p.sft_url_given,
                timestamp=str(int(time.time() * 1000)), seqno=str(self._seqno),
                entropy=base64.b64encode(os.urandom(16)).decode(),
                participants=entries, sfts=[self.config.url]).text())

    # ---------------------------------------------------------------- slots
    def _update_slots(self, conference: Conference,
                      levels_by_leg: dict[int, float] | None = None,
                      video: bool = True) -> None:
        """Point every subscriber's slots at what it should receive now. Only
        mutually authorised pairs are ever connected; changes only are written.
        ``video=False`` redoes the audio slots only: what a change of speakers
        moves when no subscriber picks its video by level."""
        connected = conference.connected()
        by_key = {p.key: p for p in connected}
        key_generator = conference.key_generator
        for sub in connected:
            audio: list[Participant | None] = [None] * len(sub.audio_slot_ssrcs)
            if audio and key_generator is not sub and key_generator is not None and \
                    Conference.mutual(sub, key_generator):
                audio[0] = key_generator
            for i, key in enumerate(conference.speakers[:len(audio) - 1]):
                pub = by_key.get(key) if key is not None else None
                if pub is not None and pub is not sub and Conference.mutual(sub, pub):
                    audio[i + 1] = pub
            for index, pub in enumerate(audio):
                source = SlotSource(pub.leg.leg_id, pub.ssrc_audio) if pub else None
                self._set(sub, StreamKind.AUDIO, index, source)
        if not video:
            return
        levels: dict[ParticipantKey, float] = {}
        if conference.video_by_level():
            levels = self._levels(conference, levels_by_leg)
        for sub in connected:
            allowed = {k: p for k, p in by_key.items()
                       if p is not sub and Conference.mutual(sub, p)}
            for index, (pub, layer) in enumerate(self._video_choice(sub, allowed, levels)):
                source = SlotSource(pub.leg.leg_id, pub.ssrc_video, layer) if pub else None
                self._set(sub, StreamKind.VIDEO, index, source)

    def _video_choice(self, sub: Participant, allowed: dict[ParticipantKey, Participant],
                      levels: dict[ParticipantKey, float],
                      ) -> list[tuple[Participant | None, Layer]]:
        slots: list[tuple[Participant | None, Layer]] = [(None, Layer.HIGH)] * len(
            sub.video_slot_ssrcs)
        if sub.stream_mode is None:
            return slots  # no video before the subscriber's first CONFSTREAMS
        if sub.stream_mode == "list":
            for index, request in enumerate(sub.stream_requests[:len(slots)]):
                pub = next((p for p in allowed.values() if p.userid == request.userid and (
                    not request.clientid or p.clientid == request.clientid)), None)
                if pub is not None:
                    slots[index] = (pub, sub.wants_layer(request))
        else:
            ranked = sorted(allowed.values(), key=lambda p: (levels.get(p.key, 127), p.join_index))
            for index, pub in enumerate(ranked[:len(slots)]):
                slots[index] = (pub, Layer.HIGH)
        return slots

    def _set(self, sub: Participant, kind: StreamKind, index: int,
             source: SlotSource | None) -> None:
        current = sub.audio_sources if kind == StreamKind.AUDIO else sub.video_sources
        if current[index] == source:
            return
        current[index] = source
        self.dataplane.set_slot(sub.leg.leg_id, kind, index, source)
        if kind == StreamKind.VIDEO and source is not None:
            publisher = self.by_leg.get(source.publisher)
            if publisher is not None:
                self._request_keyframe(publisher)  # the slot switches on the next keyframe

    def _levels(self, conference: Conference,
                by_leg: dict[int, float] | None = None) -> dict[ParticipantKey, float]:
        if by_leg is None:
            by_leg = self.dataplane.read_audio_levels()
        return {p.key: by_leg.get(p.leg.leg_id, 127.0) for p in conference.connected()}

    # ---------------------------------------------------------------- timers
    async def _audio_selection(self) -> None:
        while True:
            await asyncio.sleep(AUDIO_SELECTION_INTERVAL)
            if not self.conferences:
                continue
            by_leg = self.dataplane.read_audio_levels()  # one read for every conference
            for conference in list(self.conferences.values()):
                before = list(conference.speakers)
                update_speakers(conference, self._levels(conference, by_leg))
                if conference.video_by_level():
                    self._update_slots(conference, by_leg)
                elif conference.speakers != before:
                    self._update_slots(conference, by_leg, video=False)

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(TIMER_INTERVAL)
            now = time.monotonic()
            for participant in list(self.participants.values()):
                if participant.state in ("offered", "connecting") and \
                        now - participant.offered_at > self.config.setup_timeout:
                    await self.end_participant(
                        participant, f"no connection within {self.config.setup_timeout:g} s "
                        "of the offer")
                elif participant.connected and \
                        now - participant.last_ping > self.config.ping_timeout:
                    await self.end_participant(
                        participant, f"no PING for {self.config.ping_timeout:g} s")
            if now >= self._media_check_due:
                self._media_check_due = now + self.media_watch.interval
                self.media_watch.check(now, self.participants.values(), self.dataplane)

    async def _fir_loop(self) -> None:
        interval = max(self.config.fir_interval_ms, 50) / 1000
        while True:
            await asyncio.sleep(interval)
            for participant in list(self.participants.values()):
                if participant.connected and participant.video_ssrcs:
                    self._send_fir(participant)

    def _request_keyframe(self, publisher: Participant) -> None:
        """A FIR for a slot that switched to ``publisher``: at once, or, within
        KEYFRAME_RELAY_INTERVAL of the last one, once when the interval ends.
        A speaker that many subscribers switch to (a join, a leave, a change of
        speakers in a large call) gets one keyframe request, not one per slot,
        and a slot that switched after the last keyframe still gets its own."""
        if publisher.keyframe_request_pending:
            return
        wait = publisher.keyframe_requested_at + KEYFRAME_RELAY_INTERVAL - time.monotonic()
        if wait <= 0:
            self._send_fir(publisher)
            return
        publisher.keyframe_request_pending = True

        def send() -> None:
            publisher.keyframe_request_pending = False
            self._send_fir(publisher)

        asyncio.get_running_loop().call_later(wait, send)

    def _send_fir(self, publisher: Participant) -> None:
        if not publisher.connected or not publisher.video_ssrcs:
            return
        publisher.keyframe_requested_at = time.monotonic()
        self._fir_seq += 1
        publisher.leg.send_rtcp(rtcp.keyframe_request(publisher.audio_slot_ssrcs[0],
                                         publisher.video_ssrcs, self._fir_seq))

    def _feedback_target(self, leg_id: int) -> twcc.FeedbackTarget | None:
        """Transport-wide feedback goes to connected legs, from our first slot SSRC."""
        participant = self.by_leg.get(leg_id)
        if participant is None or not participant.connected:
            return None
        media = participant.video_ssrcs[-1:] or [participant.ssrc_audio]
        return twcc.FeedbackTarget(participant.audio_slot_ssrcs[0], media[0],
                                   participant.leg.send_rtcp)

    def counters(self) -> dict[Counter, int]:
        return self.dataplane.read_counters()


def _random_ssrc(used: set[int]) -> int:
    while True:
        ssrc = random.randrange(1, 1 << 32)
        if ssrc not in used:
            used.add(ssrc)
            return ssrc


def _declared_layers(ssrcs: list[int]) -> dict[int, Layer]:
    """Declared video SSRCs: a SIM group lists low→high; a single SSRC is 'h'."""
    if len(ssrcs) == 1:
        return {ssrcs[0]: Layer.HIGH}
    return {ssrc: (Layer.HIGH if i == len(ssrcs) - 1 else Layer.LOW)
            for i, ssrc in enumerate(ssrcs)}
