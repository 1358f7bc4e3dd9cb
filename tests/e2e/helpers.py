"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from sftd.sftclient import WireClient


def new_convid() -> str:
    return secrets.token_hex(16)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
                     detail: Callable[[], Any] | None = None, interval: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail with ``what`` (and ``detail()``) on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        await asyncio.sleep(interval)


def frames_from(receiver: WireClient, sender: WireClient) -> tuple[int, int]:
    """(decoded audio frames, decoded video frames) ``receiver`` got from ``sender``."""
    stats = receiver.received.by_person.get(sender.person)
    if stats is None:
        return 0, 0
    return stats.audio_frames, stats.video_frames


def gets_media(receiver: WireClient, senders: Iterable[WireClient], audio: int = 10,
               video: int = 5) -> bool:
    return all(a >= audio and v >= video
               for a, v in (frames_from(receiver, s) for s in senders))


def media_table(clients: Iterable[WireClient]) -> str:
    """Who decoded what from whom, for failure messages."""
    clients = list(clients)
    rows = []
    for rx in clients:
        cells = []
        for tx in clients:
            if tx is rx:
                continue
            a, v = frames_from(rx, tx)
            cells.append(f"{tx.userid}: a{a}/v{v}")
        unknown = dict(rx.received.unknown_csrc_packets)
        rows.append(f"  {rx.userid} <- " + ", ".join(cells)
                    + (f"  unknown CSRC pkts {unknown}" if unknown else "")
                    + (f"  seq gaps {dict(rx.received.seq_gaps)}" if rx.received.seq_gaps else "")
                    + f"  confparts={rx.received.confparts} state={rx.state}"
                    f" pc={rx.pc.connectionState if rx.pc else None}")
    return "\n".join(rows)


def confpart_entry(client: WireClient, person_of: WireClient) -> dict[str, Any] | None:
    """``person_of``'s entry in ``client``'s latest CONFPART."""
    msg = client.received.confpart
    if msg is None:
        return None
    for p in msg.get("participants") or []:
        if (p.get("userid"), p.get("clientid")) == (person_of.userid, person_of.clientid):
            return p
    return None


def sent_audio_ssrc(client: WireClient) -> int:
    """The SSRC ``client`` really sends its audio with (aiortc's sender)."""
    assert client.pc is not None
    for tr in client.pc.getTransceivers():
        if tr.mid == "audio":
            return tr.sender._ssrc
    raise AssertionError("no audio transceiver")


def in_confpart(client: WireClient, other: WireClient) -> bool:
    return confpart_entry(client, other) is not None
