"""The little RTCP an SFT speaks itself (RFC 3550, 4585, 5104): FIR and PLI to publishers
(periodic, and on a receiver's own request), RR in answer to SR. Runs in the controller
for both data planes."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiortc.rtp import (
    RTCP_PSFB,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_SR,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
)

from .dataplane import ReceiveStats


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp_middle: int  # the 32 middle bits of the NTP timestamp, echoed as LSR


# Reading stays our own: aiortc's RtcpPacket.parse drops a whole compound on the
# first packet it finds malformed (and wants exact SR/RR lengths), while a
# receiver's SRs and keyframe requests before a bad tail must still count.
def _packets(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(first byte, packet type, offset, length) of each packet of a compound
    plaintext RTCP packet; a malformed tail ends the walk."""
    pos = 0
    while pos + 4 <= len(data):
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        length = 4 * (words + 1)
        if b0 >> 6 != 2 or pos + length > len(data):
            return
        yield b0, pt, pos, length
        pos += length


def parse_sender_reports(data: bytes) -> list[SenderReport]:
    """SRs in a (compound) plaintext RTCP packet; malformed tails are ignored."""
    reports = []
    for _b0, pt, pos, length in _packets(data):
        if pt == RTCP_SR and length >= 28:
            ssrc, ntp_hi, ntp_lo = struct.unpack_from("!III", data, pos + 4)
            reports.append(SenderReport(ssrc, ((ntp_hi & 0xFFFF) << 16) | (ntp_lo >> 16)))
    return reports


def parse_keyframe_requests(data: bytes) -> set[int]:
    """Media SSRCs a receiver asks a keyframe for: PLI (RFC 4585) and FIR
    (RFC 5104, one SSRC per FCI entry)."""
    wanted: set[int] = set()
    for b0, pt, pos, length in _packets(data):
        if pt != RTCP_PSFB or length < 12:
            continue
        if b0 & 0x1F == RTCP_PSFB_PLI:
            wanted.add(struct.unpack_from("!I", data, pos + 8)[0])
        elif b0 & 0x1F == RTCP_PSFB_FIR:
            for entry in range(pos + 12, pos + length - 7, 8):
                wanted.add(struct.unpack_from("!I", data, entry)[0])
    return wanted


def fir(sender_ssrc: int, media_ssrcs: list[int], seqnr: int) -> bytes:
    # aiortc has no FIR entry type: each FCI entry is SSRC, sequence number, 3 reserved bytes
    entries = b"".join(struct.pack("!IB3x", ssrc, seqnr & 0xFF) for ssrc in media_ssrcs)
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=sender_ssrc, media_ssrc=0, fci=entries))


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc))


def keyframe_request(sender_ssrc: int, media_ssrcs: list[int], seqnr: int) -> bytes:
    """FIR, which Wire's clients answer, compounded with a PLI per SSRC for
    senders that only answer PLI (aiortc)."""
    return fir(sender_ssrc, media_ssrcs, seqnr) + b"".join(
        pli(sender_ssrc, ssrc) for ssrc in media_ssrcs)


@dataclass
class ReportState:
    """What the previous receiver report of one SSRC counted (RFC 3550 A.3)."""

    expected: int = 0
    received: int = 0


def report_block(report: SenderReport, received_at: float, stats: ReceiveStats | None,
                 prior: ReportState) -> RtcpReceiverInfo:
    """One RR report block for the SSRC of ``report``: loss since the last
    report and in all, extended highest sequence number and jitter from the
    data plane's counts; LSR/DLSR let the sender compute the round trip."""
    dlsr = int((time.monotonic() - received_at) * 65536) & 0xFFFFFFFF
    lost = fraction = highest = jitter = 0
    if stats is not None:
        expected = stats.highest_seq - stats.first_seq + 1
        lost = max(-0x800000, min(0x7FFFFF, expected - stats.received))
        expected_interval = expected - prior.expected
        lost_interval = expected_interval - (stats.received - prior.received)
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        prior.expected, prior.received = expected, stats.received
        highest = stats.highest_seq & 0xFFFFFFFF
        jitter = min(stats.jitter, 0xFFFFFFFF)
    return RtcpReceiverInfo(ssrc=report.ssrc, fraction_lost=fraction, packets_lost=lost,
                            highest_sequence=highest, jitter=jitter, lsr=report.ntp_middle,
                            dlsr=dlsr)


def receiver_report(sender_ssrc: int, block: RtcpReceiverInfo) -> bytes:
    return bytes(RtcpRrPacket(ssrc=sender_ssrc, reports=[block]))
