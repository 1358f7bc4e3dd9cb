"""Helpers for tests/kernel/test_fuzz_programs.py: a fast BPF_PROG_TEST_RUN loop, fast
frame building, and reference models of what sft_xdp_ingress / sft_tc_ingress do
(bpf/src/sft.bpf.c), used as the per-packet oracle of the fuzz test."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from sftd.bpf import libbpf

ETH_P_IP = 0x0800
PORT_MIN, PORT_MAX = 40000, 40999  # the dp fixture's media ports
SFT_MAX_RTP = 1472
SFT_RTP_MIN = 22
TAG = 10
REPLAY_WINDOW = 64
XDP_DROP, XDP_PASS = 1, 2
TC_ACT_OK, TC_ACT_SHOT = 0, 2

_ip_hdr = struct.Struct("!BBHHHBBH4s4s")
_udp_hdr = struct.Struct("!HHHH")


class FastRunner:
    """BPF_PROG_TEST_RUN with preallocated options and output buffer (Program.test_run
    allocates per call, which dominates at a million packets)."""

    def __init__(self, program: libbpf.Program, out_size: int = 4096) -> None:
        ffi = libbpf.ffi
        self._ffi = ffi
        self._lib = libbpf.lib()
        self._fd = program.fd
        self._name = program.name
        self._out = ffi.new("char[]", out_size)
        self._out_size = out_size
        self._opts = ffi.new("struct bpf_test_run_opts *")
        self._opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        self._opts.data_out = self._out
        self._opts.repeat = 1

    def run(self, data: bytes) -> tuple[int, bytes]:
        opts = self._opts
        buf = self._ffi.from_buffer(data)
        opts.data_in = buf
        opts.data_size_in = len(data)
        opts.data_size_out = self._out_size
        ret = self._lib.bpf_prog_test_run_opts(self._fd, opts)
        if ret < 0:
            raise libbpf.BpfError(f"test run of program {self._name}", -ret,
                                  f"frame of {len(data)} bytes")
        return opts.retval, self._ffi.buffer(self._out, opts.data_size_out)[:]


def ip_csum(hdr: bytes) -> int:
    total = sum(struct.unpack("!10H", hdr))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


ETH = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"


def frame(src: tuple[bytes, int], dst: tuple[bytes, int], payload: bytes,
          ip_id: int = 0x1234) -> bytes:
    """Ethernet + IPv4 (no options, DF) + UDP (checksum 0: legal in IPv4, nobody checks)
    around payload; addresses as 4 raw bytes."""
    udp_len = 8 + len(payload)
    ip = _ip_hdr.pack(0x45, 0, 20 + udp_len, ip_id, 0x4000, 64, 17, 0, src[0], dst[0])
    ip = ip[:10] + struct.pack("!H", ip_csum(ip)) + ip[12:]
    return ETH + ip + _udp_hdr.pack(src[1], dst[1], udp_len, 0) + payload


def addr_key(frame_: bytes, l4: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(saddr, daddr, sport, dport) raw, as sft_addr_key compares them."""
    return (frame_[26:30], frame_[30:34], frame_[l4:l4 + 2], frame_[l4 + 2:l4 + 4])


def raw_addr(addr: tuple[str, int]) -> tuple[bytes, bytes]:
    return socket.inet_aton(addr[0]), struct.pack("!H", addr[1])


def to_a_leg(daddr: bytes, dport: bytes, legs_by_addr: dict) -> bool:
    """sft_to_a_leg: the destination is a leg's own socket (sft_leg_by_local)."""
    return any(key[1] == daddr and key[3] == dport for key in legs_by_addr)


# ---- sft_xdp_ingress ----

