"""Packets, SRTP peers and a network namespace for the kernel data-plane tests."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field

from pylibsrtp import Policy, Session

from sftd.controller.dataplane import ExtensionIds, LegSpec, SrtpKeys
from tests.conftest import owned_name

SFT_IP = "10.77.0.1"
PROFILE = "SRTP_AES128_CM_SHA1_80"
_ids = itertools.count(1)


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes,
              src_mac: bytes = b"\x02\0\0\0\0\x01", dst_mac: bytes = b"\x02\0\0\0\0\x02",
              ip_id: int = 0x1234) -> bytes:
    udp_len = 8 + len(payload)
    saddr, daddr = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
    udp_csum = csum16(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id, 0x4000, 64, 17, 0,
                     saddr, daddr)
    ip = ip[:10] + struct.pack("!H", csum16(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


@dataclass
class Frame:
    dst_mac: bytes
    src_mac: bytes
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    ip_csum_ok: bool
    udp_csum_ok: bool


def parse_frame(frame: bytes) -> Frame | None:
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ip = frame[14:34]
    udp_len = struct.unpack("!H", frame[38:40])[0]
    udp = frame[34:34 + udp_len]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, udp_len)
    sport, dport = struct.unpack("!HH", udp[:4])
    return Frame(dst_mac=frame[:6], src_mac=frame[6:12],
                 src=(socket.inet_ntoa(ip[12:16]), sport), dst=(socket.inet_ntoa(ip[16:20]), dport),
                 payload=udp[8:], ip_csum_ok=csum16(ip) == 0,
                 udp_csum_ok=struct.unpack("!H", udp[6:8])[0] != 0 and csum16(pseudo + udp) == 0)


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 111, marker: bool = False,
        csrcs: tuple[int, ...] = (), ext: tuple[int, bytes] | None = None,
        padding: int = 0) -> bytes:
    """An RTP packet; ext = (profile, element bytes padded by us to 32 bits)."""
    b0 = 0x80 | len(csrcs) | (0x10 if ext else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF,
                      ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext:
        profile, body = ext
        body += b"\0" * (-len(body) % 4)
        out += struct.pack("!HH", profile, len(body) // 4) + body
    out += payload
    if padding:
        out += b"\0" * (padding - 1) + bytes([padding])
    return out


def one_byte_ext(*elements: tuple[int, bytes]) -> tuple[int, bytes]:
    return 0xBEDE, b"".join(bytes([(i << 4) | (len(d) - 1)]) + d for i, d in elements)


def two_byte_ext(*elements: tuple[int, bytes]) -> tuple[int, bytes]:
    return 0x1000, b"".join(bytes([i, len(d)]) + d for i, d in elements)


def srtp_session(master: bytes, outbound: bool) -> Session:
    policy = Policy(key=master, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound
                    else Policy.SSRC_ANY_INBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = True
    session = Session(policy=policy)
    # pylibsrtp's 1500-byte work buffer keeps 144 bytes for the trailer, too little
    # for full-MTU RTP: give it room (a test-only reach into its internals).
    from pylibsrtp._binding import ffi
    session._cdata = ffi.new("char[]", 4096)
    session._buffer = ffi.buffer(session._cdata)
    return session


@dataclass
class Peer:
    """A client leg: what it sends is protected with rx, what it gets with tx."""

    spec: LegSpec
    sender: Session = field(init=False)
    expected: Session = field(init=False)
    receiver: Session = field(init=False)

    def __post_init__(self) -> None:
        self.sender = srtp_session(self.spec.srtp.rx, outbound=True)
        self.expected = srtp_session(self.spec.srtp.tx, outbound=True)
        self.receiver = srtp_session(self.spec.srtp.tx, outbound=False)

    @property
    def leg_id(self) -> int:
        return self.spec.leg_id

    def frame(self, srtp_packet: bytes) -> bytes:
        return udp_frame(self.spec.remote_addr, self.spec.local_addr, srtp_packet)


def make_peer(index: int, sft_port: int, remote_ip: str | None = None, n_audio: int = 2,
              n_video: int = 2, extensions: ExtensionIds = ExtensionIds(),
              conference_id: int = 7) -> Peer:
    leg_id = next(_ids)
    return Peer(LegSpec(
        leg_id=leg_id, conference_id=conference_id, local_addr=(SFT_IP, sft_port),
        remote_addr=(remote_ip or f"10.77.0.{10 + index}", 5000 + index),
        srtp=SrtpKeys(profile=PROFILE, rx=os.urandom(30), tx=os.urandom(30)),
        audio_slot_ssrcs=tuple(0x5F000000 + leg_id * 16 + i for i in range(n_audio)),
        video_slot_ssrcs=tuple(0x5F100000 + leg_id * 16 + i for i in range(n_video)),
        extensions=extensions))


class Namespace:
    """A network namespace with a veth pair sft0 (the SFT side, SFT_IP) -- cap0
    (capture side); neighbours 10.77.0.2..250 resolve to cap0's MAC."""

    def __init__(self) -> None:
        self.name = owned_name(f"sftk{time.monotonic_ns() % 100000}")
        self._pushed = False

    def ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True,
                              text=True).stdout

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            self.ip("link", "add", "sft0", "type", "veth", "peer", "name", "cap0")
            for dev in ("lo", "sft0", "cap0"):
                self.ip("link", "set", dev, "up")
            self.ip("addr", "add", f"{SFT_IP}/24", "dev", "sft0")
            self.cap_mac = bytes.fromhex(self._mac("cap0"))
            self.sft_mac = bytes.fromhex(self._mac("sft0"))
            for host in range(2, 251):
                self.ip("neigh", "replace", f"10.77.0.{host}", "lladdr",
                        self.cap_mac.hex(":"), "dev", "sft0", "nud", "permanent")
            from pyroute2 import netns
            netns.pushns(self.name)
            self._pushed = True
            self.sft_ifindex = socket.if_nametoindex("sft0")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mac(self, dev: str) -> str:
        out = self.ip("-br", "link", "show", dev).split()
        return out[2].replace(":", "")

    def capture(self) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.bind(("cap0", 0))
        sock.settimeout(0.2)
        return sock

    def __exit__(self, *exc: object) -> None:
        if self._pushed:
            from pyroute2 import netns
            netns.popns()
            self._pushed = False
        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)


def drain(sock: socket.socket, expected: int, timeout: float = 1.0) -> list[Frame]:
    """UDP/IPv4 frames seen on the capture side (other traffic, e.g. IPv6 ND, skipped)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except (TimeoutError, BlockingIOError):
            if len(frames) >= expected:
                break
            continue
        frame = parse_frame(data)
        if frame is not None:
            frames.append(frame)
        if len(frames) >= expected:
            sock.settimeout(0.05)
    return frames
