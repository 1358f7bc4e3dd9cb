"""A leg: one participant's ICE + DTLS-SRTP + SCTP connection, built from
aiortc/aioice parts because the SFT writes its own offer.

What differs from a stock RTCPeerConnection:
  * host candidates come from our interfaces and ``--media-ports``, with the
    ``-A`` address advertised instead of the bound one (1:1 NAT);
  * RTP/RTCP (first byte 128–191) is taken off the socket before aioice's
    STUN parser and queue: only packets from the ICE-nominated remote address
    are accepted, RTP goes to the data plane and RTCP to the controller;
  * the DTLS transport offers the data plane's SRTP profiles and exports the
    negotiated keys (RFC 5764) instead of keeping them to itself.

This touches aiortc/aioice internals (``_connection``, ``_nominated``,
``_setup_srtp``, ``_srtp_profiles``); pyproject.toml pins both versions and the
end-to-end tests exercise every one of them.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice import Candidate, stun
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import CandidatePair, Connection, StunProtocol, candidate_pair_priority
from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import (
    SRTP_PROFILES,
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
)
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceParameters, RTCIceTransport
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from .dataplane import SrtpKeys
from .sdp import Answer
from .srtp import srtp_session
from .supervise import detached

log = logging.getLogger("sftd.leg")

DATA_CHANNEL_LABEL = "calling-3.0"


MAX_REMOTE_CANDIDATES = 16  # a browser has a handful; more only serves scanning


def usable_candidates(candidates: list[Candidate], media_addresses: list[str], *,
                      check_route: bool = True,
                      refused: collections.Counter[str] | None = None) -> list[Candidate]:
    """The answer's candidates the SFT will check, best first: IP addresses of a
    family the media addresses have, never unspecified/multicast/broadcast/reserved,
    loopback only when media runs on loopback, and (``check_route``) reachable from
    a media address by the kernel's routes; at most MAX_REMOTE_CANDIDATES. Each
    refusal is counted in ``refused`` by reason."""
    own = [ipaddress.ip_address(a) for a in media_addresses]
    families: set[int] = {a.version for a in own}
    kept: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: -c.priority):
        reason = _candidate_problem(cand.host, own, families, check_route)
        if reason is None and len(kept) >= MAX_REMOTE_CANDIDATES:
            reason = "candidate_excess"
        if reason is None:
            kept.append(cand)
        elif refused is not None:
            refused[reason] += 1
    return kept


def _candidate_problem(host: str, own: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
                       families: set[int], check_route: bool) -> str | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None if host.endswith(".local") else "candidate_not_ip"  # mDNS names resolve locally
    if ip.version not in families:
        return "candidate_family"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or \
            ip == ipaddress.ip_address("255.255.255.255") or \
            (ip.version == 4 and ip in ipaddress.ip_network("0.0.0.0/8")):
        return "candidate_special"
    if ip.is_loopback and not any(a.is_loopback for a in own):
        return "candidate_unroutable"
    if check_route and not any(_routable(str(a), str(ip)) for a in own if a.version == ip.version):
        return "candidate_unroutable"
    return None


def _routable(source: str, destination: str) -> bool:
    """Whether the kernel routes from ``source`` to ``destination`` (connect() on a
    UDP socket only looks the route up; nothing is sent)."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((source, 0))
            sock.connect((destination, 9))
        except OSError:
            return False
    return True


class PortsExhausted(RuntimeError):
    """No free UDP port left in --media-ports."""


