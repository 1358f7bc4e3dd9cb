"""Hypothesis strategies shared by the fuzz targets: econn messages and their
structure-aware mutations, a real aiortc SDP answer and its mutations, RTP and
RTCP packets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
import struct
from typing import Any

from hypothesis import strategies as st

from sftd.controller.sdp import Candidate, OfferParams, build_offer, tool_line

# ------------------------------------------------------------------ JSON / econn

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "3.0", "true", "false", "sft", "SFT", "\x00", "\u202e", "😀" * 3,
                     "\ud800", "../../etc/passwd", "%s%n"]),
    st.builds(lambda c, n: c * n, st.sampled_from("a1\u00e9"), st.integers(100, 5000)),
)

json_values = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.text(max_size=12), children, max_size=6)),
    max_leaves=25,
)

TYPES = ["CONFCONN", "SETUP", "UPDATE", "CONFPART", "CONFSTREAMS", "PROPSYNC", "PING",
         "HANGUP", "CONFSTART", "CONFKEY", "REJECT", "confconn", "", "SETUP\x00"]


def confconn(user: str = "alice", client: str = "c1", **extra: Any) -> dict[str, Any]:
    msg = {"version": "3.0", "type": "CONFCONN", "sessid": "s1", "src_userid": user,
           "src_clientid": client, "dest_userid": "SFT", "resp": False, "status": 0,
           "update": False, "vstreams": 2, "selective_audio": True, "selective_video": True,
           "tool": "fuzz", "toolver": "7.0.0", "ice_servers": []}
    msg.update(extra)
    return msg


def setup_answer(sdp: str, user: str = "alice", client: str = "c1",
                 **extra: Any) -> dict[str, Any]:
    msg = {"version": "3.0", "type": "SETUP", "sessid": "s1", "src_userid": user,
           "src_clientid": client, "resp": True, "sdp": sdp,
           "props": {"videosend": "true", "screensend": "false", "audiocbr": "false",
                     "muted": "false"}}
    msg.update(extra)
    return msg


def _deep(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# Values chosen to hit type confusions and size limits in one field.
NASTY = st.one_of(
    json_values,
    st.sampled_from([None, True, False, 0, -1, 1, 9, 32, 33, 99, 2**31, 2**63, -2**63,
                     10**300, 1e308, -0.0, 0.5, "", "9", [], {}, [None], {"": ""}]),
    st.integers(1, 70_000).map(lambda n: "x" * n),
    st.integers(min_value=1, max_value=900).map(_deep),
)

ENVELOPE_KEYS = ["version", "type", "sessid", "resp", "src_userid", "src_clientid",
                 "dest_userid", "dest_clientid"]
CONFCONN_KEYS = ENVELOPE_KEYS + ["status", "update", "vstreams", "selective_audio",
                                 "selective_video", "tool", "toolver", "ice_servers",
                                 "sft_url", "sft_tuple", "username", "credential"]
SETUP_KEYS = ENVELOPE_KEYS + ["sdp", "props", "url"]


@st.composite
def mutate_object(draw: st.DrawFn, base: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """1–4 structure-aware edits: drop a field, retype it, add junk, swap type."""
    obj = dict(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "retype", "retype", "add", "type", "props"]))
        key = draw(st.sampled_from(keys))
        if op == "drop":
            obj.pop(key, None)
        elif op == "retype":
            obj[key] = draw(NASTY)
        elif op == "add":
            obj[draw(st.text(max_size=20))] = draw(json_values)
        elif op == "type":
            obj["type"] = draw(st.sampled_from(TYPES))
        else:
            obj["props"] = draw(st.one_of(NASTY, st.dictionaries(
                st.sampled_from(["muted", "videosend", "screensend", "audiocbr", "x"]),
                NASTY, max_size=4)))
    return obj


def econn_json_objects() -> st.SearchStrategy[Any]:
    """Whole JSON documents that are econn-ish or not at all."""
    valid_setup = setup_answer("v=0\r\n")
    return st.one_of(
        json_values,
        mutate_object(confconn(), CONFCONN_KEYS),
        mutate_object(valid_setup, SETUP_KEYS),
        st.builds(lambda t, r, extra: {"version": "3.0", "type": t, "sessid": "",
                                       "resp": r, **extra},
                  st.sampled_from(TYPES), NASTY,
                  st.dictionaries(st.text(max_size=10), json_values, max_size=4)),
    )


# ------------------------------------------------------------------ SDP

OFFER = OfferParams(
    session_id=1, ice_ufrag="abcd", ice_pwd="a" * 22,
    fingerprint="sha-256 " + ":".join(["AB"] * 32),
    candidates=(Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 40000, "host"),),
    audio_slot_ssrcs=(11, 12, 13, 14, 15), video_slot_ssrcs=(21, 22),
    slot_labels=tuple(f"slot{i}" for i in range(7)), tool=tool_line("0.0.0"))
# ICE checks of an accepted answer go to a local port nobody serves.
DEAD_CANDIDATE = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"


async def _aiortc_answer(offer: str) -> str:
    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer.replace(" vad=on", ""),
                                                            "offer"))
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@functools.cache
def real_answer(offer: str | None = None) -> str:
    """A real aiortc answer to an SFT offer, candidates pointed at a dead port.
    Runs on its own thread so it works with or without a running event loop."""
    offer = offer or build_offer(OFFER)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sdp = pool.submit(asyncio.run, _aiortc_answer(offer)).result()
    sdp = re.sub(r"a=candidate:[^\r\n]*", DEAD_CANDIDATE, sdp)
    return sdp


NUMERIC_LINE = re.compile(r"^(m=|a=(ssrc|ssrc-group|extmap|sctp-port|sctpmap|candidate):)")
NUMBER = re.compile(r"(?<=[:= ])[0-9]+")
NASTY_NUMBERS = st.one_of(
    st.sampled_from(["", "0", "-1", "+1", "1_0", "0x10", "4294967296", "65536", "256",
                     "²", "١٢٣", "٣", "𝟗", "0" * 30 + "1", "1e3", " "]),
    st.integers(20, 5000).map(lambda n: "9" * n),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=6),
)


@st.composite
def mutated_sdp(draw: st.DrawFn, base: str | None = None) -> str:
    """A real answer (``base`` or our own) with 1–6 line- or byte-level edits."""
    lines = (base or real_answer()).split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["drop", "dup", "flip", "truncate", "replace_value",
                                   "insert", "candidates", "swap", "crlf", "number",
                                   "number"]))
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines[i:i] = [lines[i]] * draw(st.integers(1, 50))
        elif op == "flip" and lines[i]:
            raw = bytearray(lines[i].encode("utf-8", errors="surrogateescape"))
            j = draw(st.integers(0, len(raw) - 1))
            raw[j] ^= 1 << draw(st.integers(0, 7))
            lines[i] = raw.decode("utf-8", errors="surrogateescape")
        elif op == "truncate":
            text = "\r\n".join(lines)
            lines = text[:draw(st.integers(0, len(text)))].split("\r\n")
        elif op == "replace_value" and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = head + ":" + draw(st.one_of(
                st.text(max_size=40), st.sampled_from(
                    ["", "0", "-1", "4294967296", "99999999999999999999999", "²", "١٢٣",
                     "1 2 3", "sha-256", "active", "passive", "actpass", "holdconn",
                     "FID 1", "SIM", "abc def", " " * 10])))
        elif op == "insert":
            lines.insert(i, draw(st.one_of(
                st.text(max_size=60),
                st.sampled_from(["m=audio", "m=video x UDP", "m=application 0 DTLS/SCTP",
                                 "a=ssrc-group:SIM", "a=ssrc-group:FID 1 2",
                                 "a=extmap:0 urn:x", "a=extmap:256 urn:x", "a=extmap:4",
                                 "a=sctp-port:70000", "a=setup:", "a=fingerprint:sha-256",
                                 "a=ice-lite", "a=mid:", "a=rid:h send", "v=1", "x",
                                 "a=candidate:1 1 udp 1 ::1 9 typ host",
                                 "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active",
                                 "a=candidate:1 1 udp 1 1.2.3.4 0 typ host"]))))
        elif op == "candidates":
            n = draw(st.integers(100, 3000))
            port = draw(st.integers(1, 65535))
            lines.insert(i, "\r\n".join(
                f"a=candidate:{k} 1 udp {k} 127.0.0.{k % 250 + 1} {port} typ host"
                for k in range(n)))
        elif op == "number":  # a number where the parser converts one
            numeric = [k for k, line in enumerate(lines) if NUMERIC_LINE.match(line)]
            if numeric:
                k = draw(st.sampled_from(numeric))
                lines[k] = NUMBER.sub(draw(NASTY_NUMBERS).replace("\\", "\\\\"),
                                      lines[k], count=1)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "crlf":
            lines[i] = lines[i].replace("\r", "") + draw(st.sampled_from(
                ["\n", "\r", "\x0b", "\x1c", "\u2028", "\x00"]))
    return "\r\n".join(lines)


def sdp_like_text() -> st.SearchStrategy[str]:
    """Random lines in SDP shape."""
    line = st.builds(lambda k, v: f"{k}={v}", st.sampled_from("vosctmab"), st.text(max_size=40))
    attr = st.builds(lambda n, v: f"a={n}:{v}", st.sampled_from(
        ["ice-ufrag", "ice-pwd", "setup", "fingerprint", "candidate", "mid", "ssrc",
         "ssrc-group", "rid", "simulcast", "extmap", "sctp-port", "sctpmap", "sendonly"]),
        st.text(max_size=40))
    return st.lists(st.one_of(line, attr), max_size=40).map(
        lambda ls: "v=0\r\n" + "\r\n".join(ls))


# ------------------------------------------------------------------ RTP / RTCP


@st.composite
def rtp_packets(draw: st.DrawFn, valid_only: bool = False
                ) -> tuple[bytes, dict[str, Any] | None]:
    """(packet, truth) where truth describes a well-formed packet, or (bytes, None)
    for a broken one. Covers CSRCs, one- and two-byte extensions and padding."""
    ssrc = draw(st.integers(0, 0xFFFFFFFF))
    seq = draw(st.integers(0, 0xFFFF))
    ts = draw(st.integers(0, 0xFFFFFFFF))
    csrcs = draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))
    pt = draw(st.integers(0, 127))
    marker = draw(st.booleans())
    form = draw(st.sampled_from(["none", "one", "two"]))
    extensions: dict[int, bytes] = {}
    ext = b""
    if form == "one":
        ids = draw(st.lists(st.integers(1, 14), unique=True, max_size=5))
        extensions = {i: draw(st.binary(min_size=1, max_size=16)) for i in ids}
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in extensions.items())
        body += b"\0" * (-len(body) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    elif form == "two":
        ids = draw(st.lists(st.integers(1, 255), unique=True, max_size=5))
        extensions = {i: draw(st.binary(max_size=20)) for i in ids}
        body = b"".join(bytes([i, len(v)]) + v for i, v in extensions.items())
        body += b"\0" * (-len(body) % 4)
        ext = struct.pack("!HH", 0x1000 | draw(st.integers(0, 15)), len(body) // 4) + body
    payload = draw(st.binary(max_size=300))
    padding = draw(st.sampled_from([0, 0, 1, 4, 255]))
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if form != "none" else 0) | len(csrcs)
    packet = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    packet += b"".join(struct.pack("!I", c) for c in csrcs) + ext + payload
    if padding:
        packet += b"\0" * (padding - 1) + bytes([padding])
    # two-byte elements with empty values are indistinguishable from "absent"
    truth = {"ssrc": ssrc, "seq": seq, "ts": ts, "cc": len(csrcs), "payload": payload,
             "extensions": {i: v for i, v in extensions.items() if v or form == "one"}}
    if valid_only or not draw(st.booleans()):
        return packet, truth
    # break it: truncate, flip bits, or lie in a length field
    raw = bytearray(packet)
    how = draw(st.sampled_from(["truncate", "flip", "cc", "extlen", "pad"]))
    if how == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            j = draw(st.integers(0, len(raw) - 1))
            raw[j] ^= 1 << draw(st.integers(0, 7))
    elif how == "cc":
        raw[0] = (raw[0] & 0xF0) | draw(st.integers(0, 15))
    elif how == "extlen" and form != "none":
        off = 12 + 4 * len(csrcs) + 2
        raw[off:off + 2] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    elif how == "pad":
        raw[0] |= 0x20
        raw[-1] = draw(st.integers(0, 255))
    return bytes(raw), None


@st.composite
def rtcp_compounds(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    """A compound of SR/RR/SDES/FB-shaped packets and the SRs in it, optionally
    followed by a malformed tail (which parse_sender_reports ignores)."""
    out = b""
    expected = []
    for _ in range(draw(st.integers(0, 6))):
        pt = draw(st.sampled_from([200, 200, 201, 202, 203, 205, 206]))
        count = draw(st.integers(0, 31))
        if pt == 200:
            ssrc = draw(st.integers(0, 0xFFFFFFFF))
            hi, lo = draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 0xFFFFFFFF))
            body = struct.pack("!IIIIII", ssrc, hi, lo, 0, 0, 0)
            body += draw(st.binary(max_size=48))
            body += b"\0" * (-len(body) % 4)
            expected.append((ssrc, ((hi & 0xFFFF) << 16) | (lo >> 16)))
        else:
            body = draw(st.binary(max_size=40))
            body += b"\0" * (-len(body) % 4)
        out += struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body
    if draw(st.booleans()):  # a tail that is not RTCP version 2
        out += bytes([draw(st.integers(0, 0x7F))]) + draw(st.binary(max_size=40))
    return out, expected
