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

    def expect(self, plain_in: bytes) -> bytes:
        """The SRTP packet the slot's subscriber must get for this publisher packet."""
        b0, b1, ts, ssrc, rest = split_rtp(plain_in)
        if ssrc != self.source:
            self.ts_offset = (self.last_out_ts + TS_STEP[self.kind] - ts) & 0xFFFFFFFF
            self.source = ssrc
        out_ts = (ts + self.ts_offset) & 0xFFFFFFFF
        self.last_out_ts = out_ts
        header = struct.pack("!BBHIII", (b0 & 0xF0) | 1, b1, self.next_index & 0xFFFF, out_ts,
                             self.ssrc, self.csrc)
        self.next_index += 1
        return self.subscriber.expected.protect(header + rest)