def xdp_model(f: bytes, legs_by_addr: dict) -> tuple[int, str | None]:
    """(verdict, the one kcounter that must increment, or None for 'not ours')."""
    n = len(f)
    if n < 14 or f[12] != 0x08 or f[13] != 0x00:
        return XDP_PASS, None
    if n < 34 or f[23] != 17:
        return XDP_PASS, None
    frag = (f[20] << 8) | f[21]
    if frag & 0x1FFF:
        return XDP_PASS, None
    ihl = (f[14] & 0x0F) * 4
    if ihl < 20 or f[14] >> 4 != 4:
        return XDP_PASS, None
    l4 = 14 + ihl
    if l4 + 8 > n:
        return XDP_PASS, None
    dport = (f[l4 + 2] << 8) | f[l4 + 3]
    if not PORT_MIN <= dport <= PORT_MAX:
        return XDP_PASS, None
    if not to_a_leg(f[30:34], f[l4 + 2:l4 + 4], legs_by_addr):
        return XDP_PASS, None
    if frag & 0x2000:
        return XDP_DROP, "XDP_DROP_FRAGMENT"
    udp_len = (f[l4 + 4] << 8) | f[l4 + 5]
    if udp_len < 10 or l4 + 10 > n:
        return XDP_DROP, "XDP_DROP_SHORT"
    plen = udp_len - 8
    b0, b1 = f[l4 + 8], f[l4 + 9]
    if b0 <= 3:
        return (XDP_PASS, "XDP_PASS_STUN") if plen >= 20 else (XDP_DROP, "XDP_DROP_SHORT")
    if 20 <= b0 <= 63:
        return (XDP_PASS, "XDP_PASS_DTLS") if plen >= 13 else (XDP_DROP, "XDP_DROP_SHORT")
    if b0 < 128 or b0 > 191:
        return XDP_DROP, "XDP_DROP_JUNK"
    if 192 <= b1 <= 223:
        return (XDP_PASS, "XDP_PASS_RTCP") if plen >= 8 else (XDP_DROP, "XDP_DROP_SHORT")
    if plen < SFT_RTP_MIN:
        return XDP_DROP, "XDP_DROP_SHORT"
    if addr_key(f, l4) not in legs_by_addr:
        return XDP_DROP, "XDP_DROP_UNKNOWN"
    return XDP_PASS, "XDP_PASS_RTP"


# ---- sft_tc_ingress ----

def estimate_index(highest: int, seq: int) -> int:
    roc, s_l = highest >> 16, highest & 0xFFFF
    if s_l < 32768:
        if seq > s_l + 32768 and roc > 0:
            roc -= 1
    elif seq < s_l - 32768:
        roc += 1
    return (roc << 16) | seq


@dataclass
class ReplayState:
    highest: int
    window: int = 1

    def seen(self, index: int) -> bool:
        if index > self.highest:
            return False
        d = self.highest - index
        return d >= REPLAY_WINDOW or bool((self.window >> d) & 1)

    def accept(self, index: int) -> None:
        if index > self.highest:
            d = index - self.highest
            self.window = 1 if d >= REPLAY_WINDOW else ((self.window << d) | 1) & (2**64 - 1)
            self.highest = index
        else:
            self.window |= 1 << ((self.highest - index) & 63)


def parse_rtp(srtp: bytes) -> tuple[str | None, dict]:
    """sft_parse_rtp: (kcounter of the MALFORMED drop, or None) and the fields used later."""
    rtp_len = len(srtp)
    b0 = srtp[0]
    if b0 >> 6 != 2:
        return "TC_BAD_VERSION", {}
    cc = b0 & 0x0F
    hdr = 12 + cc * 4
    if hdr > rtp_len - TAG:
        return "TC_TRUNCATED", {}
    if b0 & 0x10:
        if hdr + 4 > rtp_len - TAG:
            return "TC_TRUNCATED", {}
        ext_len = 4 + 4 * ((srtp[hdr + 2] << 8) | srtp[hdr + 3])
        if hdr + ext_len > rtp_len - TAG:
            return "TC_TRUNCATED", {}
        hdr += ext_len
    if rtp_len + 4 - cc * 4 > SFT_MAX_RTP:
        return "TC_OVERSIZE", {}
    return None, {"seq": (srtp[2] << 8) | srtp[3],
                  "ssrc": struct.unpack_from("!I", srtp, 8)[0],
                  "payload_off": hdr, "payload_len": rtp_len - TAG - hdr, "b0": b0}


@dataclass
class TcOutcome:
    verdict: int
    counter: str | None = None       # the one enum sft_counter DROP_* that increments
    kcounter: str | None = None      # the kcounter that goes with it, if any
    pass_control: bool = False       # TC_PASS_CONTROL (to the socket, counted)
    rx: bool = False                 # RX_PACKETS increments
    rx_bytes: int = 0                # what the code adds to RX_BYTES
    forwarded: int = 0               # copies sent (TX_PACKETS delta)
    authentic: bool = False          # passed HMAC from the leg owning the 5-tuple
    extra_k: list[str] = field(default_factory=list)  # per-slot kcounters (WAIT_KEYFRAME)


@dataclass
class Genuine:
    """An SRTP packet protected with a leg's real keys (``srtp``), and its plaintext."""

    leg_id: int
    ssrc: int
    index: int
    srtp: bytes
    plain: bytes
    keyframe: bool = False
