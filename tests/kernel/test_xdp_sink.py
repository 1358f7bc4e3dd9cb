"""The load generator's sink (bpf/src/sink.bpf.c at TC ingress, sftload/sink.py) on a
real veth: it counts what a peer sends to a leg socket the way the generator's C
receiver counts (per leg, per SSRC with sequence numbers, per CSRC), drops it, and
lets 1 packet in N per leg and all control traffic through to the socket. Packets
a TC program redirected on their way (the kernel plane's copies) count too."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from test_xsk_steering import HOST_IP, PEER_IP, STUN, VethPeer, receive_udp

from sftd.bpf import abi as abi_mod
from sftd.bpf import libbpf
from sftd.bpf.xdpprog import TC_HANDLE, TC_PRIORITY
from sftd.sftload import media
from sftd.sftload.fastpath import FastPath, Received
from sftd.sftload.sink import XdpSink, interface_of
from tests.conftest import owned_name

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]

LEG_PORT, PEER_PORT = 40020, 5000
AUDIO, VIDEO, UNKNOWN = 0xA0A0, 0xB0B0, 0xC0C0
AUDIO_CSRC, VIDEO_CSRC = 0x11, 0x22
RTCP_RR = bytes([0x81, 201, 0, 7]) + bytes(28)


def rtp(ssrc: int, seq: int, csrc: int | None) -> bytes:
    first = 0x81 if csrc is not None else 0x80
    header = struct.pack("!BBHII", first, 111, seq & 0xFFFF, seq * 960, ssrc)
    return header + (struct.pack("!I", csrc) if csrc is not None else b"") + bytes(40)


@pytest.fixture
def veth() -> Iterator[VethPeer]:
    with VethPeer("s") as v:
        yield v


@dataclass
class SinkLeg:
    fp: FastPath
    sink: XdpSink
    sock: socket.socket
    leg: int


@contextmanager
def sink_leg(veth: VethPeer, sample_every: int, slots: dict[int, int]) -> Iterator[SinkLeg]:
    """The sink on ``veth`` with one leg socket at LEG_PORT and its slots (SSRC: kind)."""
    fp = FastPath(1)
    sink = XdpSink(fp, veth.host_if, sample_every=sample_every, instance=owned_name("sink"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST_IP, LEG_PORT))
        leg = fp.add_leg(sock.fileno(), (PEER_IP, PEER_PORT))
        sink.add_leg(leg, (HOST_IP, LEG_PORT))
        for ssrc, kind in slots.items():
            sink.add_slot(leg, ssrc, kind)
        yield SinkLeg(fp, sink, sock, leg)
    finally:
        sock.close()
        sink.close()
        fp.close()


def test_counts_match_what_was_sent_and_one_in_n_reaches_the_socket(veth):
    assert interface_of(HOST_IP) == veth.host_if
    with sink_leg(veth, 10, {AUDIO: 0, VIDEO: 1}) as s:
        sink, sock, leg = s.sink, s.sock, s.leg
        # TC ingress: it runs on the receiving core, not the veth sender's
        assert libbpf.tc_prog_id(sink.prog.ifindex, TC_HANDLE, TC_PRIORITY) > 0
        assert libbpf.xdp_prog_id(sink.prog.ifindex, libbpf.XDP_FLAGS_SKB_MODE) == 0

        audio = [rtp(AUDIO, seq, AUDIO_CSRC) for seq in range(100, 150)]
        audio.insert(30, rtp(AUDIO, 120, AUDIO_CSRC))  # a duplicate: counted as reordered
        video = [rtp(VIDEO, seq, VIDEO_CSRC) for seq in range(65530, 65560)]  # wraps
        unknown = [rtp(UNKNOWN, seq, None) for seq in range(5)]
        media = audio + video + unknown
        veth.send([(PEER_PORT, p) for p in media + [STUN, RTCP_RR]], (HOST_IP, LEG_PORT))

        got = receive_udp(sock)
        sink.refresh()
        stat = sink.leg_stat(leg)
        assert stat["rx_rtp"] == len(media) == 86
        assert stat["rx_bytes"] == sum(len(p) for p in media)
        assert stat["rx_unknown_ssrc"] == 5 and stat["rx_no_csrc"] == 0
        assert stat["first_audio_ns"] > 0 and stat["first_video_ns"] > 0
        slots = {s.ssrc: s for s in sink.slot_stats(leg)}
        assert (slots[AUDIO].packets, slots[AUDIO].base, slots[AUDIO].ext_max,
                slots[AUDIO].reordered, slots[AUDIO].started) == (51, 100, 149, 1, True)
        assert (slots[VIDEO].packets, slots[VIDEO].base, slots[VIDEO].ext_max,
                slots[VIDEO].reordered) == (30, 65530, 65559, 0)
        assert sink.csrc_stats(leg) == {(0, AUDIO_CSRC): 51, (1, VIDEO_CSRC): 30}

        # the 10th, 20th, ... RTP packet of the leg and every control packet got through
        assert got == [media[i] for i in range(9, len(media), 10)] + [STUN, RTCP_RR]


def test_a_slot_whose_source_changes_counts_each_csrc(veth):
    """A video slot switched between publishers and back: the sink keeps the
    current CSRC's run in the slot and adds it to the map when the CSRC changes;
    the counts are the same either way."""
    a, b = 0x31, 0x32
    sources = [a] * 5 + [b] * 3 + [a] * 2 + [b] * 4
    with sink_leg(veth, 1000, {VIDEO: 1}) as s:
        sink, leg = s.sink, s.leg
        veth.send([(PEER_PORT, rtp(VIDEO, seq, csrc)) for seq, csrc in enumerate(sources)],
                  (HOST_IP, LEG_PORT))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            sink.refresh()
            if sink.leg_stat(leg)["rx_rtp"] == len(sources):
                break
            time.sleep(0.02)
        assert sink.csrc_stats(leg) == {(1, a): 7, (1, b): 7}
        sink.refresh()  # reading twice counts the open run once
        assert sink.csrc_stats(leg) == {(1, a): 7, (1, b): 7}


def test_the_sampling_rate_changes_while_it_runs(veth):
    """sft-load --samples-per-second sets 1 in N before each window."""
    with sink_leg(veth, 10, {AUDIO: 0}) as s:
        sink, sock = s.sink, s.sock
        first = [rtp(AUDIO, seq, AUDIO_CSRC) for seq in range(20)]
        veth.send([(PEER_PORT, p) for p in first], (HOST_IP, LEG_PORT))
        assert receive_udp(sock) == [first[9], first[19]]
        sink.set_sample_every(4)
        with pytest.raises(ValueError, match="sample_every"):
            sink.set_sample_every(0)
        assert sink.sample_every == 4
        then = [rtp(AUDIO, seq, AUDIO_CSRC) for seq in range(20, 40)]
        veth.send([(PEER_PORT, p) for p in then], (HOST_IP, LEG_PORT))
        # the leg's count goes on from 20: packets 24, 28, ... 40 of the leg
        assert receive_udp(sock) == [then[i] for i in range(3, 20, 4)]


def test_each_leg_counts_only_its_own_slots(veth):
    """Slots live in one array, a block per leg: the same SSRC at two legs is two
    slots, an SSRC of one leg arriving at another is unknown there, and a leg
    takes at most SFT_SINK_LEG_SLOTS slots."""
    with sink_leg(veth, 1000, {AUDIO: 0, VIDEO: 1}) as s, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_sock:
        sink, fp = s.sink, s.fp
        other_sock.bind((HOST_IP, LEG_PORT + 1))
        other = fp.add_leg(other_sock.fileno(), (PEER_IP, PEER_PORT))
        sink.add_leg(other, (HOST_IP, LEG_PORT + 1))
        sink.add_slot(other, VIDEO, 1)
        veth.send([(PEER_PORT, rtp(VIDEO, seq, VIDEO_CSRC)) for seq in range(10)],
                  (HOST_IP, LEG_PORT))
        veth.send([(PEER_PORT, rtp(VIDEO, seq, VIDEO_CSRC)) for seq in range(100, 103)]
                  + [(PEER_PORT, rtp(AUDIO, 1, AUDIO_CSRC))], (HOST_IP, LEG_PORT + 1))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            sink.refresh()
            if sink.leg_stat(s.leg)["rx_rtp"] + sink.leg_stat(other)["rx_rtp"] == 14:
                break
            time.sleep(0.02)
        mine = {x.ssrc: x for x in sink.slot_stats(s.leg)}
        theirs = {x.ssrc: x for x in sink.slot_stats(other)}
        assert (mine[VIDEO].packets, mine[VIDEO].base, mine[AUDIO].packets) == (10, 0, 0)
        assert (theirs[VIDEO].packets, theirs[VIDEO].base) == (3, 100)
        assert sink.leg_stat(other)["rx_unknown_ssrc"] == 1  # AUDIO is not its slot
        assert sink.extended_highest(other, VIDEO) == 102
        assert sink.extended_highest(other, AUDIO) is None
        limit = abi_mod.load().consts.SFT_SINK_LEG_SLOTS
        for ssrc in range(1, limit):
            sink.add_slot(other, ssrc, 0)
        with pytest.raises(ValueError, match="slots per leg"):
            sink.add_slot(other, limit, 0)


def test_unregistered_sockets_and_bad_config_are_left_alone(veth):
    with pytest.raises(ValueError, match="sample_every"):
        XdpSink(FastPath(1), veth.host_if, sample_every=0, instance=owned_name("sink"))
    fp = FastPath(1)
    sink = XdpSink(fp, veth.host_if, sample_every=1000, instance=owned_name("sink"))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind((HOST_IP, LEG_PORT + 1))
            veth.send([(PEER_PORT, rtp(AUDIO, 1, None))] * 3, (HOST_IP, LEG_PORT + 1))
            assert len(receive_udp(other)) == 3  # no leg there: every packet passes
    finally:
        sink.close()
        fp.close()


def redirect_through_tc(veth: VethPeer) -> None:
    """The peer's packets to HOST_IP leave through a second veth pair whose far end
    redirects them (act_mirred) out of the peer's end of ``veth``: they reach the
    sink marked as redirected, as the kernel plane's clone_redirect copies do."""
    def peer(*args: str) -> None:
        subprocess.run(["ip", "-n", veth.netns, *args], check=True, capture_output=True)

    near, far = f"{veth.peer_if}a", f"{veth.peer_if}b"
    peer("link", "add", near, "type", "veth", "peer", "name", far)
    peer("link", "set", near, "up")
    peer("link", "set", far, "up")
    peer("route", "add", f"{HOST_IP}/32", "dev", near, "src", PEER_IP)
    peer("neigh", "add", HOST_IP, "lladdr", veth.host_mac.hex(":"), "dev", near,
         "nud", "permanent")
    for tc in (["qdisc", "add", "dev", far, "clsact"],
               ["filter", "add", "dev", far, "ingress", "protocol", "ip", "u32", "match",
                "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                veth.peer_if]):
        subprocess.run(["tc", "-n", veth.netns, *tc], check=True, capture_output=True)


def test_packets_a_tc_program_redirected_are_counted(veth):
    """The kernel plane sends its copies with bpf_clone_redirect; generic XDP skips
    such packets (the former sink saw none and the bench reported 100 % loss)."""
    redirect_through_tc(veth)
    with sink_leg(veth, 4, {AUDIO: 0}) as s:
        sink, sock, leg = s.sink, s.sock, s.leg
        packets = [rtp(AUDIO, seq, AUDIO_CSRC) for seq in range(20)]
        veth.send([(PEER_PORT, p) for p in packets], (HOST_IP, LEG_PORT))

        got = receive_udp(sock)
        sink.refresh()
        assert sink.leg_stat(leg)["rx_rtp"] == 20
        assert sink.csrc_stats(leg) == {(0, AUDIO_CSRC): 20}
        assert got == [packets[i] for i in range(3, 20, 4)]  # and the samples got through


def test_samples_of_a_stream_that_wrapped_before_its_first_sample_decrypt(veth):
    """The SFT numbers a slot from a random sequence number; this one starts at
    65500 and wraps (ROC 1 at the sender) before its 100th packet, the first
    that reaches the socket. The C receiver sees only the samples, so its own
    count starts there at ROC 0; the sink counted every packet and knows better.
    (The native-xdp capacity benchmark's "4 of 560 sampled copies failed
    authentication, all on one SSRC" was such a stream.)"""
    key = os.urandom(media.KEY_LEN + media.SALT_LEN)
    sender = media.session(key, inbound=False)
    sent = [rtp(VIDEO, seq, VIDEO_CSRC) for seq in range(65500, 65500 + 300)]
    fp = FastPath(1)
    sink = XdpSink(fp, veth.host_if, sample_every=100, instance=owned_name("sink"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver_rocs: list[int] = []
    receiver_pop = fp.pop_samples

    def pop_recording_the_receivers_roc() -> list[Received]:
        got = receiver_pop()
        receiver_rocs.extend(roc for *_, roc, _kernel_ns in got)
        return got

    fp.pop_samples = pop_recording_the_receivers_roc  # type: ignore[method-assign]
    try:
        sock.bind((HOST_IP, LEG_PORT))
        leg = fp.add_leg(sock.fileno(), (PEER_IP, PEER_PORT))
        fp.add_slot(leg, VIDEO, 1)
        sink.add_leg(leg, (HOST_IP, LEG_PORT))
        sink.add_slot(leg, VIDEO, 1)
        fp.enable(leg)
        fp.start()
        veth.send([(PEER_PORT, sender.protect(p)) for p in sent], (HOST_IP, LEG_PORT))
        samples: list[Received] = []
        deadline = time.monotonic() + 5
        while len(samples) < 3 and time.monotonic() < deadline:
            samples += sink.pop_samples()
            time.sleep(0.02)
        assert [int.from_bytes(d[2:4], "big") for _, d, *_ in samples] == [63, 163, 263]
        # stamped by the kernel on arrival (the SFT-side latency ends there), before
        # the receiving thread read them, on the same clock
        assert all(0 < kernel_ns <= recv_ns < kernel_ns + 1_000_000_000
                   for _, _, _, recv_ns, _, kernel_ns in samples)
        assert receiver_rocs == [0, 0, 0]  # what the sampler used to decrypt with
        sampler = media.SrtpReceiver(key)
        assert [sampler.unprotect(data, roc) for _, data, _, _, roc, _ in samples] == \
            [sent[99], sent[199], sent[299]]
    finally:
        fp.stop()
        sock.close()
        sink.close()
        fp.close()
