"""SDP for SFT legs: the offer the SFT writes and the answer it reads.

The offer follows Wire's sftd: BUNDLE of ``audio video data`` then one sendonly
m-line per slot (mids "1".."5" audio, "6".. video), full ICE, ``setup:actpass``,
an ``a=tool:sftd <version>`` line (Wire's calling engine turns selective audio
and video on from it) and one stream label per slot.

Answers are read by aiortc's SDP parser behind a thin strict layer of our own,
so that every malformed answer gets an ``SdpError`` that says what is wrong
(naming the line where one is at fault) and never another exception.
"""

from __future__ import annotations

import collections
import platform
import re
from dataclasses import dataclass, field

from aioice import Candidate
from aiortc.sdp import DTLS_ROLE_SETUP, MediaDescription, SessionDescription

from sftd.econn import MAX_VSTREAMS

from .dataplane import AUDIO_SLOTS, ExtensionIds

OPUS_PT = 111
VP8_PT = 100

URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_FRAME_DESCRIPTOR = "http://www.webrtc.org/experiments/rtp-hdrext/generic-frame-descriptor-00"

AUDIO_EXTMAPS = ((1, URI_AUDIO_LEVEL + " vad=on"), (2, URI_ABS_SEND_TIME))
VIDEO_EXTMAPS = ((2, URI_ABS_SEND_TIME), (3, URI_TWCC), (4, URI_RID), (5, URI_REPAIRED_RID),
                 (11, URI_FRAME_DESCRIPTOR))

MAX_SDP_BYTES = 64 * 1024

# The Wire sftd protocol level this server speaks, as ``a=tool:`` announces it.
# Wire's calling engine enables selective audio from 2.0 and selective video
# from 2.1; Wire's own server is at 5.0.
WIRE_SFT_VERSION = "5.0.0"


def tool_line(version: str) -> str:
    """``sftd <protocol level> (<arch>/<os>) sftd-ebpf/<version>``."""
    return (f"sftd {WIRE_SFT_VERSION} ({platform.machine() or 'unknown'}/"
            f"{platform.system().lower() or 'unknown'}) sftd-ebpf/{version}")


def offers_simulcast(toolver: object) -> bool:
    """Wire's server offers simulcast receive only to clients whose engine
    handles it: version 10 and later, or development builds (major 0, or no
    version at all)."""
    if not isinstance(toolver, str):
        return True
    major = toolver.strip().split(".", 1)[0]
    return not _digits(major) or int(major) == 0 or int(major) >= 10


class SdpError(ValueError):
    """An SDP answer we cannot use; ``str()`` says which part and why."""


@dataclass(frozen=True)
class OfferParams:
    session_id: int
    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # "sha-256 AB:CD:…"
    candidates: tuple[Candidate, ...]
    audio_slot_ssrcs: tuple[int, ...]
    video_slot_ssrcs: tuple[int, ...]
    # One label per slot (audio then video), used as its cname and stream id,
    # so that a receiver gets one stream per slot.
    slot_labels: tuple[str, ...]
    tool: str
    session_version: int = 2  # grows with every re-offer (ICE restart)
    cname: str = "sft"
    simulcast: bool = True


def _media_common(lines: list[str], p: OfferParams, mid: str, address: str, port: int) -> None:
    lines.append(f"c=IN IP4 {address}")
    lines.append("a=rtcp:9 IN IP4 0.0.0.0")
    for cand in p.candidates:
        lines.append("a=candidate:" + cand.to_sdp())
    lines.append("a=end-of-candidates")
    lines.append(f"a=ice-ufrag:{p.ice_ufrag}")
    lines.append(f"a=ice-pwd:{p.ice_pwd}")
    lines.append("a=ice-options:trickle")
    lines.append(f"a=fingerprint:{p.fingerprint}")
    lines.append("a=setup:actpass")
    lines.append(f"a=mid:{mid}")


def _audio_rtp(lines: list[str]) -> None:
    for ext_id, uri in AUDIO_EXTMAPS:
        lines.append(f"a=extmap:{ext_id} {uri}")


