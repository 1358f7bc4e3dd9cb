"""``sft-load``: N participants in M conferences against a running SFT.

Each participant is a :class:`sftclient.WireClient` (CONFCONN, SETUP answer,
ICE, DTLS-SRTP, data channel, CONFPART authorisation, CONFSTREAMS, PING) whose
tracks never produce a frame: aiortc only does the handshake and declares the
SSRCs (``a=ssrc`` on the audio and video m-lines of the answer). When DTLS
finishes, the leg's SRTP keys are exported and its UDP socket (the ICE-selected
5-tuple) is handed to the native fast path: the C threads send the
pre-protected mix and count every forwarded packet, and hand STUN, DTLS and
SRTCP back here (aioice keeps answering consent checks, SCTP keeps the data
channel, FIR/PLI ask for a keyframe).

Modes: standalone (join, measure once, print) or ``--control`` (JSON lines on
stdin/stdout, driven by ``sft-bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import secrets
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sftd import econn
from sftd.sftclient import WireClient
from sftd.sftclient import sdp as sdpmod

from . import media
from .fastpath import FastPath, now_ns
from .sink import XdpSink, interface_of

log = logging.getLogger("sftd.sftload")

START_DELAY_NS = 20_000_000  # a new or resumed publisher's first packet is due this late
SAMPLE_TICK = 0.1
DRAIN_SECONDS = 0.3


class IdleTrack(MediaStreamTrack):
    """A track that never yields a frame: aiortc declares an SSRC but sends no RTP."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] | None = None

    async def recv(self) -> Any:
        self._never = asyncio.get_running_loop().create_future()
        await self._never
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        if self._never is not None and not self._never.done():
            self._never.cancel()


