"""Random and mutated STUN (and other non-media datagrams) at a live leg's UDP
port, taken from the offer's candidate, from an address ICE never validated:
sftd survives and the call goes on."""

from __future__ import annotations

import os
import re
import socket
import struct

import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from .call import Call, settle, start_call
from .conftest import examples, tally

pytestmark = pytest.mark.timeout(240)



@pytest.fixture
async def call(sftd, wire_client):
    c = await start_call(sftd, wire_client)
    yield c
    await c.media_continues()
    c.no_tracebacks()


def _attr(sdp: str, name: str) -> str:
    return re.search(rf"a={name}:(\S+)", sdp).group(1)


def _target(call: Call) -> dict:
    """Victim A's leg: its UDP port and both sides' ICE credentials."""
    a = call.a
    cand = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", a.offer)
    return {"addr": (cand.group(1), int(cand.group(2))),
            "sft_ufrag": _attr(a.offer, "ice-ufrag"), "sft_pwd": _attr(a.offer, "ice-pwd"),
            "client_ufrag": _attr(a.answer, "ice-ufrag")}


ATTR_TYPES = [a[0] for a in stun.ATTRIBUTES] + [0x0000, 0x7FFF, 0xC001, 0xFFFF]


@st.composite
def stun_packets(draw: st.DrawFn, t: dict) -> bytes:
    kind = draw(st.sampled_from(["request", "request", "random_attrs", "mutated", "random",
                                 "cookie", "dtls", "rtp", "huge"]))
    method = draw(st.sampled_from([stun.Method.BINDING] * 4 + list(stun.Method)))
    klass = draw(st.sampled_from(list(stun.Class)))
    if kind in ("request", "mutated"):
        msg = stun.Message(message_method=method, message_class=klass)
        username = draw(st.sampled_from([
            f"{t['sft_ufrag']}:{t['client_ufrag']}", f"{t['client_ufrag']}:{t['sft_ufrag']}",
            f"{t['sft_ufrag']}:", "", "x" * 600, "\u00e9:\u00e9"]) | st.text(max_size=30))
        if draw(st.booleans()):
            msg.attributes["USERNAME"] = username
        if draw(st.booleans()):
            msg.attributes["PRIORITY"] = draw(st.integers(0, 2**32 - 1))
        if draw(st.booleans()):
            msg.attributes["USE-CANDIDATE"] = None
        role = draw(st.sampled_from([None, "ICE-CONTROLLED", "ICE-CONTROLLING"]))
        if role:
            msg.attributes[role] = draw(st.integers(0, 2**64 - 1))
        key = draw(st.sampled_from([None, t["sft_pwd"], "wrong-password-0123456789", ""]))
        if key is not None:
            msg.add_message_integrity(key.encode())
        elif draw(st.booleans()):
            msg.add_fingerprint()
        data = bytes(msg)
        if kind == "mutated":
            raw = bytearray(data)
            how = draw(st.sampled_from(["flip", "truncate", "length", "append"]))
            if how == "flip":
                for _ in range(draw(st.integers(1, 6))):
                    i = draw(st.integers(0, len(raw) - 1))
                    raw[i] ^= 1 << draw(st.integers(0, 7))
            elif how == "truncate":
                raw = raw[:draw(st.integers(1, len(raw)))]
            elif how == "length":
                raw[2:4] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
            else:
                raw += draw(st.binary(min_size=1, max_size=64))
            data = bytes(raw)
        return data
    if kind == "random_attrs":  # well-framed STUN with arbitrary attributes
        body = b""
        for _ in range(draw(st.integers(0, 8))):
            value = draw(st.binary(max_size=40))
            body += struct.pack("!HH", draw(st.sampled_from(ATTR_TYPES)), len(value))
            body += value + b"\0" * (-len(value) % 4)
        mtype = method | klass
        return struct.pack("!HHI12s", mtype, len(body), stun.COOKIE, os.urandom(12)) + body
    if kind == "cookie":  # random bytes with a plausible header
        body = draw(st.binary(max_size=200))
        return struct.pack("!HHI12s", draw(st.integers(0, 0x3FFF)), len(body), stun.COOKIE,
                           os.urandom(12)) + body
    if kind == "dtls":  # first byte 20–63: aioice hands it to the DTLS reader
        return bytes([draw(st.integers(20, 63))]) + draw(st.binary(min_size=1, max_size=300))
    if kind == "rtp":  # 128–191: the media fast path, but not from the validated address
        return bytes([draw(st.integers(128, 191))]) + draw(st.binary(min_size=1, max_size=300))
    if kind == "huge":
        return draw(st.binary(min_size=1, max_size=1)) + os.urandom(draw(st.integers(1500, 9000)))
    return draw(st.binary(max_size=600))  # empty datagrams included


@examples(ci=500, long=5000)
@given(data=st.data())
async def test_stun_at_a_live_leg(call, data):
    t = _target(call)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for _ in range(data.draw(st.integers(1, 5))):
            packet = data.draw(stun_packets(t))
            tally["stun: datagrams at a leg"] += 1
            sock.sendto(packet, t["addr"])  # a plain socket sends b"" too
    await settle()
    call.alive()