# Transport-wide feedback is given on the uplink only: the SFT does not adapt
# what it forwards to a receiver's feedback, so slots do not ask for it.
def _audio_codec(lines: list[str], uplink: bool) -> None:
    lines.append("a=rtcp-mux")
    lines.append(f"a=rtpmap:{OPUS_PT} opus/48000/2")
    if uplink:
        lines.append(f"a=rtcp-fb:{OPUS_PT} transport-cc")
    lines.append(f"a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1")
    lines.append("a=ptime:40")


def _video_codec(lines: list[str], uplink: bool) -> None:
    lines.append("a=rtcp-mux")
    lines.append("a=rtcp-rsize")
    lines.append(f"a=rtpmap:{VP8_PT} VP8/90000")
    if uplink:
        lines.append(f"a=rtcp-fb:{VP8_PT} transport-cc")
    lines.append(f"a=rtcp-fb:{VP8_PT} ccm fir")


def build_offer(p: OfferParams) -> str:
    """The SETUP offer for one leg."""
    address = p.candidates[0].host if p.candidates else "0.0.0.0"
    port = p.candidates[0].port if p.candidates else 9
    slot_mids = [str(i + 1) for i in range(len(p.audio_slot_ssrcs) + len(p.video_slot_ssrcs))]
    lines = [
        "v=0",
        f"o=- {p.session_id} {p.session_version} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=tool:{p.tool}",
        "a=group:BUNDLE " + " ".join(["audio", "video", "data", *slot_mids]),
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS *",
    ]
    lines.append(f"m=audio {port} UDP/TLS/RTP/SAVPF {OPUS_PT}")
    _media_common(lines, p, "audio", address, port)
    _audio_rtp(lines)
    lines.append("a=sendrecv")
    _audio_codec(lines, uplink=True)

    lines.append(f"m=video {port} UDP/TLS/RTP/SAVPF {VP8_PT}")
    _media_common(lines, p, "video", address, port)
    for ext_id, uri in VIDEO_EXTMAPS:
        lines.append(f"a=extmap:{ext_id} {uri}")
    lines.append("a=sendrecv")
    _video_codec(lines, uplink=True)
    if p.simulcast:  # low first: a sender scales down all but the last layer
        lines += ["a=rid:l recv", "a=rid:h recv", "a=simulcast:recv l;h"]

    lines.append(f"m=application {port} DTLS/SCTP 5000")
    _media_common(lines, p, "data", address, port)
    lines.append("a=sctpmap:5000 webrtc-datachannel 16")
    lines.append("a=max-message-size:262144")

    slots = [("audio", ssrc) for ssrc in p.audio_slot_ssrcs] + [
        ("video", ssrc) for ssrc in p.video_slot_ssrcs]
    if len(p.slot_labels) != len(slots):
        raise ValueError(f"{len(slots)} slots need as many labels, got {len(p.slot_labels)}")
    for mid_number, ((kind, ssrc), label) in enumerate(zip(slots, p.slot_labels), 1):
        mid = str(mid_number)
        if kind == "audio":
            lines.append(f"m=audio {port} UDP/TLS/RTP/SAVPF {OPUS_PT}")
            _media_common(lines, p, mid, address, port)
            _audio_rtp(lines)
        else:
            lines.append(f"m=video {port} UDP/TLS/RTP/SAVPF {VP8_PT}")
            _media_common(lines, p, mid, address, port)
            for ext_id, uri in VIDEO_EXTMAPS:
                if uri not in (URI_RID, URI_REPAIRED_RID, URI_TWCC):
                    lines.append(f"a=extmap:{ext_id} {uri}")
        lines.append("a=sendonly")
        # A media-level msid too: without one in the offer, Chrome answers in the
        # legacy SSRC style, which cannot carry its simulcast RIDs.
        lines.append(f"a=msid:{label} {label}")
        if kind == "audio":
            _audio_codec(lines, uplink=False)
        else:
            _video_codec(lines, uplink=False)
        # A stream of its own per slot: receivers that set up one transform per
        # stream track (Wire's engine) must not see all slots in one stream.
        lines.append(f"a=ssrc:{ssrc} cname:{label}")
        lines.append(f"a=ssrc:{ssrc} msid:{label} {label}")
    return "\r\n".join(lines) + "\r\n"


# ---------------------------------------------------------------- answers

_TOKEN = re.compile(r"^[A-Za-z0-9+/=_.\-:#~]+$")

