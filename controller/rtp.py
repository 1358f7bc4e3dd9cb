"""RTP parsing and the per-slot rewrite, shared by the userspace data plane
and the tests. Pure functions over bytes; no I/O, no conference model."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_HEADER = 12
MAX_CSRC = 15
AUDIO_LEVEL_SILENT = 127


class RtpError(ValueError):
    """Not a parseable RTP packet."""


@dataclass(frozen=True)
class RtpView:
    """Offsets into one plaintext RTP packet (RFC 3550)."""

    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    ext_offset: int  # start of the extension header, or of the payload if none
    payload_offset: int
    payload_end: int  # excludes padding


def parse(data: bytes) -> RtpView:
    if len(data) < RTP_HEADER:
        raise RtpError(f"{len(data)} bytes is shorter than an RTP header")
    b0, b1 = data[0], data[1]
    if b0 >> 6 != 2:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    cc = b0 & 0x0F
    offset = RTP_HEADER + 4 * cc
    ext_offset = offset
    if b0 & 0x10:
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        ext_words = struct.unpack_from("!H", data, offset + 2)[0]
        offset += 4 + 4 * ext_words
    if offset > len(data):
        raise RtpError("header longer than the packet")
    end = len(data)
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or end - pad < offset:
            raise RtpError(f"bad padding length {pad}")
        end -= pad
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    return RtpView(padding=bool(b0 & 0x20), extension=bool(b0 & 0x10), csrc_count=cc,
                   marker=bool(b1 & 0x80), payload_type=b1 & 0x7F, seq=seq, timestamp=ts,
                   ssrc=ssrc, ext_offset=ext_offset, payload_offset=offset, payload_end=end)


def find_extension(data: bytes, view: RtpView, ext_id: int) -> bytes | None:
    """The value of header extension ``ext_id`` (RFC 8285 one- or two-byte form)."""
    if not view.extension or ext_id <= 0:
        return None
    profile, words = struct.unpack_from("!HH", data, view.ext_offset)
    pos, end = view.ext_offset + 4, view.ext_offset + 4 + 4 * words
    if profile == 0xBEDE:
        while pos < end:
            byte = data[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            elem_id, length = byte >> 4, (byte & 0x0F) + 1
            if elem_id == 15:
                return None
            if pos + 1 + length > end:
                return None
            if elem_id == ext_id:
                return data[pos + 1:pos + 1 + length]
            pos += 1 + length
    elif profile >> 4 == 0x100:
        while pos + 1 < end:
            elem_id = data[pos]
            if elem_id == 0:
                pos += 1
                continue
            length = data[pos + 1]
            if pos + 2 + length > end:
                return None
            if elem_id == ext_id:
                return data[pos + 2:pos + 2 + length]
            pos += 2 + length
    return None


def audio_level(data: bytes, view: RtpView, ext_id: int) -> int | None:
    value = find_extension(data, view, ext_id)
    return value[0] & 0x7F if value else None


def is_keyframe(data: bytes, view: RtpView, frame_descriptor_id: int) -> bool:
    """Start of an independent frame: from the generic frame descriptor
    (begin-of-frame set, no dependencies) or else the VP8 payload descriptor."""
    descriptor = find_extension(data, view, frame_descriptor_id)
    if descriptor:
        return bool(descriptor[0] & 0x80) and not descriptor[0] & 0x08
    return vp8_keyframe(data[view.payload_offset:view.payload_end])


def vp8_keyframe(payload: bytes) -> bool:
    """RFC 7741: S=1, PID=0 and the VP8 frame tag's P bit clear."""
    if len(payload) < 2:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:
        return False
    pos = 1
    if b0 & 0x80:
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if pos >= len(payload):
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    return pos < len(payload) and not payload[pos] & 0x01


def rewrite(data: bytes, view: RtpView, ssrc: int, seq: int, timestamp: int, csrc: int) -> bytes:
    """The packet as a subscriber slot sends it: new SSRC/seq/timestamp and
    exactly one CSRC (CC=1); extension and payload (with padding) unchanged."""
    b0 = (data[0] & 0xF0) | 1
    header = struct.pack("!BBHIII", b0, data[1], seq & 0xFFFF, timestamp & 0xFFFFFFFF,
                         ssrc, csrc)
    return header + data[view.ext_offset:]


def padding_only(view: RtpView) -> bool:
    return view.padding and view.payload_end == view.payload_offset
