"""The peer SFU: Janus VideoRoom driven by the same generator (docs/benchmark.md).

Per participant, over Janus's HTTP API (``/janus``, long-poll for events):

* a session, a publisher handle (``janus.plugin.videoroom``): the client is
  the offerer here. aiortc offers sendonly Opus audio (with the
  ssrc-audio-level extension) and sendonly VP8 video from idle tracks that
  never yield a frame, with SRTP pinned to AES_CM_128_HMAC_SHA1_80;
  ``joinandconfigure`` carries the offer, Janus's ``joined`` event carries the
  answer; ICE and DTLS run as the client; when DTLS is done the leg's SRTP
  keys are exported and its ICE-selected socket goes to the same native fast
  path as ``sft-load`` (``fastpath.c``), which sends the pre-protected mix
  (``media.Publisher``: same rates, sizes, stamps; SSRCs, payload types and
  the audio-level id from our offer/Janus's answer);
* once every publisher of the room is up, one multistream subscriber handle
  per participant (``join`` as subscriber with a ``streams`` list: Janus sends
  one offer for all of them, aiortc answers, ``start``): the Wire mix, i.e.
  the video of up to ``vstreams`` (9) others and the audio of 5 others (Janus
  does no loudest-speaker selection, so the 5 are fixed: the next five in the
  room, in a ring, so every publisher's audio goes to exactly five
  subscribers). Its socket goes to the fast path too; every m-line of Janus's
  offer carries one known feed (SSRC -> publisher), so audio and video are
  both accounted exactly, per source (Janus writes no CSRC).

Accounting (same windows and drained pauses as ``load.py``): expected per
subscribed stream = packets its publisher's leg sent; received per SSRC in C;
ingress/egress against Janus's own per-handle counters from the Admin API
(``handle_info``: per m-line ``stats.in.packets`` of publisher handles,
``stats.out.packets`` of subscriber handles). One packet in ``--sample-every`` is decrypted with the
subscriber leg's keys: latency from the stamp, route = the payload's
publisher is the feed the SSRC's m-line was subscribed to.

Run by ``sft-bench --systems janus`` (which starts Janus from a generated
config, see :class:`JanusSystem`), or standalone against a running Janus:
``python -m sftd.sftload.janus --url http://IP:8088/janus --admin-url
http://IP:7088/admin --admin-secret S --local-address IP2``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80

from sftd.sftclient import sdp as sdpmod
from sftd.sftclient.client import _AddressPatch

from . import load, media
from .bench import System
from .fastpath import now_ns

log = logging.getLogger("sftd.sftload.janus")

AUDIO_PER_SUBSCRIBER = 5  # the Wire mix: 5 audio slots
LIBDIRS = ("/usr/lib/x86_64-linux-gnu/janus", "/usr/lib/janus", "/usr/local/lib/janus",
           "/opt/janus/lib/janus")
HTTP_PORT = 8088
ADMIN_PORT = 7088


# ---------------------------------------------------------------- configuration
def janus_libdir() -> Path | None:
    for d in LIBDIRS:
        if (Path(d) / "plugins" / "libjanus_videoroom.so").exists():
            return Path(d)
    return None


@dataclass
class JanusConfig:
    """Janus's configuration, generated into a fresh directory (never /etc/janus):
    ``janus.jcfg``, the HTTP transport's and the VideoRoom plugin's config, and
    plugin/transport folders holding symlinks to exactly the two shared objects
    Janus should load (VideoRoom, HTTP). No event handlers, loggers, recording,
    STUN/TURN; ICE only on the bench veth; media event loops set explicitly."""

    ip: str
    interface: str
    event_loops: int = 1  # one media loop, like sftd's one event loop, on the pinned core
    debug_level: int = 3  # warnings, like ``sftd -q``
    rtp_port_range: str = "20000-60000"
    admin_secret: str = field(default_factory=lambda: secrets.token_hex(12))
    http_port: int = HTTP_PORT
    admin_port: int = ADMIN_PORT

    def write(self, folder: Path) -> Path:
        """Write the tree under ``folder``; returns the configs folder (``janus -F``)."""
        lib = janus_libdir()
        if lib is None:
            raise FileNotFoundError("Janus VideoRoom plugin not found (apt-get install janus)")
        conf = folder / "etc"
        for sub in ("etc", "plugins", "transports", "events", "loggers"):
            d = folder / sub
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        os.symlink(lib / "plugins" / "libjanus_videoroom.so",
                   folder / "plugins" / "libjanus_videoroom.so")
        os.symlink(lib / "transports" / "libjanus_http.so",
                   folder / "transports" / "libjanus_http.so")
        (conf / "janus.jcfg").write_text(f"""\