class LoadClient(WireClient):
    """A WireClient whose media plane is the native fast path.

    The one thing WireClient has no hook for: running code when the DTLS
    transport exists but before the handshake (to export keys and take the
    socket before the first SRTP packet). ``_negotiate`` is extended for that.
    """

    def __init__(self, gen: LoadGenerator, index: int, conf_pos: int, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(*args, audio=False, video=False, **kwargs)
        self.audio_track = IdleTrack("audio")
        self.video_track = IdleTrack("video")
        self.gen = gen
        self.index = index
        self.conf_pos = conf_pos
        self.members: list[LoadClient] = []  # the conference's clients, join order
        self.attached = asyncio.Event()
        self.attach_error: BaseException | None = None
        self.leg: LegState | None = None

    async def _negotiate(self, offer: str) -> None:
        await super()._negotiate(offer)
        assert self.pc is not None
        dtls = self.pc.getTransceivers()[0].sender.transport
        original = dtls._setup_srtp

        def setup_srtp() -> None:
            original()
            try:
                self.gen.attach(self, dtls)
            except BaseException as exc:  # reported by add_conference
                self.attach_error = exc
            self.attached.set()

        dtls._setup_srtp = setup_srtp


@dataclass
class LegState:
    client: LoadClient
    leg: int
    fd: int
    protocol: Any
    pub: media.Publisher | None  # None: a leg that only receives (Janus subscribers)
    rx: Any  # libsrtp, for SRTCP from the SFT
    sample_rx: media.SrtpReceiver  # sampled SRTP, with the ROC of the receive side (self.rx)
    slot_kind: dict[int, int]
    audio_ssrc: int
    firs: int = 0
    rtcp_bad: int = 0


@dataclass
class Samples:
    decrypted: int = 0
    failed: int = 0
    route_ok: int = 0
    route_bad: int = 0
    # built at the generator -> reached its interface: the SFT's share
    latency_us: list[float] = field(default_factory=list)
    # due -> read by the generator's receiving thread: the generator's lateness too
    latency_e2e_us: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _spread(values: list[float]) -> dict[str, Any]:
    return {"p50": _pct(values, 50), "p99": _pct(values, 99), "n": len(values),
            "max": max(values) if values else None}


class LoadGenerator:
    def __init__(self, base_url: str, *, local_address: str, conference_size: int = 10,
                 vstreams: int = 9, sample_every: int = 100, metrics_url: str | None = None,
                 join_concurrency: int = 4, sink: str = "socket",
                 samples_per_second: float = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self.local_address = local_address
        self.conference_size = conference_size
        self.vstreams = vstreams
        self.metrics_url = metrics_url
        self.join_concurrency = join_concurrency
        # --sink xdp: BPF counts and drops media, passing 1 in sample_every to the
        # sockets, where the C receiver samples every packet it still gets
        self.fp = FastPath(1 if sink == "xdp" else sample_every)
        self.sink = (XdpSink(self.fp, interface_of(local_address), sample_every,
                             f"load{os.getpid()}") if sink == "xdp" else None)
        self.rx: FastPath | XdpSink = self.sink or self.fp  # receive-side statistics
        # the sampler decrypts in Python: at 1 in 100 and N = 200 it was the largest
        # item of the event loop, so with the sink each window samples about this
        # many per second (0: 1 in sample_every whatever the load)
        self.min_sample_every = sample_every
        self.samples_per_second = samples_per_second
        self.legs: list[LegState] = []
        self.clients: list[LoadClient] = []
        self.by_userid: dict[str, LoadClient] = {}
        self.audio_index: dict[int, int] = {}  # publisher audio SSRC -> client index
        self.conferences: list[list[LoadClient]] = []
        self._paused = False
        self.measuring = False
        self.samples = Samples()
        self.join_errors: list[str] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.fp.start()
        self._loop.add_reader(self.fp.ctrl_fd, self._on_ctrl)
        self._tasks.append(asyncio.ensure_future(self._sampler()))
        self.started = True

    def _release(self, client: LoadClient) -> None:
        """Stop the C threads touching a leg's socket before aiortc closes it
        (a closed fd would fail sendmmsg with EBADF, a reused one would be worse)."""
        if client.leg is not None:
            self.fp.enable(client.leg.leg, False)
            client.state = "closed"

    async def close(self) -> None:
        self.paused = True
        for c in self.clients:  # HANGUP goes out over the data channel (ctrl path)
            if c.state == "joined":
                with contextlib.suppress(Exception):
                    c._send(c._message(econn.HANGUP, False))
        await asyncio.sleep(0.3)
        for c in self.clients:
            self._release(c)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        self._stop_fast_path()

    def _stop_fast_path(self) -> None:
        """Cancel the background tasks and stop and close the native fast path."""
        for t in self._tasks:
            t.cancel()
        if self._loop is not None:
            self._loop.remove_reader(self.fp.ctrl_fd)
        self.fp.stop()
        self.fp.close()
        if self.sink is not None:
            self.sink.close()

    # ------------------------------------------------------------ legs
    def _take_leg(self, dtls: Any) -> tuple[int, int, Any, bytes, bytes]:
        """A leg whose DTLS is done: its SRTP keys (ours, theirs) exported, its
        ICE-selected socket handed to the fast path: (leg, fd, protocol, ours, theirs)."""
        profile = dtls._ssl.get_selected_srtp_profile().decode()
        material = dtls._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (media.KEY_LEN + media.SALT_LEN))
        ours, theirs = media.srtp_pair(profile, material, dtls._role)
        pair = dtls.transport._connection._nominated[1]
        protocol = pair.protocol
        fd = protocol.transport.get_extra_info("socket").fileno()
        assert self._loop is not None
        self._loop._remove_reader(fd)  # type: ignore[attr-defined]  # C reads it now
        leg = self.fp.add_leg(fd, pair.remote_addr)
        if self.sink is not None:
            self.sink.add_leg(leg, protocol.transport.get_extra_info("sockname"))
        return leg, fd, protocol, ours, theirs

    def attach(self, client: LoadClient, dtls: Any) -> None:
        """DTLS is done: export keys, take the socket, start publishing."""
        leg, fd, protocol, ours, theirs = self._take_leg(dtls)
        offer = sdpmod.summarize(client.offer or "")
        slot_kind: dict[int, int] = {}
        for m in offer.mlines:
            if m.mid in ("audio", "video") or m.kind not in ("audio", "video"):
                continue
            for ssrc in m.ssrcs:
                kind = 0 if m.kind == "audio" else 1
                self.fp.add_slot(leg, ssrc, kind)
                if self.sink is not None:
                    self.sink.add_slot(leg, ssrc, kind)
                slot_kind[ssrc] = kind
        answer = sdpmod.summarize(client.answer or "")
        am, vm = answer.by_mid("audio"), answer.by_mid("video")
        if am is None or vm is None or not am.ssrcs or not vm.ssrcs:
            raise RuntimeError("the answer declares no audio/video SSRC")
        streams = media.Streams(
            audio_ssrc=am.ssrcs[0], video_ssrc=vm.ssrcs[0],
            audio_pt=int(am.payload_types[0]), video_pt=int(vm.payload_types[0]),
            audio_level_id=am.extmaps.get(sdpmod.AUDIO_LEVEL_URI, 1),
            rid_id=vm.extmaps.get(sdpmod.RID_URI, 4))
        pub = media.Publisher(client.index, streams, now_ns() + START_DELAY_NS)
        self.fp.set_publisher(leg, pub, ours)
        state = LegState(client=client, leg=leg, fd=fd, protocol=protocol, pub=pub,
                         rx=media.session(theirs, inbound=True),
                         sample_rx=media.SrtpReceiver(theirs), slot_kind=slot_kind,
                         audio_ssrc=streams.audio_ssrc)
        client.leg = state
        self.audio_index[streams.audio_ssrc] = client.index
        self.legs.append(state)
        assert len(self.legs) - 1 == leg
        self.fp.enable(leg)

    def _on_ctrl(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fp.ctrl_fd, 8)
        for leg, data, addr, *_ in self.fp.pop(samples=False):
            st = self.legs[leg]
            if data[0] >= 128 and 192 <= data[1] <= 223:
                try:
                    plain = st.rx.unprotect_rtcp(data)
                except Exception:
                    st.rtcp_bad += 1
                    continue
                if st.pub is not None and media.wants_keyframe(plain):  # Janus: subscriber legs
                    st.firs += 1
                    self.fp.request_keyframe(st.leg)
                continue
            try:
                st.protocol.datagram_received(data, addr)
            except Exception:
                log.exception("aioice rejected a datagram on leg %d", leg)

    # ------------------------------------------------------------ media tasks
    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_TICK)
            self.drain_samples()

    def drain_samples(self) -> None:
        s = self.samples
        for leg, data, _addr, recv_ns, roc, kernel_ns in self.rx.pop_samples():
            st = self.legs[leg]
            try:
                plain = st.sample_rx.unprotect(data, roc)
            except Exception as exc:
                s.failed += 1
                if len(s.errors) < 20:
                    s.errors.append(f"leg {leg} ssrc {int.from_bytes(data[8:12], 'big')} seq "
                                    f"{int.from_bytes(data[2:4], 'big')} len {len(data)}: {exc}")
                continue
            s.decrypted += 1
            ssrc = int.from_bytes(data[8:12], "big")
            video = st.slot_kind.get(ssrc, 0) == 1
            try:
                info = media.parse_sample(plain, video)
            except Exception:
                s.route_bad += 1
                continue
            if self.expected_publisher(st, ssrc, video, info) == info.publisher:
                s.route_ok += 1
            else:
                s.route_bad += 1
            if self.measuring:
                s.latency_e2e_us.append((recv_ns - info.due_ns) / 1000)
                if kernel_ns:
                    s.latency_us.append((kernel_ns - info.built_ns) / 1000)

    def expected_publisher(self, st: LegState, ssrc: int, video: bool,
                           info: media.SampleInfo) -> int | None:
        """The publisher whose packet this slot must carry: the one its CSRC names."""
        if video:
            person = st.client.people_for("video").get(info.csrc or 0)
            sender = self.by_userid.get(person.userid) if person else None
            return sender.index if sender else None
        return self.audio_index.get(info.csrc or 0)

    # ------------------------------------------------------------ joining
    async def add_conferences(self, count: int) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.join_concurrency)
        t0 = time.monotonic()
        before = len(self.legs)

        async def one_conference() -> None:
            convid = secrets.token_hex(16)
            members: list[LoadClient] = []
            self.conferences.append(members)
            for pos in range(self.conference_size):
                async with sem:
                    client = LoadClient(self, len(self.clients), pos, self.base_url, convid,
                                        local_addresses=[self.local_address],
                                        vstreams=self.vstreams)
                    self.clients.append(client)
                    self.by_userid[client.userid] = client
                    members.append(client)
                    client.members = members
                    try:
                        await client.join()
                        await asyncio.wait_for(client.attached.wait(), 15)
                        if client.attach_error:
                            raise client.attach_error
                        await client.wait_datachannel(10)
                    except BaseException as exc:
                        self.join_errors.append(f"{type(exc).__name__}: {exc}")
                        log.warning("join failed: %s", exc)
                        self._release(client)
                        await client.close()

        await asyncio.gather(*(one_conference() for _ in range(count)))
        return {"participants": len(self.legs), "added": len(self.legs) - before,
                "failed": len(self.join_errors), "seconds": round(time.monotonic() - t0, 2),
                "errors": self.join_errors[-5:]}

    def expected_video_sources(self, client: LoadClient) -> set[int]:
        """Publisher indices whose video this receiver subscribed to (CONFSTREAMS list)."""
        out = set()
        for p in client.others()[: self.vstreams]:
            sender = self.by_userid.get(p.get("userid", ""))
            if sender is not None and sender.leg is not None and sender.state != "closed":
                out.add(sender.index)
        return out

    def ready(self) -> tuple[int, int]:
        """(receivers getting every expected stream, live receivers)."""
        ok = total = 0
        self.rx.refresh()
        for st in self.legs:
            c = st.client
            if c.state == "closed":
                continue
            total += 1
            csrcs = self.rx.csrc_stats(st.leg)
            people = c.people_for("video")
            got_video = set()
            for (kind, csrc), n in csrcs.items():
                if kind == 1 and n and csrc in people:
                    sender = self.by_userid.get(people[csrc].userid)
                    if sender:
                        got_video.add(sender.index)
            want = self.expected_video_sources(c)
            audio_slots = sum(1 for s in self.rx.slot_stats(st.leg) if s.kind == 0 and s.packets)
            # audio slot 0 carries the key generator (the first live member), which
            # is nobody for the key generator itself
            key_generator = next((m for m in c.members if m.state != "closed"), None)
            want_audio = min(4 if key_generator is c else 5, len(want) and len(c.others()))
            if want <= got_video and audio_slots >= want_audio:
                ok += 1
        return ok, total

    async def warm_up(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ok, total = self.ready()
            if ok == total or time.monotonic() > deadline:
                return {"ready": ok, "receivers": total}
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------ measuring
    async def pause_and_drain(self) -> None:
        self.paused = True
        # until nothing has arrived for DRAIN_SECONDS (an overloaded SFT may
        # still hold packets in its queues; a snapshot must not cut through them)
        deadline = time.monotonic() + 5
        last = self._rx_rtp()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < DRAIN_SECONDS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = self._rx_rtp()
            if now != last:
                last, quiet_since = now, time.monotonic()
        self.drain_samples()

    def _rx_rtp(self) -> int:
        """RTP received on every leg (RTCP and STUN keep arriving while paused)."""
        self.rx.refresh()
        return sum(self.rx.leg_stat(st.leg)["rx_rtp"] for st in self.legs)

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        """Paused, the C sender generates nothing; resumed, every publisher's
        schedule continues from a moment ahead (sequence numbers continue)."""
        if value:
            self.fp.pause()
        elif self._paused:
            self.fp.resume(now_ns() + START_DELAY_NS)
        self._paused = value

    def resume(self) -> None:
        self.paused = False

    async def _metrics(self) -> dict[str, float]:
        if not self.metrics_url:
            return {}
        try:
            async with aiohttp.ClientSession() as s, s.get(self.metrics_url) as r:
                text = await r.text()
        except Exception as exc:
            log.warning("metrics unavailable: %s", exc)
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    async def snapshot(self) -> dict[str, Any]:
        legs = []
        self.rx.refresh()
        for st in self.legs:
            legs.append({"stat": self.rx.leg_stat(st.leg), "slots": self.rx.slot_stats(st.leg),
                         "csrcs": self.rx.csrc_stats(st.leg), "firs": st.firs})
        return {"t": time.monotonic(), "legs": legs, "global": self.fp.global_stat(),
                "metrics": await self._metrics(), "udp": udp_counters()}

    async def pace_sampling(self, over: float = 1.0) -> None:
        """Sets the sink's 1-in-N so that about ``samples_per_second`` reach the
        sampler at the rate received over the last ``over`` seconds."""
        if self.sink is None or not self.samples_per_second:
            return
        t0, before = time.monotonic(), self._rx_rtp()
        await asyncio.sleep(over)
        after = self._rx_rtp()  # reading every leg's counts takes a while at hundreds
        pps = (after - before) / (time.monotonic() - t0)
        self.sink.set_sample_every(max(self.min_sample_every,
                                       math.ceil(pps / self.samples_per_second)))

    async def measure(self, duration: float, emit: Any = None) -> dict[str, Any]:
        await self.pace_sampling()
        await self.pause_and_drain()
        a = await self.snapshot()
        self.samples = Samples()
        self.resume()
        self.measuring = True
        t0 = time.monotonic()
        if emit:
            emit({"event": "window_start"})
        await asyncio.sleep(duration)
        if emit:
            emit({"event": "window_end"})
        elapsed = time.monotonic() - t0
        self.measuring = False
        await self.pause_and_drain()
        b = await self.snapshot()
        self.resume()
        return self.account(a, b, elapsed)

    def account(self, a: dict[str, Any], b: dict[str, Any], elapsed: float) -> dict[str, Any]:
        sent_a: dict[int, int] = {}
        sent_v: dict[int, int] = {}
        for st in self.legs:
            sb = b["legs"][st.leg]["stat"]
            sa = a["legs"][st.leg]["stat"] if st.leg < len(a["legs"]) else defaultdict(int)
            sent_a[st.client.index] = sb["tx_audio"] - sa["tx_audio"]
            sent_v[st.client.index] = sb["tx_video"] - sa["tx_video"]
        v_expected = v_received = v_unexpected = 0
        a_received = a_gaps = a_reordered = 0
        rx_rtp = unknown_ssrc = 0
        live = 0
        for st in self.legs:
            c = st.client
            lb = b["legs"][st.leg]
            la = a["legs"][st.leg] if st.leg < len(a["legs"]) else None
            rx_rtp += lb["stat"]["rx_rtp"] - (la["stat"]["rx_rtp"] if la else 0)
            unknown_ssrc += lb["stat"]["rx_unknown_ssrc"] - (
                la["stat"]["rx_unknown_ssrc"] if la else 0)
            if c.state == "closed":
                continue
            live += 1
            want = self.expected_video_sources(c)
            v_expected += sum(sent_v.get(i, 0) for i in want)
            people = c.people_for("video")
            csrc_a = la["csrcs"] if la else {}
            for (kind, csrc), n in lb["csrcs"].items():
                if kind != 1:
                    continue
                n -= csrc_a.get((kind, csrc), 0)
                person = people.get(csrc)
                sender = self.by_userid.get(person.userid) if person else None
                if sender is not None and sender.index in want:
                    v_received += n
                else:
                    v_unexpected += n
            slots_a = {s.ssrc: s for s in la["slots"]} if la else {}
            for s in lb["slots"]:
                if s.kind != 0 or not s.started:
                    continue
                prev = slots_a.get(s.ssrc)
                if prev is not None and prev.started:
                    exp, got = s.ext_max - prev.ext_max, s.packets - prev.packets
                    a_reordered += s.reordered - prev.reordered
                else:
                    exp, got = s.ext_max - s.base + 1, s.packets
                    a_reordered += s.reordered
                a_received += got
                a_gaps += exp - got
        sent_total = sum(sent_a.values()) + sum(sent_v.values())
        leg_pairs = [(a["legs"][st.leg] if st.leg < len(a["legs"]) else None, b["legs"][st.leg])
                     for st in self.legs]
        ma, mb = a["metrics"], b["metrics"]

        def mdiff(counter: str) -> float | None:
            key = f'sft_dataplane_packets_total{{counter="{counter}"}}'
            if key in ma and key in mb:
                return mb[key] - ma[key]
            return None

        sft_rx, sft_tx = mdiff("RX_PACKETS"), mdiff("TX_PACKETS")
        counters = {}
        for key in mb:
            if key.startswith("sft_dataplane_packets_total{"):
                name = key.split('"')[1]
                counters[name] = mb[key] - ma.get(key, 0)
        ingress_lost = (sent_total - sft_rx) if sft_rx is not None else None
        udp_a, udp_b = a["udp"], b["udp"]
        gen_drops = sum(udp_b.get(k, 0) - udp_a.get(k, 0) for k in ("RcvbufErrors", "InErrors"))
        ga, gb = a["global"], b["global"]
        tx_packets = gb["tx_packets"] - ga["tx_packets"]
        loss_video = (v_expected - v_received) / v_expected if v_expected else 0.0
        loss_audio = a_gaps / (a_received + a_gaps) if a_received + a_gaps else 0.0
        loss_ingress = ingress_lost / sent_total if ingress_lost is not None and sent_total else 0.0
        s = self.samples
        joins = [(c.leg and self.rx.leg_stat(c.leg.leg)["first_video_ns"], c)
                 for c in self.clients if c.conf_pos > 0 and c.leg is not None]
        join_ms = [(ns / 1e6 - c.t_confconn * 1000) for ns, c in joins
                   if ns and c.t_confconn is not None]
        return {
            "participants": live, "conferences": len(self.conferences),
            "conference_size": self.conference_size, "seconds": round(elapsed, 3),
            "sent": {"audio": sum(sent_a.values()), "video": sum(sent_v.values()),
                     "total": sent_total, "pps": round(sent_total / elapsed, 1)},
            "received": {"rtp": rx_rtp, "pps": round(rx_rtp / elapsed, 1),
                         "audio": a_received, "video_expected_sources": v_received,
                         "video_unexpected_sources": v_unexpected,
                         "unknown_ssrc": unknown_ssrc},
            "video": {"expected": v_expected, "received": v_received,
                      "lost": v_expected - v_received, "loss": loss_video},
            "audio": {"received": a_received, "seq_gaps": a_gaps, "reordered": a_reordered,
                      "loss": loss_audio},
            "sft": {"rx": sft_rx, "tx": sft_tx, "counters": counters, "ingress_lost": ingress_lost,
                    "ingress_loss": loss_ingress,
                    "egress_lost": (sft_tx - rx_rtp) if sft_tx is not None else None},
            "generator": {"udp_drops": gen_drops, "tx_packets": tx_packets,
                          "sample_every": (self.sink.sample_every if self.sink
                                           else self.min_sample_every),
                          "sink": "socket" if self.sink is None else "xdp",
                          "socket_datagrams": gb["rx_datagrams"] - ga["rx_datagrams"],
                          "tx_late_mean_us": round((gb["tx_late_sum_ns"] - ga["tx_late_sum_ns"])
                                                   / max(1, tx_packets) / 1000, 1),
                          "tx_late_max_us": round(gb["tx_late_max_ns"] / 1000, 1),
                          "tx_late_over_1ms": gb["tx_late_over_1ms"] - ga["tx_late_over_1ms"],
                          # built but not yet sent after 1 ms: would count as SFT latency
                          "tx_hold_over_1ms": gb["tx_hold_over_1ms"] - ga["tx_hold_over_1ms"],
                          "tx_errors": sum(lg["stat"]["tx_errors"] for lg in b["legs"]),
                          "tx_errnos": sorted({os.strerror(lg["stat"]["tx_last_errno"])
                                               for lg in b["legs"]
                                               if lg["stat"]["tx_last_errno"]}),
                          "ctrl_dropped": gb["ctrl_dropped"],
                          "samples_dropped": gb["samples_dropped"] - ga["samples_dropped"]},
            "loss": max(loss_video, loss_audio, loss_ingress),
            "samples": {"decrypted": s.decrypted, "failed": s.failed, "route_ok": s.route_ok,
                        "route_bad": s.route_bad, "errors": s.errors[:5]},
            "latency_us": _spread(s.latency_us),
            "latency_e2e_us": _spread(s.latency_e2e_us),
            "join_ms": {"p50": _pct(join_ms, 50), "p99": _pct(join_ms, 99), "n": len(join_ms),
                        "mean": statistics.fmean(join_ms) if join_ms else None},
            # in the window, as every other count here
            "firs": sum(lb["firs"] - (la["firs"] if la else 0) for la, lb in leg_pairs),
            "keyframes": sum(lb["stat"]["keyframes"] - (la["stat"]["keyframes"] if la else 0)
                             for la, lb in leg_pairs),
            "join_failures": len(self.join_errors),
        }


def udp_counters() -> dict[str, int]:
    """Udp: counters of this network namespace (/proc/net/snmp)."""
    try:
        lines = [ln.split() for ln in open("/proc/net/snmp") if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
    except (OSError, IndexError, ValueError):
        return {}


# ---------------------------------------------------------------- CLI
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sft-load", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="SFT signalling URL, e.g. http://10.0.0.1:8585")
    p.add_argument("--metrics-url", help="SFT /metrics URL (ingress/egress counters)")
    p.add_argument("--local-address", default="127.0.0.1",
                   help="the only address ICE gathers on (the generator's veth address)")
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--conference-size", type=int, default=10)
    p.add_argument("--vstreams", type=int, default=9)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=10.0, help="max seconds to wait until "
                   "every receiver gets every expected stream")
    p.add_argument("--sample-every", type=int, default=100,
                   help="decrypt and check 1 received packet in N per leg (at least N, "
                        "with --samples-per-second)")
    p.add_argument("--samples-per-second", type=float, default=0,
                   help="with --sink xdp: before each window, sample 1 in N with N set "
                        "to give about this many samples a second (0: 1 in --sample-every)")
    p.add_argument("--sink", choices=("socket", "xdp"), default="socket",
                   help="xdp: count and drop received media in a BPF program (TC ingress) on "
                        "the generator's interface, only sampled packets reach the sockets "
                        "(needs root)")
    p.add_argument("--join-concurrency", type=int, default=4)
    p.add_argument("--control", action="store_true",
                   help="JSON-lines commands on stdin (used by sft-bench)")
    p.add_argument("--json", help="write the result here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


async def _control(gen: LoadGenerator, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _emit({"event": "ready", "pid": os.getpid()})
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        what = cmd.get("cmd")
        if what == "add":
            gen.paused = bool(cmd.get("pause_while_joining", False))
            res = await gen.add_conferences(int(cmd["conferences"]))
            gen.resume()
            res.update(await gen.warm_up(float(cmd.get("warmup", args.warmup))))
            # The calls are long-lived objects: leave them out of later collections,
            # which otherwise walk every call on the generator's core while it measures.
            gc.collect()
            gc.freeze()
            _emit({"event": "added", **res})
        elif what == "measure":
            # No collections inside a window: they walked the young objects of every
            # call (RTCP, feedback) on the generator's core, about 5 % of it at
            # N = 200 (perf); what a window leaves behind is collected after it.
            gc.disable()
            try:
                res = await gen.measure(float(cmd["duration"]), _emit)
            finally:
                gc.enable()
                gc.collect()
                gc.freeze()
            _emit({"event": "result", **res})
        elif what == "quit":
            return
        else:
            _emit({"event": "error", "error": f"unknown command {what!r}"})


async def run_generator(gen: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """Join, warm up and measure with ``gen`` (this module's LoadGenerator or the
    Janus one); closes it. None in --control mode."""
    await gen.start()
    try:
        if args.control:
            await _control(gen, args)
            return None
        conferences = max(1, -(-args.participants // args.conference_size))
        joined = await gen.add_conferences(conferences)
        joined.update(await gen.warm_up(args.warmup))
        log.info("joined: %s", joined)
        result = await gen.measure(args.duration)
        result["join"] = joined
        return result
    finally:
        await gen.close()


def report(result: dict[str, Any] | None, args: argparse.Namespace) -> int:
    """Print (and with --json write) the result; non-zero on loss or bad samples."""
    if result is None:
        return 0
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0 if result["loss"] <= 0.001 and not result["samples"]["failed"] else 1


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    gen = LoadGenerator(args.url, local_address=args.local_address,
                        conference_size=args.conference_size, vstreams=args.vstreams,
                        sample_every=args.sample_every, metrics_url=args.metrics_url,
                        join_concurrency=args.join_concurrency, sink=args.sink,
                        samples_per_second=args.samples_per_second)
    return report(asyncio.run(run_generator(gen, args)), args)


if __name__ == "__main__":
    sys.exit(main())
