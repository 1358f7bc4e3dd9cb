"""Background loops of a running server: a failure is logged, /readyz turns 503
while the loop waits for its restart, and the loop runs again afterwards."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sftd.controller.sft import SftConfig
from sftd.controller.supervise import Supervisor
from sftd.signalling.api import ApiConfig
from sftd.signalling.server import ServerConfig, build_server

CONV = "0123456789abcdef0123456789abcdef"
URL = "http://sft.example/sfts/sftd-0"
pytestmark = pytest.mark.timeout(30)


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_failing_audio_loop_is_logged_reported_and_restarted(caplog):
    server = build_server(ServerConfig(
        sft=SftConfig(url=URL, media_addresses=["127.0.0.1"], media_ports=(41000, 41999)),
        api=ApiConfig(url=URL), dataplane="userspace"))
    sft, plane = server.sft, server.dataplane
    sft.supervisor.min_backoff = 1.0
    reads = []
    real_read = plane.read_audio_levels

    def read_audio_levels():  # the injected fault: the first read raises
        reads.append(time.monotonic())
        if len(reads) == 1:
            raise RuntimeError("injected fault in the level read")
        return real_read()

    plane.read_audio_levels = read_audio_levels
    sft.start()
    api = TestClient(TestServer(server.api_app))
    metrics = TestClient(TestServer(server.metrics_app))
    await api.start_server()
    await metrics.start_server()
    try:
        assert (await metrics.get("/readyz")).status == 200
        caplog.set_level(logging.ERROR, logger="sftd.supervise")
        assert (await api.post(f"/sft/{CONV}", json={
            "version": "3.0", "type": "CONFCONN", "sessid": "s1", "src_userid": "alice",
            "src_clientid": "c1", "dest_userid": "SFT", "resp": False, "vstreams": 2,
        })).status == 200  # a conference
        await wait_for(lambda: len(reads) == 1, 5, "the audio loop's first read")
        await wait_for(lambda: sft.supervisor.down(), 2, "the loop to be reported down")
        r = await metrics.get("/readyz")
        assert r.status == 503 and "audio-selection" in await r.text()
        failure = [rec for rec in caplog.records if "audio-selection" in rec.getMessage()]
        assert failure and failure[0].exc_info is not None  # logged with its traceback
        assert "injected fault" in str(failure[0].exc_info[1])

        await wait_for(lambda: len(reads) >= 3, 5, "the restarted loop to read again")
        assert reads[1] - reads[0] >= 0.9  # after the back-off, not in a tight loop
        assert (await metrics.get("/readyz")).status == 200
        text = await (await metrics.get("/metrics")).text()
        assert 'sft_background_restarts_total{loop="audio-selection"} 1.0' in text
        assert 'sft_background_restarts_total{loop="timers"} 0.0' in text
    finally:
        await api.close()
        await metrics.close()
        await sft.stop()


async def test_back_off_doubles_and_one_shot_failures_are_logged(caplog):
    supervisor = Supervisor(min_backoff=0.1, max_backoff=0.4)
    starts = []

    async def always_fails():
        starts.append(time.monotonic())
        raise ValueError("broken")

    caplog.set_level(logging.ERROR, logger="sftd.supervise")
    supervisor.start_loop("broken", always_fails)

    async def one_shot():
        raise KeyError("one-shot")

    supervisor.spawn(one_shot(), "one-shot-task")
    await wait_for(lambda: len(starts) >= 5, 5, "five starts")
    await supervisor.stop()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39 and gaps[3] < 0.6
    assert supervisor.restarts()["broken"] >= 4
    assert any(rec.exc_info and "one-shot-task" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(ValueError):
        supervisor.start_loop("broken", always_fails)