# aiortc 1.16's parser refuses attributes after an extmap's URI (RFC 8285
# extension attributes such as ``vad=on``); they say nothing the SFT uses.
_EXTMAP_ATTRIBUTES = re.compile(r"^(a=extmap:\S+ \S+)[ \t]+\S.*$")

# What aiortc's parser raises on input it cannot read: whatever its code trips
# over (asserts, int(), dict and list lookups, next() without a default).
_AIORTC_PARSE_ERRORS = (ValueError, LookupError, AssertionError, AttributeError, TypeError,
                        StopIteration)


def _digits(text: str) -> bool:
    """ASCII decimal digits that ``int()`` surely converts (``str.isdigit`` also
    accepts e.g. "²", and ``int`` refuses more than 4300 digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 20


def without_extmap_attributes(sdp: str) -> str:
    """``sdp`` with extmap extension attributes (``vad=on``) taken out, the one
    change aiortc's parser needs in an SFT offer; line endings are kept."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    return eol.join(_EXTMAP_ATTRIBUTES.sub(r"\1", line) for line in sdp.splitlines()) + eol


@dataclass
class ParsedSdp:
    """aiortc's reading of an SDP, and each m-section's ``a=`` lines as
    (name, value) for what aiortc does not keep (``a=rid``, ``a=simulcast``, raw
    candidate lines)."""

    session: SessionDescription
    section_attributes: list[list[tuple[str, str]]]


def parse_sdp(text: str) -> ParsedSdp:
    """An SDP (offer or answer) read by aiortc; ``SdpError`` if it cannot be."""
    numbered = [(number, _EXTMAP_ATTRIBUTES.sub(r"\1", raw.strip()))
                for number, raw in enumerate(text.splitlines(), 1) if raw.strip()]
    sections: list[list[tuple[str, str]]] = []
    for _number, line in numbered:
        if line.startswith("m="):
            sections.append([])
        elif sections and line.startswith("a="):
            name, _, value = line[2:].partition(":")
            sections[-1].append((name, value))
    try:
        session = SessionDescription.parse("\r\n".join(line for _, line in numbered))
    except _AIORTC_PARSE_ERRORS as exc:
        raise SdpError(f"{_unreadable_part(numbered)} cannot be read as SDP "
                       f"({type(exc).__name__}: {str(exc)[:60]})") from None
    return ParsedSdp(session, sections)


def _unreadable_part(numbered: list[tuple[int, str]]) -> str:
    """Which part of an SDP aiortc refuses: the session part, or the first
    m-section (named by its line) that it refuses when parsed alone. Each line
    is parsed once more, so a large hostile SDP costs no more than twice."""
    starts = [i for i, (_, line) in enumerate(numbered) if line.startswith("m=")]
    for part, (begin, end) in enumerate(zip([0, *starts], [*starts, len(numbered)])):
        try:
            SessionDescription.parse("\r\n".join(line for _, line in numbered[begin:end]))
        except _AIORTC_PARSE_ERRORS:
            if part == 0:
                return "the session part"
            number, line = numbered[begin]
            return f"the m-section of line {number} ({line[:40]!r})"
    return "the SDP"


@dataclass
class AnswerMedia:
    kind: str
    mid: str
    port: int
    direction: str = "sendrecv"
    ssrcs: list[int] = field(default_factory=list)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    rids: list[tuple[str, str]] = field(default_factory=list)  # (rid, direction)
    simulcast: str = ""
    extmaps: dict[str, int] = field(default_factory=dict)  # uri -> id
    payload_types: list[int] = field(default_factory=list)
    sctp_port: int | None = None

    @classmethod
    def from_aiortc(cls, media: MediaDescription,
                    attributes: list[tuple[str, str]]) -> AnswerMedia:
        rids = [value.split() for name, value in attributes if name == "rid"]
        return cls(
            kind=media.kind, mid=media.rtp.muxId or "", port=media.port,
            direction=media.direction or "sendrecv",
            ssrcs=[info.ssrc for info in media.ssrc],
            ssrc_groups=[(group.semantic, [int(item) for item in group.items])
                         for group in media.ssrc_group],
            rids=[(bits[0], bits[1]) for bits in rids if len(bits) >= 2],
            simulcast=next((value for name, value in reversed(attributes)
                            if name == "simulcast"), ""),
            extmaps={ext.uri: ext.id for ext in media.rtp.headerExtensions},
            payload_types=[int(fmt) for fmt in media.fmt if _digits(str(fmt))],
            sctp_port=media.sctp_port if media.sctp_port is not None
            else next(iter(media.sctpmap), None))


