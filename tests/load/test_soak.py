"""Soak with churn: calls keep running while participants keep leaving and
joining; the server's memory, file descriptors and UDP ports stay flat.
CI runs a short version; ``SOAK_SECONDS=600`` runs the 10-minute one."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.e2e.helpers import gets_media, new_convid, wait_until

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "40"))
CHURN_EVERY = 4.0

pytestmark = pytest.mark.timeout(SOAK_SECONDS + 120)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_churn_keeps_memory_fds_and_ports_flat(sftd, wire_client):
    pid = sftd.proc.pid
    convs = [new_convid() for _ in range(2)]
    calls = {conv: [await wire_client(sftd, conv, f"{conv[:4]}-{i}", video=False)
                    for i in range(3)] for conv in convs}
    everyone = [c for members in calls.values() for c in members]
    await wait_until(lambda: all(gets_media(c, [o for o in calls[c.convid] if o is not c],
                                            video=0) for c in everyone),
                     20, "audio in both calls")
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    generation = 0
    while time.monotonic() - started < SOAK_SECONDS:
        for conv, members in calls.items():
            leaving = members.pop(0)
            await leaving.hangup()
            await leaving.close()
            generation += 1
            members.append(await wire_client(sftd, conv, f"{conv[:4]}-g{generation}",
                                             video=False))
        await asyncio.sleep(CHURN_EVERY)
        samples.append((time.monotonic() - started, _rss_kib(pid), _fds(pid)))
    metrics = await sftd.metrics()
    assert metrics["sft_participants"] == 6 and metrics["sft_calls"] == 2
    assert metrics["sft_participants_total"] == 6 + generation
    newest = [members[-1] for members in calls.values()]
    await wait_until(lambda: all(gets_media(c, [o for o in calls[c.convid] if o is not c],
                                            video=0) for c in newest),
                     20, "audio for the last joiners")
    warm = samples[len(samples) // 3:]  # after allocator and cache warm-up
    rss_growth = warm[-1][1] - warm[0][1]
    fd_growth = warm[-1][2] - warm[0][2]
    print(f"\nsoak {SOAK_SECONDS:.0f} s, {generation} joins/leaves: RSS "
          f"{samples[0][1] // 1024}→{samples[-1][1] // 1024} MiB, fds "
          f"{samples[0][2]}→{samples[-1][2]}")
    assert rss_growth < 12 * 1024 + 200 * generation, f"RSS grew by {rss_growth} KiB: {samples}"
    assert fd_growth <= 4, f"file descriptors grew by {fd_growth}: {samples}"
