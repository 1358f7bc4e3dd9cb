"""The sft-probe command against a real sftd."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from .helpers import new_convid

pytestmark = pytest.mark.timeout(60)

PROBE = Path(sys.executable).with_name("sft-probe")


async def run_probe(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(PROBE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    return proc.returncode, out.decode(), err.decode()


async def test_probe_reports_media_per_person(sftd):
    conv = new_convid()
    code, out, err = await run_probe(sftd.url, "--conv", conv, "--user", "probe",
                                     "--count", "2", "--duration", "3", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["convid"] == conv and report["exit_code"] == 0
    clients = report["clients"]
    assert [c["userid"] for c in clients] == ["probe-0", "probe-1"]
    for me, other in ((clients[0], clients[1]), (clients[1], clients[0])):
        got = me["received"][f"{other['userid']}/{other['clientid']}"]
        assert got["audio_frames"] > 20 and got["video_frames"] > 5
        assert me["join_ms"]["first_audio"] is not None
    assert report["join_ms_first_video_p50"] > 0


async def test_probe_alone_is_ok_and_join_failure_is_2(sftd):
    code, out, err = await run_probe(sftd.url, "--duration", "1")
    assert code == 0, out + err
    assert "received nothing" in out and "result: ok" in out
    # A server that is not there: join fails, exit status 2.
    code, out, err = await run_probe("http://127.0.0.1:9", "--duration", "1",
                                     "--join-timeout", "5")
    assert code == 2, out + err
    assert "JOIN FAILED" in out
