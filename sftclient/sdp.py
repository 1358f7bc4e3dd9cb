"""What the client needs from an SFT offer, and the minimal changes aiortc needs.

An SFT offer (docs/protocol.md §4) has, bundled: ``audio`` (our upstream audio),
``video`` (our upstream video), ``data`` (the data channel), then sendonly
audio slots (mids ``1``..``5``) and sendonly video slots (mids ``6``..).

aiortc 1.16 parses almost all of it. The one change made before
``setRemoteDescription`` is :func:`munge_offer_for_aiortc`:

* ``a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on`` — aiortc's
  parser splits the value into exactly two tokens and raises on the third, so the
  trailing extension attribute is dropped (``vad=on`` only says the sender may
  set the V bit; aiortc never does).

Left alone because aiortc copes: the legacy ``DTLS/SCTP 5000`` + ``a=sctpmap``
data m-line (aiortc answers in the same legacy syntax), ``a=rid``/
``a=simulcast`` lines (ignored by aiortc's parser; the client writes RID ``h``
itself, see ``client.RID_URI``), ``a=extmap-allow-mixed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"

_EXTMAP_EXTRA = re.compile(r"^(a=extmap:\S+ \S+)[ \t]+\S.*$")


def munge_offer_for_aiortc(sdp: str) -> str:
    """Return the offer with extmap extension attributes (``vad=on``) removed."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    out = []
    for line in sdp.splitlines():
        match = _EXTMAP_EXTRA.match(line)
        out.append(match.group(1) if match else line)
    return eol.join(out) + eol


@dataclass
class MLine:
    """One m-section of an SDP, as far as the client cares."""

    index: int
    kind: str  # audio | video | application
    mid: str = ""
    direction: str = "sendrecv"
    port: int = 0
    profile: str = ""
    ssrcs: list[int] = field(default_factory=list)
    extmaps: dict[str, int] = field(default_factory=dict)  # uri -> id
    payload_types: list[str] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)  # every a= line, raw


@dataclass
class SessionSummary:
    bundle: list[str]
    mlines: list[MLine]
    candidates: list[str]

    def by_mid(self, mid: str) -> MLine | None:
        return next((m for m in self.mlines if m.mid == mid), None)

    def slots(self, kind: str) -> list[MLine]:
        """The SFT's forwarding slots of one kind: sendonly in the offer, or
        recvonly in our answer (mids other than ``audio``/``video``)."""
        return [m for m in self.mlines if m.kind == kind and m.mid not in ("audio", "video")]

    def slot_ssrcs(self) -> dict[int, str]:
        """SSRC -> slot mid for every slot that announces its SSRC."""
        out: dict[int, str] = {}
        for m in self.mlines:
            if m.mid in ("audio", "video"):
                continue
            for ssrc in m.ssrcs:
                out[ssrc] = m.mid
        return out


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def summarize(sdp: str) -> SessionSummary:
    """Parse the parts of an SDP that tests and the client look at."""
    bundle: list[str] = []
    mlines: list[MLine] = []
    candidates: list[str] = []
    current: MLine | None = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            current = MLine(index=len(mlines), kind=parts[0], port=int(parts[1]),
                            profile=parts[2], payload_types=parts[3:])
            mlines.append(current)
            continue
        if not line.startswith("a="):
            continue
        attr = line[2:]
        name, _, value = attr.partition(":")
        if current is None:
            if name == "group" and value.startswith("BUNDLE"):
                bundle = value.split()[1:]
            continue
        current.attributes.append(line)
        if name == "mid":
            current.mid = value
        elif name in _DIRECTIONS and not value:
            current.direction = name
        elif name == "ssrc":
            ssrc = int(value.split()[0])
            if ssrc not in current.ssrcs:
                current.ssrcs.append(ssrc)
        elif name == "extmap":
            ext_id, uri = value.split()[:2]
            current.extmaps[uri] = int(ext_id.split("/")[0])
        elif name == "rid":
            current.rids.append(value.split()[0])
        elif name == "candidate":
            candidates.append(value)
    return SessionSummary(bundle=bundle, mlines=mlines, candidates=candidates)