class PortRange:
    """Hands out UDP ports of ``--media-ports``; binding proves a port free."""

    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad media port range {low}-{high}")
        self.low, self.high = low, high
        self.in_use: set[int] = set()
        self.gone: set[str] = set()  # media addresses that no longer exist

    def bind(self, addresses: list[str]) -> tuple[int, list[socket.socket]]:
        """Bind the same free port on every address that still exists; returns
        (port, sockets). An address whose interface went away since start is
        skipped (and logged once) while another one is left."""
        size = self.high - self.low + 1
        start = random.randrange(size)
        for step in range(size):
            port = self.low + (start + step) % size
            if port in self.in_use:
                continue
            sockets: list[socket.socket] = []
            try:
                for address in addresses:
                    sock = self._bound(address, port)
                    if sock is not None:
                        sockets.append(sock)
            except OSError as exc:
                for sock in sockets:
                    sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            if not sockets:
                raise OSError(errno.EADDRNOTAVAIL,
                              f"none of the media addresses {', '.join(addresses)} exists any "
                              "more (an interface of -O went away): restart sftd with -O "
                              "naming interfaces that have an IPv4 address")
            self.in_use.add(port)
            return port, sockets
        raise PortsExhausted(
            f"all {size} UDP ports of --media-ports {self.low}-{self.high} are in use; "
            "widen the range or add SFT nodes")

    def _bound(self, address: str, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((address, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            if address not in self.gone:
                self.gone.add(address)
                log.warning("media address %s is gone (its interface was removed or "
                            "renumbered): offers leave it out; restart sftd to pick up "
                            "the interfaces as they are now", address)
            return None
        self.gone.discard(address)
        return sock

    def release(self, port: int) -> None:
        self.in_use.discard(port)


class LegSocket(StunProtocol):
    """aioice's socket protocol with an RTP/RTCP fast path in front, and a gate:
    only STUN may come from anywhere (ICE checks authenticate themselves);
    DTLS and media are taken only from the ICE-nominated remote address."""

    receiver: LegIceConnection

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if not isinstance(data, bytes) or not data:
            return
        first = data[0]
        if first < 4:  # STUN (RFC 7983)
            try:
                super().datagram_received(data, addr)
            except (ValueError, IndexError, KeyError, struct.error):
                self.receiver.reject(data)  # aioice chokes on some malformed attributes
            return
        source = (addr[0], addr[1])
        if not self.receiver.validated(source, self):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: %d bytes (first %d) from %s:%d on %s: no validated path",
                          self.receiver, len(data), first, *source,
                          self.local_candidate.host if self.local_candidate else "?")
            self.receiver.reject(data)
        elif 127 < first < 192:
            self.receiver.media_received(data, source, self)
        elif 19 < first < 64:  # DTLS
            super().datagram_received(data, addr)
        else:
            self.receiver.reject(data)


class LegIceConnection(Connection):
    """An aioice connection whose host candidates and sockets we choose."""

    def __init__(self, *, ports: PortRange, addresses: list[str], advertised: str | None,
                 on_media: Callable[[bytes, LegSocket], None],
                 on_reject: Callable[[bytes], None] | None = None, **kwargs: Any) -> None:
        super().__init__(ice_controlling=True, components=1, use_ipv6=False, **kwargs)
        self._ports = ports
        self._addresses = addresses
        self._advertised = advertised
        self._on_media = on_media
        self._on_reject = on_reject
        self.on_path_change: Callable[[], None] | None = None
        self.port: int | None = None
        self.rejected = 0
        # During an ICE restart: the connection being replaced, whose nominated
        # pair still carries media until this one has its own.
        self.previous: LegIceConnection | None = None

    def adopt(self, previous: LegIceConnection) -> None:
        """ICE restart: take over the previous connection's sockets (same port,
        new credentials), so the data plane keeps its local address."""
        self.previous = previous
        self.port, previous.port = previous.port, None
        self._protocols, previous._protocols = previous._protocols, []
        for protocol in self._protocols:
            protocol.receiver = self
            self._local_candidates.append(protocol.local_candidate)
        self._queue = previous._queue  # the DTLS transport keeps reading the same queue
        self._local_candidates_start = self._local_candidates_end = True

    async def gather_candidates(self) -> None:
        if self._local_candidates_start:
            return
        self._local_candidates_start = True
        loop = asyncio.get_running_loop()
        self.port, sockets = self._ports.bind(self._addresses)
        for sock in sockets:
            _, protocol = await loop.create_datagram_endpoint(lambda: LegSocket(self), sock=sock)
            bound = sock.getsockname()
            host = self._advertised or bound[0]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=1, transport="udp", priority=candidate_priority(1, "host"),
                host=host, port=bound[1], type="host")
            self._protocols.append(protocol)
            self._local_candidates.append(protocol.local_candidate)
        if self.turn_server:  # -T: relay candidates through the client's TURN server
            self._local_candidates += await self.get_component_candidates(1, [])
        self._local_candidates_end = True

    def check_complete(self, pair: CandidatePair) -> None:
        super().check_complete(pair)
        # Aggressive nomination may nominate several pairs; the controlled
        # peer uses the highest-priority one (RFC 8445 §8.1.1), so do we.
        nominated = [p for p in self._check_list if p.nominated
                     and p.state == CandidatePair.State.SUCCEEDED]
        if nominated:
            self._nominated[1] = max(nominated, key=self._pair_priority)

    def check_incoming(self, message: stun.Message, addr: tuple[str, int],
                       protocol: StunProtocol) -> None:
        super().check_incoming(message, addr, protocol)
        if not self._nominated:
            return  # still checking: aioice's own triggered check covers the pair
        # ICE completed and cancelled the other checks, yet the peer checks (and may
        # send on) another path: Chrome's controlled side picks its own best pair
        # for DTLS and media. Check that path ourselves, so it becomes validated
        # and media latches onto it; until then nothing is accepted from it.
        pair = next((p for p in self._check_list if p.protocol is protocol
                     and p.remote_addr == addr), None)
        if pair is not None and pair.state != CandidatePair.State.SUCCEEDED \
                and (pair.task is None or pair.task.done()):
            pair.task = asyncio.create_task(self._validate_path(pair))

    async def _validate_path(self, pair: CandidatePair) -> None:
        """A check after completion: never nominates, only validates the path."""
        assert self.remote_password is not None
        self.check_state(pair, CandidatePair.State.IN_PROGRESS)
        try:
            _, addr = await pair.protocol.request(
                self.build_request(pair, nominate=False), pair.remote_addr,
                integrity_key=self.remote_password.encode("utf8"))
        except stun.TransactionError:
            self.check_state(pair, CandidatePair.State.FAILED)
            return
        finally:
            pair.task = None
        self.check_state(pair, CandidatePair.State.SUCCEEDED if addr == pair.remote_addr
                         else CandidatePair.State.FAILED)

    def _pair_priority(self, pair: CandidatePair) -> int:
        return candidate_pair_priority(pair.local_candidate, pair.remote_candidate,
                                       self.ice_controlling)

    def _validated_pair(self, addr: tuple[str, int], protocol: LegSocket) -> CandidatePair | None:
        """The succeeded pair (ICE-validated path) that ``addr`` on ``protocol`` belongs to."""
        for connection in (self, self.previous):
            if connection is None:
                continue
            pair = connection._nominated.get(1)
            if pair is not None and pair.protocol is protocol and pair.remote_addr == addr:
                return pair
            for pair in connection._check_list:
                if pair.state == CandidatePair.State.SUCCEEDED and pair.protocol is protocol \
                        and pair.remote_addr == addr:
                    return pair
        return None

    def validated(self, addr: tuple[str, int], protocol: LegSocket) -> bool:
        return self._validated_pair(addr, protocol) is not None

    def latch(self, addr: tuple[str, int], protocol: LegSocket) -> bool:
        """Media arrived on a validated pair other than the selected one: the
        peer chose that path, so send there too. True if the path changed."""
        current = self._nominated.get(1)
        if current is not None and current.protocol is protocol and current.remote_addr == addr:
            return False
        pair = self._validated_pair(addr, protocol)
        if pair is None or pair not in self._check_list:
            return False
        self._nominated[1] = pair
        return True

    def reject(self, data: bytes) -> None:
        """Not from the ICE-validated address (or not a protocol we speak): dropped."""
        self.rejected += 1
        if self._on_reject is not None:
            self._on_reject(data)

    def media_received(self, data: bytes, addr: tuple[str, int], protocol: LegSocket) -> None:
        if self.latch(addr, protocol) and self.on_path_change is not None:
            self.on_path_change()
        self._on_media(data, protocol)

    async def close(self) -> None:
        await super().close()
        if self.port is not None:
            self._ports.release(self.port)
            self.port = None


class LegDtlsTransport(RTCDtlsTransport):
    """DTLS that offers only the given SRTP profiles and exports the keys."""

    def __init__(self, transport: RTCIceTransport, certificate: RTCCertificate,
                 profiles: tuple[str, ...]) -> None:
        super().__init__(transport, [certificate])
        by_name = {p.openssl_profile.decode(): p for p in SRTP_PROFILES}
        self._srtp_profiles = [by_name[name] for name in profiles if name in by_name]
        if not self._srtp_profiles:
            raise ValueError(f"none of the SRTP profiles {profiles} is available in libsrtp")
        self.srtp_keys: SrtpKeys | None = None

    def _setup_srtp(self) -> None:
        super()._setup_srtp()
        if self._rx_srtp is None or self._ssl is None:
            return
        name = self._ssl.get_selected_srtp_profile()
        profile = next(p for p in self._srtp_profiles if p.openssl_profile == name)
        material = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
        client = profile.get_key_and_salt(material, 0)
        server = profile.get_key_and_salt(material, 1)
        ours, theirs = (server, client) if self._role == "server" else (client, server)
        self.srtp_keys = SrtpKeys(profile=name.decode(), rx=theirs, tx=ours)


class ParticipantLeg:
    """One participant's connection. Callbacks: ``on_rtp(leg, srtp_bytes)``,
    ``on_rtcp(leg, srtcp_bytes)``, ``on_message(leg, text)``,
    ``on_connected(leg)``, ``on_closed(leg)``."""

    def __init__(self, leg_id: int, *, certificate: RTCCertificate, ports: PortRange,
                 addresses: list[str], advertised: str | None, srtp_profiles: tuple[str, ...],
                 turn: dict[str, Any] | None,
                 on_rtp: Callable[[ParticipantLeg, bytes], None],
                 on_rtcp: Callable[[ParticipantLeg, bytes], None],
                 on_message: Callable[[ParticipantLeg, str], None],
                 on_connected: Callable[[ParticipantLeg], None],
                 on_closed: Callable[[ParticipantLeg], None],
                 on_reject: Callable[[bytes], None] | None = None,
                 on_path_change: Callable[[ParticipantLeg], None] | None = None,
                 refused: collections.Counter[str] | None = None,
                 ice: LegIceConnection | None = None) -> None:
        """``ice``: an ICE connection handed over by ``hand_over_restart`` (its
        credentials were offered already); by default a new one is gathered."""
        self.leg_id = leg_id
        self._addresses = addresses
        self._via_turn = turn is not None
        self._refused = refused
        self.state = "new"  # new → gathered → connecting → connected → closed
        self._certificate = certificate
        self._profiles = srtp_profiles
        self._on_rtp, self._on_rtcp = on_rtp, on_rtcp
        self._on_message, self._on_connected, self._on_closed = on_message, on_connected, on_closed
        self._gatherer = RTCIceGatherer(iceServers=[])
        self._on_reject = on_reject
        self._on_path_change = on_path_change
        if ice is None:
            ice = LegIceConnection(ports=ports, addresses=addresses, advertised=advertised,
                                   on_media=self._media, on_reject=on_reject, **(turn or {}))
        else:
            ice._on_media, ice._on_reject = self._media, on_reject
        self.ice = ice
        self.ice.on_path_change = self._path_changed
        self._gatherer._connection = self.ice
        self._ice_transport = RTCIceTransport(self._gatherer)
        self.dtls = LegDtlsTransport(self._ice_transport, certificate, srtp_profiles)
        self._sctp: RTCSctpTransport | None = None
        self.channel: RTCDataChannel | None = None
        self._rtcp_rx: pylibsrtp.Session | None = None
        self._rtcp_tx: pylibsrtp.Session | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._restart: LegIceConnection | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._pending_messages: list[str] = []
        self.remote_fingerprints: set[tuple[str, str]] = set()  # of the answer that started it
        # An update offer is out: its ICE connection outlives this leg's own
        # closing, for the new connection the client may answer from.
        self.keep_restart_on_close = False

    # ----------------------------------------------------------- offer side
    async def gather(self) -> None:
        await self._gatherer.gather()
        self.state = "gathered"

    @property
    def ice_ufrag(self) -> str:
        return self.offer_ice.local_username

    @property
    def ice_pwd(self) -> str:
        return self.offer_ice.local_password

    def candidates(self) -> list[Candidate]:
        return list(self.offer_ice.local_candidates)

    def fingerprint(self) -> str:
        fp = next(f for f in self._certificate.getFingerprints() if f.algorithm == "sha-256")
        return f"sha-256 {fp.value}"

    def restart_ice(self) -> None:
        """CONFCONN update:true: new ICE credentials on the same socket; DTLS,
        SRTP keys and the data channel stay. Call ``start`` with the answer."""
        if self.state != "connected":
            raise RuntimeError("ICE restart needs a connected leg")
        pending, ice = self._restart, self.ice
        fresh = LegIceConnection(ports=ice._ports, addresses=ice._addresses,
                                 advertised=ice._advertised, on_media=self._media,
                                 on_reject=self._on_reject)
        fresh.on_path_change = self._path_changed
        fresh.adopt(pending or ice)  # the sockets move to the newest connection
        fresh.previous = ice  # whose nominated pair carries media meanwhile
        self._restart = fresh
        if pending is not None:  # a restart of a restart: drop the unanswered one
            if self._restart_task is not None:
                self._restart_task.cancel()
            pending._queue = asyncio.Queue()
            detached(pending.close(), f"leg-{self.leg_id}-close-restart")

    async def release_restart(self) -> None:
        """Close an ICE restart no one will answer (it holds the sockets since adopt())."""
        if self._restart is not None:
            restart, self._restart = self._restart, None
            await restart.close()

    def hand_over_restart(self) -> LegIceConnection:
        """The client answered the restart offer from a new connection of its own
        (new DTLS fingerprint: Wire's engine does that): the restarted ICE
        connection, with the offered credentials and this leg's sockets, goes to
        a new leg. This leg keeps nothing to close but its DTLS and SCTP."""
        fresh = self._restart
        if fresh is None:
            raise RuntimeError("no ICE restart was offered on this leg")
        if self._restart_task is not None:
            self._restart_task.cancel()
        self._restart = None
        fresh.previous = None
        fresh._queue = asyncio.Queue()  # the new leg's DTLS, not this one's, reads it
        return fresh

    @property
    def offer_ice(self) -> LegIceConnection:
        """The connection whose credentials the next offer carries."""
        return self._restart or self.ice

    # ----------------------------------------------------------- answer side
    def start(self, answer: Answer,
              on_restarted: Callable[[ParticipantLeg], None] | None = None) -> None:
        """Apply the client's answer: ICE checks, DTLS, SCTP, data channel; or,
        after ``restart_ice``, the ICE checks alone."""
        if self._restart is not None:
            self._restart_task = asyncio.create_task(
                self._run_restart(self._restart, answer, on_restarted),
                name=f"leg-{self.leg_id}-restart")
            return
        if self._start_task is not None:
            raise RuntimeError("leg already started")
        self.state = "connecting"
        self._start_task = asyncio.create_task(self._run(answer), name=f"leg-{self.leg_id}")

    async def _add_remote_candidates(self, ice: LegIceConnection, answer: Answer) -> None:
        # through a TURN relay (-T) the relay reaches the peer, not our routes
        candidates = usable_candidates(answer.candidates, self._addresses,
                                       check_route=not self._via_turn, refused=self._refused)
        for cand in candidates:
            await ice.add_remote_candidate(cand)  # aioice adds a copy
        if answer.candidates:
            await ice.add_remote_candidate(None)

    async def _connect_ice(self, ice: LegIceConnection, answer: Answer) -> None:
        await self._add_remote_candidates(ice, answer)
        ice.remote_username, ice.remote_password = answer.ice_ufrag, answer.ice_pwd
        ice.remote_is_lite = answer.ice_lite
        await ice.connect()

    async def _run_restart(self, fresh: LegIceConnection, answer: Answer,
                           on_restarted: Callable[[ParticipantLeg], None] | None) -> None:
        try:
            await self._connect_ice(fresh, answer)
        except (ConnectionError, OSError) as exc:
            log.info("leg %d ICE restart failed: %s", self.leg_id, exc)
            await self.close()
            return
        if self._restart is not fresh or self.state == "closed":
            return  # superseded by another restart, or closed meanwhile
        old, self.ice, self._restart = self.ice, fresh, None
        self._gatherer._connection = fresh
        self._ice_transport._connection = fresh
        self._ice_transport._recv = fresh.recv
        self._ice_transport._send = fresh.send
        fresh.previous = None
        old._queue = asyncio.Queue()  # closing it must not end the DTLS reader
        await old.close()
        log.info("leg %d ICE restarted", self.leg_id)
        if on_restarted is not None:
            on_restarted(self)

    async def _run(self, answer: Answer) -> None:
        try:
            await self._add_remote_candidates(self.ice, answer)
            await self._ice_transport.start(RTCIceParameters(
                usernameFragment=answer.ice_ufrag, password=answer.ice_pwd,
                iceLite=answer.ice_lite))
            if self._ice_transport.state != "completed":
                raise ConnectionError("ICE failed: no candidate pair answered")
            self.remote_fingerprints = set(answer.fingerprints)
            self.dtls._set_role("server" if answer.setup == "active" else "client")
            await self.dtls.start(RTCDtlsParameters(
                fingerprints=[RTCDtlsFingerprint(algorithm=a, value=v)
                              for a, v in answer.fingerprints]))
            if self.dtls.state != "connected" or self.dtls.srtp_keys is None:
                raise ConnectionError("DTLS failed (fingerprint mismatch or no SRTP profile)")
            keys = self.dtls.srtp_keys
            self._rtcp_rx = srtp_session(keys.profile, keys.rx, inbound=True)
            self._rtcp_tx = srtp_session(keys.profile, keys.tx, inbound=False)
            data = next((m for m in answer.media if m.kind == "application"), None)
            if data is not None and data.port != 0:
                self._sctp = RTCSctpTransport(self.dtls)
                await self._sctp.start(RTCSctpCapabilities(maxMessageSize=262144),
                                       data.sctp_port or 5000)
                self.channel = RTCDataChannel(self._sctp, RTCDataChannelParameters(
                    label=DATA_CHANNEL_LABEL, ordered=True))
                self.channel.on("open", self._channel_open)
                self.channel.on("message", lambda m: self._on_message(self, m)
                                if isinstance(m, str) else None)
                self.channel.on("close", lambda: detached(self.close(), f"leg-{self.leg_id}-close"))
            self.state = "connected"
            self.dtls.on("statechange", self._dtls_state)
            self._on_connected(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure ends the leg; the controller logs why
            log.info("leg %d failed to connect: %s", self.leg_id, exc)
            await self.close()

    def _path_changed(self) -> None:
        if self.state == "connected" and self._on_path_change is not None:
            log.info("leg %d: peer moved to another validated path", self.leg_id)
            self._on_path_change(self)

    def _dtls_state(self) -> None:
        if self.dtls.state in ("closed", "failed"):
            detached(self.close(), f"leg-{self.leg_id}-close")

    def _channel_open(self) -> None:
        pending, self._pending_messages = self._pending_messages, []
        for text in pending:
            self.send_message(text)

    @property
    def srtp_keys(self) -> SrtpKeys | None:
        return self.dtls.srtp_keys

    def selected_pair(self) -> tuple[tuple[str, int], tuple[str, int], Any] | None:
        """(local socket address, ICE-validated remote address, datagram transport)."""
        pair = self.ice._nominated.get(1)
        if pair is None:
            return None
        local = pair.protocol.transport.get_extra_info("sockname")
        return (local[0], local[1]), pair.remote_addr, pair.protocol.transport

    # ----------------------------------------------------------- traffic
    def _media(self, data: bytes, protocol: LegSocket) -> None:
        if len(data) > 1 and 191 < data[1] < 224:  # RTCP with rtcp-mux (RFC 5761)
            self._on_rtcp(self, data)
        else:
            self._on_rtp(self, data)

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        if self._rtcp_rx is None:
            return None
        try:
            return self._rtcp_rx.unprotect_rtcp(data)
        except pylibsrtp.Error:
            return None

    def send_rtcp(self, plain: bytes) -> None:
        pair = self.selected_pair()
        if pair is None or self._rtcp_tx is None or self.state != "connected":
            return
        pair[2].sendto(self._rtcp_tx.protect_rtcp(plain), pair[1])

    def send_message(self, text: str) -> None:
        if self.channel is None or self.state == "closed":
            return
        if self.channel.readyState != "open":
            self._pending_messages.append(text)
            return
        self.channel.send(text)

    async def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        for task in (self._start_task, self._restart_task):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
        if self._restart is not None and not self.keep_restart_on_close:
            await self.release_restart()
        try:
            if self._sctp is not None:
                await self._sctp.stop()
            await self.dtls.stop()
            await self._ice_transport.stop()
        except Exception as exc:
            log.debug("leg %d close: %s", self.leg_id, exc)
        finally:
            await self.ice.close()
            self._on_closed(self)
