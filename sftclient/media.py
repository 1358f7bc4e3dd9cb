"""Synthetic media sources: a tone with settable loudness, a moving VP8-able pattern.

aiortc computes the RFC 6464 audio level it puts in the ssrc-audio-level
extension from each audio frame it encodes (``rtp.compute_audio_level_dbov``),
so changing :attr:`ToneTrack.amplitude` changes the level the SFT sees:
level ≈ 20·log10(amplitude/√2) dBov (amplitude 0.5 → −9, 0.01 → −43,
0 → −127, i.e. silence).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from array import array

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)  # 960
TONE_HZ = 400  # 8 whole periods in 20 ms: one precomputed frame loops seamlessly
VIDEO_CLOCK = 90000


class _Paced:
    """Releases one frame every ``period`` seconds, on a fixed schedule."""

    def __init__(self, period: float) -> None:
        self._period = period
        self._start: float | None = None
        self._index = 0

    async def next(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._index += 1
            wait = self._start + self._index * self._period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:  # fell far behind (loaded machine): re-anchor
                self._start = time.monotonic() - self._index * self._period
        return self._index


class ToneTrack(MediaStreamTrack):
    """Mono 48 kHz s16 sine tone in 20 ms frames; ``amplitude`` in [0, 1]."""

    kind = "audio"

    def __init__(self, amplitude: float = 0.3, frequency: int = TONE_HZ) -> None:
        super().__init__()
        self.amplitude = amplitude
        self._unit = [math.sin(2 * math.pi * frequency * i / AUDIO_RATE)
                      for i in range(AUDIO_SAMPLES)]
        self._cached: tuple[float, bytes] | None = None
        self._pace = _Paced(AUDIO_PTIME)
        self._time_base = fractions.Fraction(1, AUDIO_RATE)

    def _samples(self) -> bytes:
        amplitude = max(0.0, min(1.0, float(self.amplitude)))
        if self._cached is None or self._cached[0] != amplitude:
            scale = 32767 * amplitude
            self._cached = (amplitude, array("h", (int(scale * v) for v in self._unit)).tobytes())
        return self._cached[1]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pace.next()
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(self._samples())
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * AUDIO_SAMPLES
        frame.time_base = self._time_base
        return frame


class PatternTrack(MediaStreamTrack):
    """A moving bar over a per-instance background colour, yuv420p."""

    kind = "video"

    def __init__(self, width: int = 160, height: int = 120, fps: int = 15, seed: int = 0) -> None:
        super().__init__()
        self.width = width - width % 2
        self.height = height - height % 2
        self.fps = fps
        self._pace = _Paced(1.0 / fps)
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._bg = 40 + (seed * 37) % 160
        self._u = bytes([(seed * 53) % 256]) * ((self.width // 2) * (self.height // 2))
        self._v = bytes([(seed * 97 + 128) % 256]) * ((self.width // 2) * (self.height // 2))

    def _luma(self, index: int) -> bytes:
        bar = max(4, self.width // 8)
        x0 = (index * 4) % self.width
        row = bytearray([self._bg]) * self.width
        for x in range(x0, min(x0 + bar, self.width)):
            row[x] = 235
        # A second, vertical moving element so every frame differs in both axes.
        y0 = (index * 2) % self.height
        plane = bytearray(bytes(row) * self.height)
        start = y0 * self.width
        plane[start:start + self.width * 2] = b"\x10" * min(self.width * 2, len(plane) - start)
        return bytes(plane)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pace.next()
        frame = av.VideoFrame(width=self.width, height=self.height, format="yuv420p")
        planes = frame.planes
        _fill_plane(planes[0], self._luma(index), self.width)
        _fill_plane(planes[1], self._u, self.width // 2)
        _fill_plane(planes[2], self._v, self.width // 2)
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = self._time_base
        return frame


def _fill_plane(plane: av.video.plane.VideoPlane, data: bytes, width: int) -> None:
    """Copy tightly packed rows into a plane that may have padded lines."""
    stride = plane.line_size
    if stride == width:
        plane.update(data)
        return
    rows = len(data) // width
    padded = bytearray(stride * rows)
    for r in range(rows):
        padded[r * stride:r * stride + width] = data[r * width:(r + 1) * width]
    plane.update(bytes(padded))
