"""RTCP the SFT writes and reads itself: receiver report blocks (RFC 3550 A.3)
and keyframe requests from receivers (RFC 4585 PLI, RFC 5104 FIR)."""

from __future__ import annotations

import struct

from aiortc.rtp import RTCP_RR, RTCP_SR

from sftd.controller import rtcp
from sftd.controller.dataplane import ReceiveStats

SR = rtcp.SenderReport(ssrc=0xABCD, ntp_middle=0x12345678)


def fields(block: object) -> tuple[int, int, int, int, int]:
    ssrc, loss, highest, jitter, lsr, _dlsr = struct.unpack("!IIIIII", bytes(block))
    assert ssrc == SR.ssrc and lsr == SR.ntp_middle
    cumulative = loss & 0xFFFFFF
    return loss >> 24, cumulative - (1 << 24) if cumulative & 0x800000 else cumulative, \
        highest, jitter, ssrc


def test_loss_fraction_is_per_interval_and_cumulative_loss_in_all():
    prior = rtcp.ReportState()
    # first report: 100 expected (seq 1000..1099), 90 received
    first = rtcp.report_block(SR, 0.0, ReceiveStats(90, 1000, 1099, 37), prior)
    fraction, lost, highest, jitter, _ = fields(first)
    assert (fraction, lost, highest, jitter) == ((10 << 8) // 100, 10, 1099, 37)
    # second: 100 more expected, all 100 received: no loss in this interval
    second = rtcp.report_block(SR, 0.0, ReceiveStats(190, 1000, 1199, 5), prior)
    assert fields(second)[:2] == (0, 10)
    # duplicates make the cumulative count negative, the fraction stays 0
    third = rtcp.report_block(SR, 0.0, ReceiveStats(205, 1000, 1201, 5), prior)
    assert fields(third)[:2] == (0, -3)


def test_extended_sequence_number_carries_the_cycles():
    block = rtcp.report_block(SR, 0.0, ReceiveStats(10, 0x1FFFA, 0x20003, 0),
                              rtcp.ReportState())
    assert fields(block)[2] == 0x20003


def test_nothing_counted_yet_reports_zeroes():
    assert fields(rtcp.report_block(SR, 0.0, None, rtcp.ReportState()))[:4] == (0, 0, 0, 0)


def test_keyframe_requests_name_the_media_ssrcs():
    pli = rtcp.pli(1, 0x11)
    fir = rtcp.fir(1, [0x22, 0x33], 7)
    sr = struct.pack("!BBHIIIIII", 0x80, RTCP_SR, 6, 9, 0, 0, 0, 0, 0)
    assert rtcp.parse_keyframe_requests(sr + pli + fir) == {0x11, 0x22, 0x33}
    assert rtcp.parse_keyframe_requests(pli[:-4]) == set()  # truncated: ignored
    assert rtcp.parse_keyframe_requests(b"\xff" * 40) == set()


def test_receiver_report_is_one_block_after_our_ssrc():
    block = rtcp.report_block(SR, 0.0, ReceiveStats(90, 1000, 1099, 37), rtcp.ReportState())
    packet = rtcp.receiver_report(0x5151, block)
    assert packet[:8] == struct.pack("!BBHI", 0x81, RTCP_RR, 7, 0x5151)
    assert packet[8:] == bytes(block) and len(packet) == 32