@dataclass
class Answer:
    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[Candidate]
    media: list[AnswerMedia]
    ice_lite: bool = False

    def by_mid(self, mid: str) -> AnswerMedia | None:
        return next((m for m in self.media if m.mid == mid), None)

    def audio_ssrcs(self) -> tuple[int, ...]:
        media = self.by_mid("audio")
        if media is None or media.direction not in ("sendrecv", "sendonly") or media.port == 0:
            return ()
        return tuple(media.ssrcs[:1])

    def video_ssrcs(self) -> list[int]:
        """The declared primary video SSRCs, RTX/FEC repairs excluded, lowest
        simulcast layer first."""
        media = self.by_mid("video")
        if media is None or media.direction not in ("sendrecv", "sendonly") or media.port == 0:
            return []
        repairs = {group[1][1] for group in media.ssrc_groups
                   if group[0] in ("FID", "FEC-FR") and len(group[1]) > 1}
        for semantics, ssrcs in media.ssrc_groups:
            if semantics == "SIM":
                return list(ssrcs)
        return [s for s in media.ssrcs if s not in repairs]

    def extension_ids(self) -> ExtensionIds:
        ids: dict[str, int] = {}
        for media in self.media:
            for uri, ext_id in media.extmaps.items():
                ids.setdefault(uri, ext_id)
        return ExtensionIds(
            audio_level=ids.get(URI_AUDIO_LEVEL, 0),
            rid=ids.get(URI_RID, 0),
            repaired_rid=ids.get(URI_REPAIRED_RID, 0),
            frame_descriptor=ids.get(URI_FRAME_DESCRIPTOR, 0),
            transport_cc=ids.get(URI_TWCC, 0),
        )


def parse_candidate(value: str) -> Candidate:
    """One ``a=candidate:`` value, read by aioice; refused unless its type, port
    and component are ones ICE can use."""
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise SdpError(f"bad candidate line {value[:80]!r}: expected "
                       "'foundation component transport priority address port typ type'")
    try:
        cand = Candidate.from_sdp(" ".join([bits[0].removeprefix("candidate:"), *bits[1:]]))
    except ValueError:
        raise SdpError(f"bad number in candidate {value[:80]!r}") from None
    cand.transport = cand.transport.lower()
    if cand.type not in ("host", "srflx", "prflx", "relay"):
        raise SdpError(f"candidate {value[:80]!r} has unknown type {cand.type!r}")
    if not (0 < cand.port < 65536) or cand.component not in (1, 2):
        raise SdpError(f"candidate {value[:80]!r} has an invalid port or component")
    return cand


def _candidate_identity(cand: Candidate) -> tuple[object, ...]:
    return (cand.foundation, cand.component, cand.transport, cand.priority, cand.host,
            cand.port, cand.type, cand.related_address, cand.related_port)


# aiortc's parser looks codecs and SSRCs up by a linear search per line (and
# copies each wildcard rtcp-fb to every codec), so these lines cost the square
# of their number. An answer has as many m-sections as our offer, each with the
# one codec we offered there and a few SSRCs: these caps are far above that.
MAX_ANSWER_SECTIONS = 3 + AUDIO_SLOTS + MAX_VSTREAMS
MAX_LINES_PER_SECTION = {"rtpmap": 4, "fmtp": 4, "rtcp-fb": 16, "ssrc": 64}


