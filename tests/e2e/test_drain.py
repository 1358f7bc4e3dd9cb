"""SIGTERM drain with the real server: new joins get 303, running calls go on,
the process exits when the last call ends (or at --drain-timeout)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from sftd.sftclient.client import JoinError

from .helpers import frames_from, gets_media, new_convid, wait_until

pytestmark = pytest.mark.timeout(90)


async def _exit_code(server, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return server.proc.returncode
        await asyncio.sleep(0.1)
    return None


async def test_sigterm_drains_then_exits_when_the_last_call_ends(sftd, wire_client):
    conv = new_convid()
    a = await wire_client(sftd, conv, "a")
    b = await wire_client(sftd, conv, "b")
    await wait_until(lambda: gets_media(a, [b]) and gets_media(b, [a]), 20, "media both ways")

    os.kill(sftd.proc.pid, signal.SIGTERM)
    await wait_until(lambda: "draining" in sftd.log_text(), 5, "the drain to start")
    with pytest.raises(JoinError) as refused:
        await wire_client(sftd, new_convid(), "late")
    assert refused.value.status == 303
    with pytest.raises(JoinError):
        await wire_client(sftd, conv, "late-to-running-call")
    metrics = await sftd.metrics()
    assert metrics["sft_draining"] == 1 and metrics["sft_participants"] == 2
    async with aiohttp.ClientSession() as s:
        async with s.get(sftd.metrics_url.replace("/metrics", "/readyz")) as r:
            assert r.status == 503

    before = frames_from(b, a)[1]
    await asyncio.sleep(2)
    assert frames_from(b, a)[1] > before + 10, "the running call must keep its media"
    assert sftd.proc.poll() is None, "must not exit while a call runs"

    await a.hangup()
    await asyncio.sleep(1)
    assert sftd.proc.poll() is None, "one participant is still in the call"
    await b.hangup()
    assert await _exit_code(sftd, 10) == 0


async def test_drain_timeout_ends_remaining_calls(sftd_factory, wire_client):
    server = await sftd_factory("--drain-timeout", "2")
    conv = new_convid()
    await wire_client(server, conv, "a")
    started = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)
    assert await _exit_code(server, 10) == 0
    assert 1.5 < time.monotonic() - started < 8


async def test_sigterm_without_calls_exits_at_once(sftd):
    os.kill(sftd.proc.pid, signal.SIGTERM)
    assert await _exit_code(sftd, 5) == 0
