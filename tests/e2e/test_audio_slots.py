"""Audio slot selection (docs/protocol.md §4): slot mid "1" carries the key generator
(first in CONFPART); mids "2".."5" carry the loudest of the others, chosen from
the audio-level extension the senders write (aiortc writes it from each frame's
level, so the tone amplitude sets it)."""

from __future__ import annotations

import asyncio
import time

import pytest

from .helpers import confpart_entry, new_convid, wait_until

pytestmark = pytest.mark.timeout(90)

LOUDER_SLOTS = {"2", "3", "4", "5"}


def audio_ssrc(observer, member) -> int:
    return int(confpart_entry(observer, member)["ssrc_audio"])


def on_slots(rx, mids, window=0.6) -> set[int]:
    """Audio CSRCs ``rx`` received on ``mids`` in the last ``window`` seconds."""
    sources = rx.slot_sources("audio", window)
    return set().union(*(sources.get(m, set()) for m in mids))


def describe(clients) -> str:
    names = {}
    for c in clients:
        e = confpart_entry(clients[0], c)
        if e is not None:
            names[int(e["ssrc_audio"])] = c.userid
    lines = []
    for rx in clients:
        sources = rx.slot_sources("audio", 0.6)
        lines.append(f"  {rx.userid}: " + ", ".join(
            f"mid {m}: {sorted(names.get(s, s) for s in v)}" for m, v in sorted(sources.items())))
    return "\n".join(lines)


async def stays(predicate, seconds: float, what: str, detail) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert predicate(), f"{what} did not hold for {seconds}s\n{detail()}"
        await asyncio.sleep(0.2)


async def test_key_generator_and_loudest_speakers_get_the_audio_slots(sftd, wire_client):
    conv = new_convid()
    # Audio only: six aiortc clients plus a Python SFT share two cores.
    amplitudes = {"keygen": 0.05, "loud1": 0.6, "loud2": 0.5, "loud3": 0.4, "loud4": 0.3,
                  "quiet": 0.002}
    clients = []
    for name, amp in amplitudes.items():  # join in order: "keygen" is first
        clients.append(await wire_client(sftd, conv, name, amplitude=amp, video=False))
    keygen, loud1, loud2, loud3, loud4, quiet = clients
    loud = [loud1, loud2, loud3, loud4]
    detail = lambda: describe(clients)  # noqa: E731

    await wait_until(lambda: all(len(c.confpart_people()) == 6 for c in clients), 10,
                     "everyone in everyone's CONFPART")
    assert keygen.confpart_people()[0] == keygen.person

    # Slot "1" is the key generator's, for everyone else.
    def keygen_on_slot_1() -> bool:
        return all(on_slots(rx, {"1"}) == {audio_ssrc(rx, keygen)} for rx in clients[1:])

    # The four loud ones hold slots 2-5 at the key generator and at the quiet one.
    def loud_hold_slots() -> bool:
        return all(on_slots(rx, LOUDER_SLOTS) == {audio_ssrc(rx, p) for p in loud}
                   for rx in (keygen, quiet))

    # A loud receiver hears the other three loud ones on slots 2-5.
    def loud_hear_loud() -> bool:
        return all({audio_ssrc(rx, p) for p in loud if p is not rx} <= on_slots(rx, LOUDER_SLOTS)
                   for rx in loud)

    def settled() -> bool:
        return keygen_on_slot_1() and loud_hold_slots() and loud_hear_loud()

    await wait_until(settled, 15, "slots to settle on key generator + loudest", detail)
    await stays(settled, 2.0, "slot assignment", detail)
    # The quiet one is on no slot where four louder ones compete.
    for rx in (keygen,):
        assert audio_ssrc(rx, quiet) not in on_slots(rx, {"1", *LOUDER_SLOTS}), detail()

    # The quiet one gets loud and loud1 goes silent: they swap (after smoothing).
    quiet.set_amplitude(0.7)
    loud1.set_amplitude(0.0)
    now_loud = [loud2, loud3, loud4, quiet]

    def swapped() -> bool:
        return (on_slots(keygen, LOUDER_SLOTS) == {audio_ssrc(keygen, p) for p in now_loud}
                and keygen_on_slot_1())

    await wait_until(swapped, 15, "the new loud speaker to replace the silent one", detail)
    await stays(swapped, 1.5, "slot assignment after the swap", detail)
    # The key generator keeps slot "1" even while it is the quietest speaker.
    assert keygen_on_slot_1(), detail()
    print("audio slots after the swap:\n" + detail())
