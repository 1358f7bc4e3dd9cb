"""The little RTCP an SFT speaks itself (RFC 3550, 4585, 5104): FIR and PLI to publishers,
RR in answer to SR. Runs in the controller for both data planes."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

PT_SR = 200
PT_RR = 201
PT_PSFB = 206
FMT_FIR = 4
FMT_PLI = 1


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp_middle: int  # the 32 middle bits of the NTP timestamp, echoed as LSR


def parse_sender_reports(data: bytes) -> list[SenderReport]:
    """SRs in a (compound) plaintext RTCP packet; malformed tails are ignored."""
    reports = []
    pos = 0
    while pos + 4 <= len(data):
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        length = 4 * (words + 1)
        if b0 >> 6 != 2 or pos + length > len(data):
            break
        if pt == PT_SR and length >= 28:
            ssrc, ntp_hi, ntp_lo = struct.unpack_from("!III", data, pos + 4)
            reports.append(SenderReport(ssrc, ((ntp_hi & 0xFFFF) << 16) | (ntp_lo >> 16)))
        pos += length
    return reports


def fir(sender_ssrc: int, media_ssrcs: list[int], seqnr: int) -> bytes:
    body = b"".join(struct.pack("!IB3x", ssrc, seqnr & 0xFF) for ssrc in media_ssrcs)
    words = 2 + 2 * len(media_ssrcs)
    return struct.pack("!BBHII", 0x80 | FMT_FIR, PT_PSFB, words, sender_ssrc, 0) + body


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80 | FMT_PLI, PT_PSFB, 2, sender_ssrc, media_ssrc)


def keyframe_request(sender_ssrc: int, media_ssrcs: list[int], seqnr: int) -> bytes:
    """FIR, which Wire's clients answer, compounded with a PLI per SSRC for
    senders that only answer PLI (aiortc)."""
    return fir(sender_ssrc, media_ssrcs, seqnr) + b"".join(
        pli(sender_ssrc, ssrc) for ssrc in media_ssrcs)


def receiver_report(sender_ssrc: int, report: SenderReport, received_at: float) -> bytes:
    """An RR with one block for ``report``: LSR/DLSR let the sender compute RTT.
    Loss and jitter are not measured by the SFT (0)."""
    dlsr = int((time.monotonic() - received_at) * 65536) & 0xFFFFFFFF
    block = struct.pack("!IIIIII", report.ssrc, 0, 0, 0, report.ntp_middle, dlsr)
    return struct.pack("!BBHI", 0x81, PT_RR, 7, sender_ssrc) + block
