"""Finds legs whose media goes nowhere. A leg connected (ICE and DTLS done) for
``WITHOUT_MEDIA_AFTER`` seconds is reported as

- ``silent``: it declared audio and others' slots point at it, but no media of
  it has ever reached the data plane (a firewall dropping its RTP, a path the
  data plane does not see, a client that does not send);
- ``not_forwarded``: its media keeps arriving, but none of it was sent on any
  slot pointed at it for ``WITHOUT_MEDIA_AFTER`` seconds (or it arrives only in
  user space on the kernel plane);
- ``not_received``: its slots point at publishers whose media keeps arriving,
  but nothing was sent to it for ``WITHOUT_MEDIA_AFTER`` seconds.

Each finding is logged once per leg with what to check and counted in
``sft_legs_without_media_total{reason}``. The controller calls ``check`` from
its timer loop; the figures come from the data plane's ``read_leg_media``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .dataplane import DataPlane, LegMedia, StreamKind
from .model import Participant

log = logging.getLogger("sftd")

WITHOUT_MEDIA_AFTER = 5.0  # seconds after ICE and DTLS, and after a slot is pointed

ADVICE = {
    "silent": "no media of it has reached the data plane since ICE and DTLS although it "
              "declared audio and {slots} slot(s) point at it. Check that nothing between "
              "the client and this node drops its UDP media after the handshake (firewall "
              "rules, a NAT or TURN relay) and that the client is sending{tc_hint}",
    "not_forwarded": "{received} of its media packets arrived ({stranded} only in user space) "
                     "but none were sent on the {slots} slot(s) pointed at it. Check "
                     "sft_userspace_media_dropped_total and the DROP_* counters of "
                     "sft_dataplane_packets_total{tc_hint}",
    "not_received": "its {slots} slot(s) point at publishers whose media arrives, but nothing "
                    "was sent to it. Check the DROP_* counters of sft_dataplane_packets_total "
                    "and sft_dataplane_detail_total and the route from this node to the "
                    "client",
}


@dataclass
class _SlotWatch:
    publisher: int  # leg_id the slot points at
    sent: int  # packets sent on the slot, at the last check
    received: int  # the publisher's packets of the slot's kind, at the last check
    quiet_since: float  # when the slot last carried a packet, or was pointed here
    carried: bool = False  # it carried a packet of this publisher
    received_while_quiet: int = 0  # the publisher's packets since quiet_since
    received_at: float = 0.0  # when the publisher's packets last grew


class MediaWatch:
    def __init__(self, after: float = WITHOUT_MEDIA_AFTER) -> None:
        self.after = after
        # a publisher counts as still sending if its media arrived this recently
        self.sending_within = after / 5
        # how often to look: a fifth of the threshold, as it reads every slot
        self.interval = after / 5
        self.found = collections.Counter(dict.fromkeys(ADVICE, 0))  # by reason
        self._connected_at: dict[int, float] = {}
        self._slots: dict[tuple[int, StreamKind, int], _SlotWatch] = {}
        self._reported: set[tuple[int, str]] = set()
        self._read_failed = False  # logged once until a read succeeds again

    def check(self, now: float, participants: Iterable[Participant],
              dataplane: DataPlane) -> None:
        live = {p.leg.leg_id: p for p in participants if p.connected}
        for leg_id in set(self._connected_at) - set(live):
            del self._connected_at[leg_id]
        self._reported = {(leg, why) for leg, why in self._reported if leg in live}
        if not live:
            self._slots.clear()
            return
        for leg_id in live:
            self._connected_at.setdefault(leg_id, now)
        try:
            media = dataplane.read_leg_media()
        except Exception:  # noqa: BLE001 - a diagnostic must not stop the timer loop
            if not self._read_failed:
                log.exception("media watch: cannot read the legs' media from the data plane")
            self._read_failed = True
            return
        self._read_failed = False
        pointed_at: collections.Counter[int] = collections.Counter()  # slots per publisher
        fed: dict[int, set[bool]] = collections.defaultdict(set)  # publisher -> pair outcomes
        fed_to: dict[int, set[bool]] = collections.defaultdict(set)  # subscriber -> outcomes
        seen = set()
        for sub_id, sub in live.items():
            for kind, sources, first in ((StreamKind.AUDIO, sub.audio_sources, 0),
                                         (StreamKind.VIDEO, sub.video_sources,
                                          len(sub.audio_sources))):
                for index, source in enumerate(sources):
                    if source is None or source.publisher not in live:
                        continue
                    pub_id = source.publisher
                    pointed_at[pub_id] += 1
                    outcome = self._watch_slot(now, (sub_id, kind, index), pub_id,
                                               media.get(sub_id), media.get(pub_id),
                                               kind, first + index)
                    seen.add((sub_id, kind, index))
                    if outcome is not None:
                        fed[pub_id].add(outcome)
                        fed_to[sub_id].add(outcome)
        self._slots = {key: w for key, w in self._slots.items() if key in seen}
        for leg_id, participant in live.items():
            leg_media = media.get(leg_id)
            if leg_media is None or now - self._connected_at[leg_id] < self.after:
                continue
            received = sum(leg_media.received.values())
            facts = {"slots": pointed_at[leg_id], "interface": leg_media.interface,
                     "received": received, "stranded": leg_media.stranded}
            if pointed_at[leg_id] and participant.ssrc_audio and not received \
                    and not leg_media.stranded:
                self._report(participant, "silent", facts)
            if fed[leg_id] == {False} or (pointed_at[leg_id] and leg_media.stranded
                                          and not received):
                self._report(participant, "not_forwarded", facts)
            if fed_to[leg_id] == {False}:
                facts["slots"] = sum(1 for sw in self._slots if sw[0] == leg_id)
                self._report(participant, "not_received", facts)

    def _watch_slot(self, now: float, key: tuple[int, StreamKind, int], pub_id: int,
                    sub_media: LegMedia | None, pub_media: LegMedia | None,
                    kind: StreamKind, position: int) -> bool | None:
        """Whether the slot carries its publisher's media: True if it did within the
        last ``after`` seconds, False if the publisher sent media of the slot's kind
        all along but the slot carried none of it for ``after`` seconds, None while
        that cannot be told yet (just pointed, or the publisher sends none)."""
        if sub_media is None or pub_media is None or position >= len(sub_media.slot_packets):
            return None
        sent = sub_media.slot_packets[position]
        received = pub_media.received[kind]
        watch = self._slots.get(key)
        if watch is None or watch.publisher != pub_id:
            self._slots[key] = _SlotWatch(pub_id, sent, received, now)
            return None
        if received > watch.received:
            watch.received_at = now
        if sent > watch.sent:
            watch.quiet_since, watch.carried, watch.received_while_quiet = now, True, 0
        else:
            watch.received_while_quiet += received - watch.received
        watch.sent, watch.received = sent, received
        if now - watch.quiet_since < self.after:
            return True if watch.carried else None
        # the publisher must still be sending: one that stopped is no black hole
        sending = now - watch.received_at < self.sending_within
        return False if watch.received_while_quiet and sending else None

    def _report(self, participant: Participant, reason: str, facts: dict[str, object]) -> None:
        leg_id = participant.leg.leg_id
        if (leg_id, reason) in self._reported:
            return
        self._reported.add((leg_id, reason))
        self.found[reason] += 1
        interface = facts["interface"]
        tc_hint = "" if interface == "any" else (
            f"; sftd's TC filter must be on {interface}: tc filter show dev {interface} ingress")
        log.warning("participant %s (leg %d, media via %s) without media (%s) for %g s: %s",
                    participant.key, leg_id, interface, reason, self.after,
                    ADVICE[reason].format(tc_hint=tc_hint, **facts))