general: {{
	configs_folder = "{conf}"
	plugins_folder = "{folder / 'plugins'}"
	transports_folder = "{folder / 'transports'}"
	events_folder = "{folder / 'events'}"
	loggers_folder = "{folder / 'loggers'}"
	log_to_stdout = true
	debug_level = {self.debug_level}
	debug_timestamps = true
	debug_colors = false
	interface = "{self.ip}"
	admin_secret = "{self.admin_secret}"
	server_name = "sft-bench"
	session_timeout = 120
	event_loops = {self.event_loops}
	allow_loop_indication = false
	hide_dependencies = true
	protected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys",
		"/usr", "/var"]
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "{self.rtp_port_range}"
	dtls_mtu = 1200
	no_media_timer = 0
	slowlink_threshold = 0
}}
nat: {{
	nice_debug = false
	full_trickle = false
	ice_lite = false
	ice_tcp = false
	ignore_mdns = true
	ice_enforce_list = "{self.interface}"
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
""")
        (conf / "janus.transport.http.jcfg").write_text(f"""\
general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {self.http_port}
	ip = "{self.ip}"
	https = false
}}
admin: {{
	admin_base_path = "/admin"
	admin_http = true
	admin_port = {self.admin_port}
	admin_ip = "{self.ip}"
	admin_https = false
}}
cors: {{
}}
""")
        # rooms are created per conference over the API (record = false there)
        (conf / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
        return conf



# ---------------------------------------------------------------- the system under test
class JanusSystem(System):
    """Janus from a generated config dir, in the SFT namespace, pinned and niced
    like sftd, started and stopped by PID (``System._spawn``/``stop``)."""

    name = "janus"

    def __init__(self, topo: Any, workdir: Path) -> None:
        super().__init__(topo, workdir)
        self.config = JanusConfig(ip=topo.ip_sft, interface=topo.if_sft)
        self.url = f"http://{topo.ip_sft}:{self.config.http_port}/janus"
        self.admin_url = f"http://{topo.ip_sft}:{self.config.admin_port}/admin"

    def start(self) -> None:
        conf = self.config.write(self.workdir / "janus")
        janus = shutil.which("janus") or "janus"
        # -o: no colours in the log; the config holds everything else
        self._spawn([janus, "-F", str(conf), "-o"], ready=self._listening, timeout=30)

    def _listening(self) -> bool:
        """Both HTTP listeners are up: read the namespace's sockets through the
        process's own /proc/<pid>/net/tcp."""
        want = {self.config.http_port, self.config.admin_port}
        try:
            with open(f"/proc/{self.pid}/net/tcp") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":
                        want.discard(int(parts[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            return False
        return not want

    def load_module(self) -> str:
        return "sftd.sftload.janus"

    def load_args(self) -> list[str]:
        return ["--url", self.url, "--admin-url", self.admin_url,
                "--admin-secret", self.config.admin_secret]

    def describe(self) -> dict[str, Any]:
        return {"event_loops": self.config.event_loops, "debug_level": self.config.debug_level,
                "ice_enforce_list": self.config.interface,
                "rtp_port_range": self.config.rtp_port_range,
                "plugins": ["janus.plugin.videoroom"], "transports": ["janus.transport.http"],
                "record": False, "stun": None}


def available() -> tuple[bool, str]:
    if shutil.which("janus") is None:
        return False, "janus binary not found (apt-get install janus)"
    if janus_libdir() is None:
        return False, "Janus VideoRoom plugin / HTTP transport not found"
    return True, "ok"


# ---------------------------------------------------------------- the generator side
class JanusError(RuntimeError):
    pass


def sha256_only(sdp: str) -> str:
    """Drop aiortc's sha-384/sha-512 fingerprints from an SDP sent to Janus (it
    verifies sha-256 and logs a warning per other line); the DTLS is unchanged."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    lines = [ln for ln in sdp.splitlines()
             if not ln.startswith("a=fingerprint:") or ln.startswith("a=fingerprint:sha-256")]
    return eol.join(lines) + eol


class JanusSession:
    """One Janus session over HTTP: requests, and a long-poll loop that routes
    asynchronous events to the waiting transaction (and keeps the session alive)."""

    def __init__(self, http: Any, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.id: int | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.poller: asyncio.Task[None] | None = None
        self.closed = False

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.url}{path}", json=body) as r:
            data = await r.json(content_type=None)
        if data.get("janus") == "error":
            raise JanusError(f"{body.get('janus')}: {data.get('error')}")
        return data

    async def create(self) -> None:
        data = await self._post("", {"janus": "create", "transaction": secrets.token_hex(6)})
        self.id = int(data["data"]["id"])
        self.poller = asyncio.ensure_future(self._poll())

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        data = await self._post(f"/{self.id}", {"janus": "attach", "plugin": plugin,
                                                "transaction": secrets.token_hex(6)})
        return int(data["data"]["id"])

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None,
                      timeout: float = 20) -> dict[str, Any]:
        """A plugin request; returns the plugin's reply (synchronous ``success``
        or the asynchronous ``event`` of the same transaction)."""
        tx = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[tx] = fut
        msg: dict[str, Any] = {"janus": "message", "transaction": tx, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        try:
            data = await self._post(f"/{self.id}/{handle}", msg)
            if data.get("janus") == "success":
                return data
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(tx, None)
        pd = reply.get("plugindata", {}).get("data", {})
        if "error" in pd:
            raise JanusError(f"{body.get('request')}: {pd.get('error_code')} {pd['error']}")
        return reply

    async def _poll(self) -> None:
        while not self.closed:
            try:
                async with self.http.get(f"{self.url}/{self.id}?maxev=10&rid={time.time_ns()}",
                                         timeout=aiohttp.ClientTimeout(total=70)) as r:
                    data = await r.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.closed:
                    return
                log.warning("long poll of session %s: %s", self.id, exc)
                await asyncio.sleep(1)
                continue
            for ev in data if isinstance(data, list) else [data]:
                fut = self.waiting.get(ev.get("transaction", ""))
                if fut is not None and not fut.done() and ev.get("janus") == "event":
                    fut.set_result(ev)
                elif ev.get("janus") not in ("keepalive", "ack", "webrtcup", "media"):
                    self.events.append(ev)
                    del self.events[:-20]

    async def destroy(self) -> None:
        self.closed = True
        if self.id is not None:
            with contextlib.suppress(Exception):
                await self._post(f"/{self.id}", {"janus": "destroy",
                                                 "transaction": secrets.token_hex(6)})
        if self.poller is not None:
            self.poller.cancel()
            with contextlib.suppress(BaseException):
                await self.poller


@dataclass
class Participant:
    index: int
    conf: int
    conf_pos: int
    room: int
    feed: int
    session: JanusSession
    state: str = "new"  # new | joined | closed
    pub_handle: int | None = None
    sub_handle: int | None = None
    pub_pc: Any = None
    sub_pc: Any = None
    pub_leg: Any = None  # load.LegState
    sub_leg: Any = None
    pub_attached: asyncio.Event = field(default_factory=asyncio.Event)
    sub_attached: asyncio.Event = field(default_factory=asyncio.Event)
    attach_error: BaseException | None = None
    audio_from: list[int] = field(default_factory=list)  # publisher indices subscribed
    video_from: list[int] = field(default_factory=list)
    slot_source: dict[int, tuple[int, int]] = field(default_factory=dict)  # ssrc -> (kind, idx)
    t_publish: float | None = None  # session create sent
    t_published: float | None = None  # publisher DTLS done
    t_subscribe: float | None = None  # subscriber join sent (join time starts here)


class JanusLoadGenerator(load.LoadGenerator):
    """The Janus generator: a ``load.LoadGenerator`` (fast path, producer, sampler,
    drained windows) with Janus's join, legs, counters and per-stream accounting."""

    def __init__(self, url: str, *, admin_url: str | None, admin_secret: str | None,
                 **kw: Any) -> None:
        super().__init__(url, **kw)
        self.admin_url = admin_url.rstrip("/") if admin_url else None
        self.admin_secret = admin_secret
        self.parts: list[Participant] = []
        self.rooms: list[list[Participant]] = []
        self.http: Any = None

    # -------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30))
        await super().start()

    def _release_part(self, p: Participant) -> None:
        for st in (p.pub_leg, p.sub_leg):
            if st is not None:
                self.fp.enable(st.leg, False)
        p.state = "closed"

    async def _close_part(self, p: Participant) -> None:
        self._release_part(p)
        await p.session.destroy()
        for pc in (p.pub_pc, p.sub_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5)

    async def close(self) -> None:
        self.paused = True
        await asyncio.sleep(0.1)
        for p in self.parts:
            self._release_part(p)
        await asyncio.gather(*(self._close_part(p) for p in self.parts),
                             return_exceptions=True)
        self._stop_fast_path()
        if self.http is not None:
            await self.http.close()

    # -------------------------------------------------------- legs
    def _pc(self) -> Any:
        return RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                  bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))

    def _hook(self, p: Participant, pc: Any, role: str) -> None:
        """Wrap every DTLS transport's _setup_srtp: when the handshake is
        done, take the leg (keys + socket) before the first SRTP packet."""
        done = {"v": False}
        event = p.pub_attached if role == "pub" else p.sub_attached
        for tr in pc.getTransceivers():
            dtls = tr.sender.transport
            if getattr(dtls, "_sft_hooked", False):
                continue
            dtls._sft_hooked = True
            dtls._srtp_profiles = [SRTP_AES128_CM_SHA1_80]
            original = dtls._setup_srtp

            def setup_srtp(dtls: Any = dtls, original: Any = original) -> None:
                original()
                if done["v"]:
                    return
                done["v"] = True
                try:
                    self._attach(p, dtls, role)
                except BaseException as exc:
                    p.attach_error = exc
                event.set()

            dtls._setup_srtp = setup_srtp

    def _attach(self, p: Participant, dtls: Any, role: str) -> None:
        leg, fd, protocol, ours, theirs = self._take_leg(dtls)
        pub = None
        audio_ssrc = 0
        slot_kind: dict[int, int] = {}
        if role == "pub":
            offer = sdpmod.summarize(p.pub_pc.localDescription.sdp)
            answer = sdpmod.summarize(p.pub_pc.remoteDescription.sdp)
            ao = next(m for m in offer.mlines if m.kind == "audio")
            vo = next(m for m in offer.mlines if m.kind == "video")
            aa, va = answer.by_mid(ao.mid), answer.by_mid(vo.mid)
            if aa is None or va is None:
                raise RuntimeError("Janus's answer lacks the audio or video m-line")
            level_id = aa.extmaps.get(sdpmod.AUDIO_LEVEL_URI,
                                      ao.extmaps.get(sdpmod.AUDIO_LEVEL_URI, 1))
            used = set(va.extmaps.values()) | set(vo.extmaps.values())
            rid_id = next(i for i in range(4, 15) if i not in used)  # not negotiated
            streams = media.Streams(
                audio_ssrc=ao.ssrcs[0], video_ssrc=vo.ssrcs[0],
                audio_pt=int(aa.payload_types[0]), video_pt=int(va.payload_types[0]),
                audio_level_id=level_id, rid_id=rid_id)
            pub = media.Publisher(p.index, streams, now_ns() + load.START_DELAY_NS)
            self.fp.set_publisher(leg, pub, ours)
            audio_ssrc = streams.audio_ssrc
            self.audio_index[audio_ssrc] = p.index
            p.t_published = time.monotonic()
        else:
            for ssrc, (kind, _src) in p.slot_source.items():
                self.fp.add_slot(leg, ssrc, kind)
                slot_kind[ssrc] = kind
        st = load.LegState(client=p, leg=leg, fd=fd, protocol=protocol, pub=pub,  # type: ignore[arg-type]
                           rx=media.session(theirs, inbound=True),
                           sample_rx=media.SrtpReceiver(theirs), slot_kind=slot_kind,
                           audio_ssrc=audio_ssrc)
        if role == "pub":
            p.pub_leg = st
        else:
            p.sub_leg = st
        self.legs.append(st)
        assert len(self.legs) - 1 == leg
        self.fp.enable(leg)

    def expected_publisher(self, st: Any, ssrc: int, video: bool,
                           info: Any) -> int | None:
        """Janus writes no CSRC: each subscribed stream is one known feed."""
        _kind, source = st.client.slot_source.get(ssrc, (0, None))
        return source

    # -------------------------------------------------------- joining
    async def _publish(self, p: Participant, create_room: bool) -> None:
        p.t_publish = time.monotonic()
        await p.session.create()
        p.pub_handle = await p.session.attach()
        if create_room:
            await p.session.message(p.pub_handle, {
                "request": "create", "room": p.room, "permanent": False,
                "description": f"sft-bench {p.room}", "is_private": False,
                "publishers": max(self.conference_size, 3), "bitrate": 0,
                "fir_freq": 1, "audiocodec": "opus", "videocodec": "vp8",
                "record": False, "audiolevel_ext": True, "audiolevel_event": False,
                "videoorient_ext": False, "playoutdelay_ext": False,
                "transport_wide_cc_ext": False, "notify_joining": False,
                "require_pvtid": False})
        pc = p.pub_pc = self._pc()
        for kind, mime in (("audio", "audio/opus"), ("video", "video/VP8")):
            tr = pc.addTransceiver(load.IdleTrack(kind), direction="sendonly")
            tr.setCodecPreferences([c for c in RTCRtpSender.getCapabilities(kind).codecs
                                    if c.mimeType == mime])
        offer = await pc.createOffer()
        async with _AddressPatch.lock():
            with _AddressPatch.addresses([self.local_address]):
                await pc.setLocalDescription(offer)
        self._hook(p, pc, "pub")
        reply = await p.session.message(
            p.pub_handle, {"request": "joinandconfigure", "ptype": "publisher",
                           "room": p.room, "id": p.feed, "display": f"p{p.index}",
                           "audio": True, "video": True},
            jsep={"type": "offer", "sdp": sha256_only(pc.localDescription.sdp), "trickle": False})
        jsep = reply.get("jsep")
        if not jsep or jsep.get("type") != "answer":
            raise JanusError(f"joinandconfigure: no answer in {reply}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        await asyncio.wait_for(p.pub_attached.wait(), 15)
        if p.attach_error:
            raise p.attach_error

    async def _subscribe(self, p: Participant, room: list[Participant]) -> None:
        others = [q for q in room[p.conf_pos + 1:] + room[:p.conf_pos]
                  if q.state == "joined" and q.pub_leg is not None]
        p.video_from = [q.index for q in others[: self.vstreams]]
        p.audio_from = [q.index for q in others[:AUDIO_PER_SUBSCRIBER]]
        by_index = {q.index: q for q in others}
        amid, vmid = self._pub_mids()
        streams = [{"feed": by_index[i].feed, "mid": amid} for i in p.audio_from]
        streams += [{"feed": by_index[i].feed, "mid": vmid} for i in p.video_from]
        if not streams:
            return
        p.sub_handle = await p.session.attach()
        p.t_subscribe = time.monotonic()
        reply = await p.session.message(p.sub_handle, {
            "request": "join", "ptype": "subscriber", "room": p.room,
            "use_msid": False, "autoupdate": False, "streams": streams})
        jsep = reply.get("jsep")
        if not jsep or jsep.get("type") != "offer":
            raise JanusError(f"subscriber join: no offer in {reply}")
        pd = reply["plugindata"]["data"]
        feed_to_index = {q.feed: q.index for q in others}
        offer = sdpmod.summarize(jsep["sdp"])
        for s in pd.get("streams", []):
            if s.get("type") not in ("audio", "video") or not s.get("active", True):
                continue
            m = offer.by_mid(str(s["mid"]))
            if m is None or not m.ssrcs:
                raise JanusError(f"subscriber offer: m-line {s['mid']} without a=ssrc")
            kind = 0 if s["type"] == "audio" else 1
            p.slot_source[m.ssrcs[0]] = (kind, feed_to_index[int(s["feed_id"])])
        pc = p.sub_pc = self._pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
        self._hook(p, pc, "sub")
        answer = await pc.createAnswer()
        async with _AddressPatch.lock():
            with _AddressPatch.addresses([self.local_address]):
                await pc.setLocalDescription(answer)
        await p.session.message(p.sub_handle, {"request": "start", "room": p.room},
                                jsep={"type": "answer", "sdp": sha256_only(pc.localDescription.sdp),
                                      "trickle": False})
        await asyncio.wait_for(p.sub_attached.wait(), 15)
        if p.attach_error:
            raise p.attach_error

    def _pub_mids(self) -> tuple[str, str]:
        for p in self.parts:
            if p.pub_pc is not None and p.pub_pc.localDescription is not None:
                s = sdpmod.summarize(p.pub_pc.localDescription.sdp)
                a = next(m for m in s.mlines if m.kind == "audio")
                v = next(m for m in s.mlines if m.kind == "video")
                return a.mid, v.mid
        return "0", "1"

    async def add_conferences(self, count: int) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.join_concurrency)
        t0 = time.monotonic()
        before = sum(1 for p in self.parts if p.state == "joined")

        async def step(p: Participant, coro: Any) -> None:
            async with sem:
                try:
                    await coro
                except BaseException as exc:
                    self.join_errors.append(f"p{p.index}: {type(exc).__name__}: {exc}")
                    log.warning("join failed: p%d: %s", p.index, exc)
                    await self._close_part(p)

        async def one_room() -> None:
            conf = len(self.rooms)
            members: list[Participant] = []
            self.rooms.append(members)
            self.conferences.append(members)  # type: ignore[arg-type]
            room_id = 10_000 + conf
            for pos in range(self.conference_size):
                index = len(self.parts)
                p = Participant(index=index, conf=conf, conf_pos=pos, room=room_id,
                                feed=index + 1, session=JanusSession(self.http, self.base_url))
                self.parts.append(p)
                members.append(p)
                await step(p, self._publish(p, create_room=pos == 0))
                if p.state != "closed":
                    p.state = "joined"
            # every publisher is up: subscribe everyone to the mix
            await asyncio.gather(*(step(p, self._subscribe(p, members))
                                   for p in members if p.state == "joined"))

        await asyncio.gather(*(one_room() for _ in range(count)))
        live = sum(1 for p in self.parts if p.state == "joined")
        return {"participants": live, "added": live - before,
                "failed": len(self.join_errors), "seconds": round(time.monotonic() - t0, 2),
                "errors": self.join_errors[-5:]}

    def ready(self) -> tuple[int, int]:
        ok = total = 0
        for p in self.parts:
            if p.state == "closed" or p.sub_leg is None:
                continue
            total += 1
            slots = self.fp.slot_stats(p.sub_leg.leg)
            if slots and all(s.packets for s in slots):
                ok += 1
        return ok, total

    # -------------------------------------------------------- Janus's counters
    async def _admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(6),
                "admin_secret": self.admin_secret}
        async with self.http.post(f"{self.admin_url}{path}", json=body) as r:
            return await r.json(content_type=None)

    async def _handle_packets(self, p: Participant, handle: int | None,
                              direction: str) -> int | None:
        if handle is None or p.session.id is None:
            return 0
        try:
            info = await self._admin(f"/{p.session.id}/{handle}", {"janus": "handle_info"})
        except Exception as exc:
            log.warning("handle_info: %s", exc)
            return None
        total = 0
        media_ = info.get("info", {}).get("webrtc", {}).get("media", {})
        for m in (media_.values() if isinstance(media_, dict) else media_):
            if m.get("type") not in ("audio", "video"):
                continue
            total += int(m.get("stats", {}).get(direction, {}).get("packets", 0))
        return total

    async def _metrics(self) -> dict[str, float]:
        """Janus's own packet counters in the sftd metric names the
        accounting reads: RX = RTP received on publisher handles, TX = RTP
        sent on subscriber handles (Admin API handle_info)."""
        if not self.admin_url:
            return {}
        parts = [p for p in self.parts if p.state != "closed"]
        sem = asyncio.Semaphore(16)

        async def one(p: Participant) -> tuple[int | None, int | None]:
            async with sem:
                return (await self._handle_packets(p, p.pub_handle, "in"),
                        await self._handle_packets(p, p.sub_handle, "out"))

        got = await asyncio.gather(*(one(p) for p in parts))
        if any(a is None or b is None for a, b in got):
            return {}
        return {'sft_dataplane_packets_total{counter="RX_PACKETS"}':
                float(sum(a for a, _ in got)),
                'sft_dataplane_packets_total{counter="TX_PACKETS"}':
                float(sum(b for _, b in got))}

    # -------------------------------------------------------- accounting
    def account(self, a: dict[str, Any], b: dict[str, Any], elapsed: float) -> dict[str, Any]:
        """load.LoadGenerator.account's schema, per subscribed stream."""

        def diff(st: Any, key: str) -> int:
            sb = b["legs"][st.leg]["stat"][key]
            return sb - (a["legs"][st.leg]["stat"][key] if st.leg < len(a["legs"]) else 0)

        sent: dict[tuple[int, int], int] = {}
        for p in self.parts:
            if p.pub_leg is not None:
                sent[(0, p.index)] = diff(p.pub_leg, "tx_audio")
                sent[(1, p.index)] = diff(p.pub_leg, "tx_video")
        exp = {0: 0, 1: 0}
        got = {0: 0, 1: 0}
        gaps = reordered = rx_rtp = unknown = 0
        live = 0
        for st in self.legs:
            rx_rtp += diff(st, "rx_rtp")
            unknown += diff(st, "rx_unknown_ssrc")
        for p in self.parts:
            if p.state == "closed" or p.pub_leg is None:
                continue
            live += 1
            if p.sub_leg is None:
                continue
            la = a["legs"][p.sub_leg.leg] if p.sub_leg.leg < len(a["legs"]) else None
            slots_a = {s.ssrc: s for s in la["slots"]} if la else {}
            for s in b["legs"][p.sub_leg.leg]["slots"]:
                kind, source = p.slot_source[s.ssrc]
                prev = slots_a.get(s.ssrc)
                n = s.packets - (prev.packets if prev else 0)
                got[kind] += n
                exp[kind] += sent.get((kind, source), 0)
                if s.started:
                    if prev is not None and prev.started:
                        gaps += (s.ext_max - prev.ext_max) - n
                        reordered += s.reordered - prev.reordered
                    else:
                        gaps += (s.ext_max - s.base + 1) - n
                        reordered += s.reordered
        sent_total = sum(sent.values())
        sent_a = sum(v for (k, _), v in sent.items() if k == 0)
        ma, mb = a["metrics"], b["metrics"]
        rx_key = 'sft_dataplane_packets_total{counter="RX_PACKETS"}'
        tx_key = 'sft_dataplane_packets_total{counter="TX_PACKETS"}'
        j_rx = mb[rx_key] - ma[rx_key] if rx_key in ma and rx_key in mb else None
        j_tx = mb[tx_key] - ma[tx_key] if tx_key in ma and tx_key in mb else None
        ingress_lost = int(sent_total - j_rx) if j_rx is not None else None
        loss_v = (exp[1] - got[1]) / exp[1] if exp[1] else 0.0
        loss_a = (exp[0] - got[0]) / exp[0] if exp[0] else 0.0
        loss_i = ingress_lost / sent_total if ingress_lost is not None and sent_total else 0.0
        udp_a, udp_b = a["udp"], b["udp"]
        ga, gb = a["global"], b["global"]
        tx_packets = gb["tx_packets"] - ga["tx_packets"]
        s = self.samples
        lat = s.latency_us
        join_ms = []
        for p in self.parts:
            if p.sub_leg is None or p.t_subscribe is None:
                continue
            first = self.fp.leg_stat(p.sub_leg.leg)["first_video_ns"]
            if first:
                join_ms.append(first / 1e6 - p.t_subscribe * 1000)
        publish_ms = [1000 * (p.t_published - p.t_publish) for p in self.parts
                      if p.t_published and p.t_publish]
        return {
            "participants": live, "conferences": len(self.rooms),
            "conference_size": self.conference_size, "seconds": round(elapsed, 3),
            "subscriptions": {"audio_per_subscriber": AUDIO_PER_SUBSCRIBER,
                              "video_per_subscriber": self.vstreams},
            "sent": {"audio": sent_a, "video": sent_total - sent_a, "total": sent_total,
                     "pps": round(sent_total / elapsed, 1)},
            "received": {"rtp": rx_rtp, "pps": round(rx_rtp / elapsed, 1),
                         "audio": got[0], "video_expected_sources": got[1],
                         "video_unexpected_sources": 0, "unknown_ssrc": unknown},
            "video": {"expected": exp[1], "received": got[1], "lost": exp[1] - got[1],
                      "loss": loss_v},
            "audio": {"received": got[0], "expected": exp[0], "lost": exp[0] - got[0],
                      "seq_gaps": gaps, "reordered": reordered, "loss": loss_a},
            "sft": {"rx": j_rx, "tx": j_tx,
                    "counters": {"RX_PACKETS": j_rx, "TX_PACKETS": j_tx},
                    "ingress_lost": ingress_lost, "ingress_loss": loss_i,
                    "egress_lost": int(j_tx - rx_rtp) if j_tx is not None else None},
            "generator": {
                "udp_drops": sum(udp_b.get(k, 0) - udp_a.get(k, 0)
                                 for k in ("RcvbufErrors", "InErrors")),
                "tx_packets": tx_packets,
                "tx_late_mean_us": round((gb["tx_late_sum_ns"] - ga["tx_late_sum_ns"])
                                         / max(1, tx_packets) / 1000, 1),
                "tx_late_max_us": round(gb["tx_late_max_ns"] / 1000, 1),
                "tx_late_over_1ms": gb["tx_late_over_1ms"] - ga["tx_late_over_1ms"],
                "tx_errors": sum(lg["stat"]["tx_errors"] for lg in b["legs"]),
                "ctrl_dropped": gb["ctrl_dropped"],
                "samples_dropped": gb["samples_dropped"] - ga["samples_dropped"]},
            "loss": max(loss_v, loss_a, loss_i),
            "samples": {"decrypted": s.decrypted, "failed": s.failed,
                        "route_ok": s.route_ok, "route_bad": s.route_bad,
                        "errors": s.errors[:5]},
            "latency_us": {"p50": load._pct(lat, 50), "p99": load._pct(lat, 99),
                           "n": len(lat), "max": max(lat) if lat else None},
            "join_ms": {"p50": load._pct(join_ms, 50), "p99": load._pct(join_ms, 99),
                        "n": len(join_ms),
                        "mean": statistics.fmean(join_ms) if join_ms else None,
                        "what": "subscriber join sent -> first forwarded video packet"},
            "publish_ms": {"p50": load._pct(publish_ms, 50),
                           "p99": load._pct(publish_ms, 99), "n": len(publish_ms)},
            "firs": sum(st.firs for st in self.legs),
            "keyframes": sum(self.fp.leg_stat(st.leg)["keyframes"] for st in self.legs
                             if st.pub is not None),
            "rtcp_bad": sum(st.rtcp_bad for st in self.legs),
            "join_failures": len(self.join_errors),
        }


# ---------------------------------------------------------------- CLI
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sft-load-janus",
                                description="The sft-load mix against Janus VideoRoom")
    p.add_argument("--url", required=True, help="Janus HTTP API, e.g. http://10.0.0.1:8088/janus")
    p.add_argument("--admin-url", help="Janus Admin API, e.g. http://10.0.0.1:7088/admin "
                   "(ingress/egress counters)")
    p.add_argument("--admin-secret")
    p.add_argument("--local-address", default="127.0.0.1")
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--conference-size", type=int, default=10)
    p.add_argument("--vstreams", type=int, default=9)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--join-concurrency", type=int, default=4)
    p.add_argument("--control", action="store_true")
    p.add_argument("--json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    gen = JanusLoadGenerator(
        url=args.url, admin_url=args.admin_url, admin_secret=args.admin_secret,
        local_address=args.local_address, conference_size=args.conference_size,
        vstreams=args.vstreams, sample_every=args.sample_every,
        join_concurrency=args.join_concurrency)
    return load.report(asyncio.run(load.run_generator(gen, args)), args)


if __name__ == "__main__":
    sys.exit(main())
