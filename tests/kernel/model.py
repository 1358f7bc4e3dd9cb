"""What a subscriber slot must receive, computed with pylibsrtp (the reference)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from harness import Peer

TS_STEP = {0: 960, 1: 3000}  # audio, video: gap the kernel leaves when a slot switches source


def split_rtp(plain: bytes) -> tuple[int, int, int, int, bytes]:
    """(byte0, byte1, timestamp, ssrc, everything after the CSRC list)."""
    b0, b1, _seq, ts, ssrc = struct.unpack("!BBHII", plain[:12])
    return b0, b1, ts, ssrc, plain[12 + 4 * (b0 & 0x0F):]


@dataclass
class SlotModel:
    subscriber: Peer
    ssrc: int
    csrc: int
    next_index: int
    kind: int = 0
    source: int | None = None
    ts_offset: int = 0
    last_out_ts: int = 0
    index_offset: int = 0
    last_in: int = 0  # extended sequence number of the source's newest packet

    def expect(self, plain_in: bytes) -> bytes:
        """The SRTP packet the slot's subscriber must get for this publisher packet:
        the source's sequence shifted onto the slot's, gaps included."""
        b0, b1, ts, ssrc, rest = split_rtp(plain_in)
        (seq,) = struct.unpack_from("!H", plain_in, 2)
        if ssrc != self.source:
            self.ts_offset = (self.last_out_ts + TS_STEP[self.kind] - ts) & 0xFFFFFFFF
            self.source = ssrc
            self.last_in, self.index_offset = seq, self.next_index - seq
        delta = (seq - self.last_in) & 0xFFFF
        in_index = self.last_in + (delta - 0x10000 if delta >= 0x8000 else delta)
        index = in_index + self.index_offset
        out_ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if index >= self.next_index:
            self.next_index, self.last_out_ts, self.last_in = index + 1, out_ts, in_index
        header = struct.pack("!BBHIII", (b0 & 0xF0) | 1, b1, index & 0xFFFF, out_ts,
                             self.ssrc, self.csrc)
        return self.subscriber.expected.protect(header + rest)
