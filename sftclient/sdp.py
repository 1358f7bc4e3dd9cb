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

Offers and answers are read with the server's own SDP reading
(:func:`sftd.controller.sdp.parse_sdp`, aiortc's parser).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sftd.controller.sdp import URI_AUDIO_LEVEL, URI_RID, parse_sdp, without_extmap_attributes

AUDIO_LEVEL_URI = URI_AUDIO_LEVEL
RID_URI = URI_RID

munge_offer_for_aiortc = without_extmap_attributes


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


def summarize(sdp: str) -> SessionSummary:
    """The parts of an SDP that tests and the client look at."""
    parsed = parse_sdp(sdp)
    bundle = [[str(item) for item in group.items]
              for group in parsed.session.group if group.semantic == "BUNDLE"]
    mlines = [MLine(index=index, kind=media.kind, mid=media.rtp.muxId or "",
                    direction=media.direction or "sendrecv", port=media.port,
                    profile=media.profile, ssrcs=[info.ssrc for info in media.ssrc],
                    extmaps={ext.uri: ext.id for ext in media.rtp.headerExtensions},
                    payload_types=[str(fmt) for fmt in media.fmt],
                    rids=[value.split()[0] for name, value in attributes
                          if name == "rid" and value.split()])
              for index, (media, attributes)
              in enumerate(zip(parsed.session.media, parsed.section_attributes))]
    candidates = [value for attributes in parsed.section_attributes
                  for name, value in attributes if name == "candidate"]
    return SessionSummary(bundle=bundle[-1] if bundle else [], mlines=mlines,
                          candidates=candidates)
