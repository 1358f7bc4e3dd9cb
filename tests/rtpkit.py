"""Builders for RTP test packets and SRTP endpoints shared by data-plane tests."""

from __future__ import annotations

import os
import struct

from sftd.controller.srtp import srtp_session


def make_rtp(ssrc: int, seq: int, ts: int, payload: bytes, *, pt: int = 111,
             marker: bool = False, csrcs: tuple[int, ...] = (),
             extensions: dict[int, bytes] | None = None, padding: int = 0) -> bytes:
    """An RTP packet; ``extensions`` uses the one-byte form (RFC 8285)."""
    ext = b""
    if extensions:
        body = b"".join(bytes([(eid << 4) | (len(val) - 1)]) + val
                        for eid, val in extensions.items())
        body += b"\0" * (-len(body) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    header = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                         ts & 0xFFFFFFFF, ssrc)
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    pad = (b"\0" * (padding - 1) + bytes([padding])) if padding else b""
    return header + ext + payload + pad


def vp8_payload(keyframe: bool, size: int = 100) -> bytes:
    """VP8 payload descriptor (S=1, PID 0) and a frame tag with the P bit."""
    return bytes([0x10, 0x00 if keyframe else 0x01]) + os.urandom(max(0, size - 2))


class Peer:
    """The client end of a leg: protects what it sends, unprotects what it gets."""

    def __init__(self, profile: str, key_to_sft: bytes, key_from_sft: bytes) -> None:
        self.tx = srtp_session(profile, key_to_sft, inbound=False)
        self.rx = srtp_session(profile, key_from_sft, inbound=True)

    def protect(self, packet: bytes) -> bytes:
        return self.tx.protect(packet)

    def unprotect(self, packet: bytes) -> bytes:
        return self.rx.unprotect(packet)