def _check_attribute(number: int, name: str, arg: str, in_media: bool) -> None:
    """The strict layer over aiortc: values the SFT relies on, refused with a
    message naming the line."""
    if name == "fingerprint" and not arg.partition(" ")[2]:
        raise SdpError(f"line {number}: fingerprint without a digest")
    if name == "setup" and arg not in ("active", "passive"):
        raise SdpError(f"answer a=setup:{arg} must be 'active' or 'passive'")
    if not in_media:
        return
    if name == "ssrc":
        ssrc_text = arg.split(" ", 1)[0]
        if not _digits(ssrc_text) or int(ssrc_text) > 0xFFFFFFFF:
            raise SdpError(f"line {number}: bad SSRC {ssrc_text!r}")
    elif name == "ssrc-group":
        bits = arg.split()
        if not bits or not all(_digits(b) and int(b) <= 0xFFFFFFFF for b in bits[1:]):
            raise SdpError(f"line {number}: bad ssrc-group {arg[:60]!r}")
    elif name == "extmap":
        ext_id_text, _, rest = arg.partition(" ")
        ext_id_text = ext_id_text.split("/")[0]
        if not _digits(ext_id_text) or not 1 <= int(ext_id_text) <= 255 or \
                not rest.split(" ")[0]:
            raise SdpError(f"line {number}: bad extmap {arg[:60]!r}")
    elif name in ("sctp-port", "sctpmap"):
        port_text = arg.split(" ")[0]
        if not _digits(port_text):
            raise SdpError(f"line {number}: bad SCTP port {port_text!r}")


def parse_answer(text: str) -> Answer:
    if len(text) > MAX_SDP_BYTES:
        raise SdpError(f"SDP of {len(text)} bytes exceeds {MAX_SDP_BYTES}")
    fingerprints: list[tuple[str, str]] = []
    candidates: dict[tuple[object, ...], Candidate] = {}
    in_section: collections.Counter[str] = collections.Counter()  # lines per name
    saw_version, section_count = False, 0
    ice_lite = False  # aiortc reads it at session level only; clients put it anywhere
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number} is not 'x=value': {line[:60]!r}")
        key, value = line[0], line[2:]
        if key == "v":
            saw_version = True
        elif key == "m":
            bits = value.split()
            if len(bits) < 3 or not _digits(bits[1]):
                raise SdpError(f"line {number}: bad m= line {line[:60]!r}")
            section_count += 1
            if section_count > MAX_ANSWER_SECTIONS:
                raise SdpError(f"line {number}: more m= sections than any offer of ours has "
                               f"({MAX_ANSWER_SECTIONS})")
            in_section.clear()
        elif key == "a":
            name, _, arg = value.partition(":")
            _check_attribute(number, name, arg, section_count > 0)
            in_section[name] += 1
            if in_section[name] > MAX_LINES_PER_SECTION.get(name, in_section[name]):
                raise SdpError(f"line {number}: more than {MAX_LINES_PER_SECTION[name]} "
                               f"a={name} lines in one m-section")
            ice_lite |= name == "ice-lite"
            if name == "fingerprint":
                algorithm, _, digest = arg.partition(" ")
                if (algorithm.lower(), digest.upper()) not in fingerprints:
                    fingerprints.append((algorithm.lower(), digest.upper()))
            elif name == "candidate":
                cand = parse_candidate(arg)
                if cand.transport == "udp" and cand.component == 1:
                    candidates.setdefault(_candidate_identity(cand), cand)
    if not saw_version:
        raise SdpError("not an SDP body: no 'v=' line")
    if not section_count:
        raise SdpError("answer has no m= sections")
    parsed = parse_sdp(text)
    sections = parsed.session.media
    ice = next((m.ice for m in sections if m.ice and m.ice.usernameFragment), None)
    ufrag = (ice.usernameFragment or "") if ice else ""
    pwd = next((m.ice.password for m in sections if m.ice and m.ice.password), "")
    if not ufrag or not pwd:
        raise SdpError("answer lacks a=ice-ufrag / a=ice-pwd")
    if not (4 <= len(ufrag) <= 256 and 22 <= len(pwd) <= 256) or not _TOKEN.match(ufrag + pwd):
        raise SdpError("answer has an invalid ICE ufrag/pwd (RFC 8839: 4+ / 22+ ice-chars)")
    if not fingerprints:
        raise SdpError("answer lacks a=fingerprint (DTLS is mandatory)")
    dtls = next((m.dtls for m in sections if m.dtls is not None), None)
    setup = DTLS_ROLE_SETUP[dtls.role] if dtls is not None and dtls.role else "active"
    media = [AnswerMedia.from_aiortc(m, attributes)
             for m, attributes in zip(sections, parsed.section_attributes)]
    for m in media:
        if not m.mid:
            raise SdpError(f"m={m.kind} section without a=mid")
    return Answer(ice_ufrag=ufrag, ice_pwd=pwd, fingerprints=fingerprints, setup=setup,
                  candidates=list(candidates.values()), media=media, ice_lite=ice_lite)
