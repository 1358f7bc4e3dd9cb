"""The Wire call mix (built and protected by the C sender, native/mix.c), and the
receiver's checks.

Per publisher (docs/benchmark.md): Opus-like audio, 50 pkt/s, 100-byte payload,
with the ssrc-audio-level extension (a slow per-participant curve, so the
loudest speakers change); one VP8 layer, 100 pkt/s, 1200-byte payload, RID
``h`` in the rtp-stream-id extension (sftd forwards video only after a RID),
25 frames/s of 4 packets, a VP8 payload descriptor and frame tag in front (the
part of a frame Wire's end-to-end encryption leaves in clear: S bit, P bit =
keyframe), keyframes on FIR/PLI. The rest of the payload is opaque; its first
bytes after the VP8 header carry the send timestamp (CLOCK_MONOTONIC ns),
the publisher index and a per-stream counter.
"""

from __future__ import annotations

import hmac
import math
import os
import random
import struct
from dataclasses import dataclass
from hashlib import sha1

import pylibsrtp

from sftd.bpf.srtp import SrtpSession, aes_cm

from .fastpath import lib as _c

# the mix as native/fastpath.h defines it (the C sender builds the packets)
AUDIO_INTERVAL_NS = int(_c.FP_AUDIO_INTERVAL_NS)
VIDEO_INTERVAL_NS = int(_c.FP_VIDEO_INTERVAL_NS)
VIDEO_PACKETS_PER_FRAME = int(_c.FP_VIDEO_PACKETS_PER_FRAME)
AUDIO_PAYLOAD = int(_c.FP_AUDIO_PAYLOAD)
VIDEO_PAYLOAD = int(_c.FP_VIDEO_PAYLOAD)
STAMP = struct.Struct("!QIIQ")  # due ns, publisher index, stream counter, built ns
VP8_HEADER = 4  # payload descriptor (1) + frame tag (3)
PT_PSFB = 206

PROFILE_CM_SHA1_80 = "SRTP_AES128_CM_SHA1_80"
KEY_LEN, SALT_LEN = 16, 14


def srtp_pair(profile: str, material: bytes, role: str) -> tuple[bytes, bytes]:
    """(our key||salt, their key||salt) from RFC 5764 keying material."""
    if profile != PROFILE_CM_SHA1_80:
        raise ValueError(f"SRTP profile {profile} negotiated; the load generator (and the "
                         "kernel data plane) use AES_CM_128_HMAC_SHA1_80 only")
    ck, sk = material[:KEY_LEN], material[KEY_LEN:2 * KEY_LEN]
    cs, ss = material[2 * KEY_LEN:2 * KEY_LEN + SALT_LEN], material[2 * KEY_LEN + SALT_LEN:]
    client, server = ck + cs, sk + ss
    return (client, server) if role == "client" else (server, client)


def session(key_salt: bytes, inbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key_salt,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound
        else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = False
    policy.window_size = 1024
    return pylibsrtp.Session(policy=policy)


class SrtpError(ValueError):
    pass


class SrtpReceiver:
    """AES_CM_128_HMAC_SHA1_80 unprotect with an explicit rollover counter
    (RFC 3711 §3-4), for sampled packets.

    libsrtp guesses the ROC from the packets it has seen; a receiver that
    decrypts only 1 packet in 100 has not seen a stream's wrap and would guess
    wrong. The C receiver sees every packet, so it knows each one's extended
    sequence number, and the ROC comes with the sample. The keys are the
    receiver leg's own (RFC 5764 export); the test suite checks this against
    libsrtp's protect.
    """

    def __init__(self, key_salt: bytes) -> None:
        self.keys = SrtpSession.from_master(key_salt[:KEY_LEN + SALT_LEN])

    def unprotect(self, packet: bytes, roc: int) -> bytes:
        if len(packet) < 12 + 10:
            raise SrtpError("too short")
        body, tag = packet[:-10], packet[-10:]
        mac = hmac.new(self.keys.auth_key, body + roc.to_bytes(4, "big"), sha1).digest()[:10]
        if not hmac.compare_digest(mac, tag):
            raise SrtpError("authentication failure")
        b0 = body[0]
        off = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            off += 4 + 4 * struct.unpack_from("!H", body, off + 2)[0]
        seq = struct.unpack_from("!H", body, 2)[0]
        ssrc = struct.unpack_from("!I", body, 8)[0]
        index = (roc << 16) | seq
        return body[:off] + aes_cm(self.keys.enc_key, self.keys.iv(ssrc, index), body[off:])


@dataclass
class Streams:
    """What the answer declared and negotiated for one publisher."""

    audio_ssrc: int
    video_ssrc: int
    audio_pt: int = 111
    video_pt: int = 100
    audio_level_id: int = 1
    rid_id: int = 4


class Publisher:
    """One participant's share of the mix: where its schedule, sequence numbers,
    timestamps and level curve start (seeded by its index). The packets are
    built and protected in C when due (``native/mix.c``, through
    ``FastPath.set_publisher``)."""

    def __init__(self, index: int, streams: Streams, start_ns: int,
                 seed: int | None = None) -> None:
        rnd = random.Random(seed if seed is not None else index)
        self.index = index
        self.s = streams
        self.t0 = start_ns
        self.a_seq = rnd.randrange(1 << 16)
        self.v_seq = rnd.randrange(1 << 16)
        self.a_ts0 = rnd.randrange(1 << 32)
        self.v_ts0 = rnd.randrange(1 << 32)
        # level curve: 10..70 -dBov, own period and phase, so speakers change
        self.level_period = rnd.uniform(2.0, 6.0)
        self.level_phase = rnd.uniform(0, 2 * math.pi)
        self.next_audio = start_ns + rnd.randrange(AUDIO_INTERVAL_NS)
        self.next_video = start_ns + rnd.randrange(VIDEO_INTERVAL_NS)
        self.fill = os.urandom(VIDEO_PAYLOAD)


def wants_keyframe(rtcp: bytes) -> bool:
    """A plaintext compound RTCP packet carries a FIR or a PLI."""
    pos = 0
    while pos + 4 <= len(rtcp):
        b0, pt, words = struct.unpack_from("!BBH", rtcp, pos)
        if b0 >> 6 != 2:
            return False
        if pt == PT_PSFB and (b0 & 0x1F) in (1, 4):
            return True
        pos += 4 * (words + 1)
    return False


@dataclass
class SampleInfo:
    ssrc: int
    csrc: int | None
    due_ns: int
    publisher: int
    counter: int
    built_ns: int  # when the generator built it, just before sending


def parse_sample(plain: bytes, video: bool) -> SampleInfo:
    """Read our stamp back from a decrypted forwarded packet."""
    b0 = plain[0]
    cc = b0 & 0x0F
    off = 12 + 4 * cc
    csrc = struct.unpack_from("!I", plain, 12)[0] if cc else None
    if b0 & 0x10:
        words = struct.unpack_from("!H", plain, off + 2)[0]
        off += 4 + 4 * words
    if video:
        off += VP8_HEADER
    due_ns, pub, counter, built_ns = STAMP.unpack_from(plain, off)
    ssrc = struct.unpack_from("!I", plain, 8)[0]
    return SampleInfo(ssrc, csrc, due_ns, pub, counter, built_ns)
