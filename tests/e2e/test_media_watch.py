"""Legs whose media goes nowhere are reported: a real sftd (both data planes) and
real aiortc clients, one of which completes ICE and DTLS and declares audio but
never sends a packet of it, as a client whose media a firewall drops would."""

from __future__ import annotations

import asyncio
import signal

import pytest
from aiortc import MediaStreamTrack

from tests.conftest import owned_name

from .helpers import gets_media, media_table, new_convid, wait_until

pytestmark = pytest.mark.timeout(90)

WITHOUT_MEDIA = 'sft_legs_without_media_total{{reason="{}"}}'
REASONS = ("silent", "not_forwarded", "not_received")


class SilentAudio(MediaStreamTrack):
    """An audio track that never yields a frame: the sender declares its SSRC
    in the answer but sends no RTP."""

    kind = "audio"

    async def recv(self):  # type: ignore[override]
        await asyncio.Event().wait()


def plane_args(plane: str) -> tuple[str, ...]:
    if plane == "userspace":
        return ()
    return ("--dataplane", "kernel", "--instance", owned_name("watch"))


@pytest.mark.parametrize("plane", ["userspace", pytest.param("kernel", marks=pytest.mark.kernel)])
async def test_a_silent_leg_is_reported_and_a_working_one_is_not(plane, sftd_factory,
                                                                  wire_client):
    server = await sftd_factory(*plane_args(plane))
    try:
        conv = new_convid()
        # first in the conference: the key generator, whose audio every slot 0 wants
        silent = await wire_client(server, conv, "silent", join=False, video=False)
        silent.audio_track = SilentAudio()
        await silent.join()
        talkers = [await wire_client(server, conv, f"talker{i}") for i in range(2)]
        everyone = [silent, *talkers]
        await wait_until(lambda: gets_media(talkers[0], [talkers[1]])
                         and gets_media(talkers[1], [talkers[0]])
                         and gets_media(silent, talkers), 25,
                         "the talkers' media at everyone", lambda: media_table(everyone))

        async def found() -> dict[str, float]:
            metrics = await server.metrics()
            return {reason: metrics[WITHOUT_MEDIA.format(reason)] for reason in REASONS}

        counts: dict[str, float] = {}
        for _ in range(60):
            counts = await found()
            if counts["silent"]:
                break
            await asyncio.sleep(0.25)
        assert counts == {"silent": 1, "not_forwarded": 0, "not_received": 0}, (
            counts, server.log_tail(30))
        warnings = [line for line in server.log_text().splitlines()
                    if "without media (" in line]
        assert len(warnings) == 1, warnings
        assert "without media (silent)" in warnings[0]
        assert "no media of it has reached the data plane" in warnings[0]
        assert ("via lo" if plane == "kernel" else "via any") in warnings[0]
        # the talkers kept working the whole time and are never reported
        await asyncio.sleep(2)
        assert await found() == counts
        metrics = await server.metrics()
        if plane == "kernel":
            assert metrics['sft_userspace_media_dropped_total{reason="path_not_served"}'] == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGINT)  # at once: the kernel plane unpins
            await asyncio.to_thread(server.proc.wait, 15)
