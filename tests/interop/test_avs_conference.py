"""Wire's own calling engine (@wireapp/avs, as the webapp ships it) holds a
CONFERENCE video call through sftd: three AVS clients in headless Chromium,
then a late joiner, mute, camera off and on, a hang-up and the end of the call.

Run on the userspace and native planes over loopback (native is what
``--dataplane auto`` takes) and on the kernel plane through a veth pair,
browsers in their own network namespace. Every check is run and
reported (see the printed table); the test fails if any failed. Artefacts
(per-client stats JSON, AVS logs, the page console, a screenshot) land in the
test's tmp directory, or under $AVS_INTEROP_ARTEFACTS when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, write_tone_wav
from tests.kernel.test_sftd_kernel_e2e import _chromium_in

from .avs import AvsConversation, Checklist, avs_missing_reason, serve_page

pytestmark = [pytest.mark.interop, pytest.mark.browser, pytest.mark.timeout(300)]

CALL_SETUP_TIMEOUT = 45.0     # CONFSTART -> every member aestab/vrecv on a loaded machine
MEDIA_TIMEOUT = 30.0
STATE_CHANGE_TIMEOUT = 15.0   # PROPSYNC / member list change reaching the others
SEND_SETTLE_SECONDS = 20.0    # the send estimate must hold this long after set-up
MIN_OUTGOING_BPS = 300_000
MIN_ENCODE_FPS = 12.0         # from a 15 fps fake camera
FPS_WINDOW_SECONDS = 3.0
STATE_ESTAB = 4               # wcall STATE.MEDIA_ESTAB


async def test_avs_conference_userspace_loopback(sftd_factory, tmp_path):
    # AVS_SFTD_ARGS=--debug: sftd's ICE/DTLS story, when a run needs explaining
    server = await sftd_factory(*os.environ.get("AVS_SFTD_ARGS", "").split())
    await run_conference(server, server.url, CHROMIUM, tmp_path, plane="userspace")


async def test_avs_conference_native_loopback(sftd_factory, tmp_path):
    server = await sftd_factory(*os.environ.get("AVS_SFTD_ARGS", "").split(),
                                dataplane="native")
    await run_conference(server, server.url, CHROMIUM, tmp_path, plane="native")


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel plane needs root (BPF, namespaces)")
async def test_avs_conference_kernel_veth(topology, sftd_factory, tmp_path):
    from sftd.bpf.dataplane import kernel_available

    ok, reason = kernel_available()
    assert ok, reason
    server = await sftd_factory("-I", topology.host_ip, "-O", topology.host_if, "--dataplane",
                                "kernel", "--instance", topology.netns)
    await run_conference(server, f"http://{topology.host_ip}:{server.port}",
                         _chromium_in(topology.netns, tmp_path), tmp_path, plane="kernel")


async def run_conference(server: Any, sft_url: str, chromium: str, tmp_path: Path,
                         plane: str) -> None:
    from playwright.async_api import async_playwright

    missing = avs_missing_reason()
    assert missing is None, missing
    tone = write_tone_wav(tmp_path / "tone.wav")
    profile = tempfile.mkdtemp(prefix="sft-avs-")
    console: list[str] = []
    checks = Checklist()
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={tone}",
                  # the kernel run's http origin is not loopback: media needs a secure context
                  f"--unsafely-treat-insecure-origin-as-secure={sft_url}"],
            ignore_default_args=["--mute-audio"], permissions=["camera", "microphone"])
        try:
            page_url = await serve_page(context, sft_url)
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            await page.goto(page_url)
            conv = AvsConversation(page, sft_url)
            try:
                await scenario(conv, checks, console)
            finally:
                await save_artefacts(conv, console, artefact_dir(tmp_path, plane))
                shutil.copy(server.log_path, artefact_dir(tmp_path, plane) / "sftd.log")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 15)
            shutil.rmtree(profile, ignore_errors=True)

    metrics: dict[str, float] = {}

    async def conference_gone() -> bool:
        metrics.update(await server.metrics())
        return metrics.get("sft_calls") == 0 and metrics.get("sft_participants") == 0

    await checks.wait("sftd ends the conference (sft_calls, sft_participants gauges 0)",
                      conference_gone, STATE_CHANGE_TIMEOUT,
                      lambda: f"sft_calls={metrics.get('sft_calls')} "
                              f"sft_participants={metrics.get('sft_participants')}")
    through_python = metrics.get('sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}', -1)
    received = metrics.get('sft_dataplane_packets_total{counter="RX_PACKETS"}', 0)
    if plane == "kernel":
        checks.check("kernel plane: no media packet in user space (USERSPACE_MEDIA 0)",
                     through_python == 0,
                     str({k: v for k, v in metrics.items() if "dataplane" in k}))
    if plane == "native":  # the engine reads each leg's pair; Chrome moving pairs passes Python
        checks.check("native plane: media in user space only while a path moves "
                     "(USERSPACE_MEDIA <= 0.1 % of RX_PACKETS)",
                     0 <= through_python <= received / 1000, f"{through_python:.0f} of "
                     f"{received:.0f}")
    if plane != "userspace":
        checks.check(f"{plane} plane forwarded packets",
                     metrics.get('sft_dataplane_packets_total{counter="TX_PACKETS"}', 0) > 0,
                     str({k: v for k, v in metrics.items() if "dataplane" in k}))
    path = "veth" if plane == "kernel" else "loopback"
    print(f"\nAVS interop checks ({plane}/{path}):\n" + checks.table())
    assert not checks.failed, "failed checks:\n" + "\n".join(
        f"{name}: {detail}" for name, _, detail in checks.failed) + "\nsftd log:\n" + \
        server.log_tail(60) + "\ndata plane counters (non-zero):\n" + \
        str({k: v for k, v in metrics.items() if "dataplane" in k and v})


async def scenario(conv: AvsConversation, checks: Checklist, console: list[str]) -> None:
    first = ["alice", "bob", "carol"]
    everyone = [*first, "dave"]
    for name in [*first, "dave"]:  # dave is in the conversation, joins the call late
        await conv.add(name)

    def detail(names: list[str]) -> str:
        return conv.summary(names) + "\n" + "\n".join(console[-15:])

    def video_detail(names: list[str]) -> str:
        return detail(names) + "\n" + conv.media_detail(names)

    # --- set-up: alice starts, bob and carol answer the incoming call -----------
    await conv.call("alice", "start")

    async def rang() -> bool:
        await conv.refresh(["bob", "carol", "dave"])
        return all(conv.latest[n]["incoming"] for n in ("bob", "carol", "dave"))

    if not await checks.wait("CONFSTART rings the other members", rang, 20,
                             lambda: detail(["bob", "carol", "dave"])):
        return
    for name in ("bob", "carol"):
        await conv.call(name, "answer")

    async def established(names: list[str]) -> bool:
        """Media up: every client in MEDIA_ESTAB, every other member aestab=1."""
        await conv.refresh(names)
        return all(conv.latest[viewer]["callState"] == STATE_ESTAB
                   and all((conv.member_view(viewer).get(other) or {}).get("aestab") == 1
                           for other in names if other != viewer)
                   for viewer in names)

    if not await checks.wait("3 clients: media established, every member aestab=1",
                             lambda: established(first), CALL_SETUP_TIMEOUT,
                             lambda: detail(first)):
        return
    established_at = time.monotonic()
    await checks.wait("3 clients: every member vrecv=1 (video from PROPSYNC)",
                      lambda: sees_video_state(conv, first, 1), STATE_CHANGE_TIMEOUT,
                      lambda: detail(first))

    await checks.wait("3 clients: audio (CSRC) and decoded video from every other member",
                      lambda: media_flows(conv, first), MEDIA_TIMEOUT, lambda: detail(first))
    await check_video_grows(conv, checks, first)

    for name in first:
        s = conv.latest[name]
        checks.check(f"{name}: AVS log says selective audio and video on",
                     s["logMatches"].get("selective", 0) > 0, str(s["logMatches"]))
    check_no_errors(conv, checks, first, console)

    # --- the senders are not starved -----------------------------------------------
    await asyncio.sleep(max(0.0, SEND_SETTLE_SECONDS - (time.monotonic() - established_at)))
    for name, (bps, fps) in (await measure_send_rates(conv, first)).items():
        checks.check(f"{name}: availableOutgoingBitrate >= {MIN_OUTGOING_BPS // 1000} kbit/s "
                     f"after {SEND_SETTLE_SECONDS:.0f}s",
                     bps is not None and bps >= MIN_OUTGOING_BPS, f"{bps} bit/s")
        checks.check(f"{name}: encodes >= {MIN_ENCODE_FPS} fps", fps >= MIN_ENCODE_FPS,
                     f"{fps:.1f} fps; outbound {conv.latest[name]['outbound']}")

    conv.snapshot(f"3 clients, {SEND_SETTLE_SECONDS:.0f} s into the call", first)

    # --- a late joiner ---------------------------------------------------------------
    await conv.call("dave", "answer")
    await checks.wait("late joiner: 4 clients established, each other aestab=1",
                      lambda: established(everyone), CALL_SETUP_TIMEOUT,
                      lambda: detail(everyone))
    await checks.wait("late joiner: 4 clients see each other vrecv=1",
                      lambda: sees_video_state(conv, everyone, 1), STATE_CHANGE_TIMEOUT,
                      lambda: detail(everyone))
    await checks.wait("late joiner: dave gets and is got by everyone (audio CSRC, video)",
                      lambda: media_flows(conv, everyone), MEDIA_TIMEOUT,
                      lambda: video_detail(everyone))

    await measure_send_rates(conv, everyone)
    conv.snapshot("4 clients after the late join", everyone)
    with contextlib.suppress(Exception):  # the picture of the busiest moment, for the report
        conv.screenshot = await conv.page.screenshot(full_page=True)

    # --- mute and camera off reach the others (now four in the call) -----------------
    async def change_reaches_others(who: str, method: str, on: bool, what: str, field: str,
                                    value: int) -> None:
        others = [n for n in everyone if n != who]
        await conv.call(who, method, on)
        await checks.wait(f"{who}'s {what} reaches {' and '.join(others)} ({field}={value})",
                          lambda: member_field_is(conv, others, who, field, value),
                          STATE_CHANGE_TIMEOUT, lambda: detail(everyone))

    await change_reaches_others("bob", "setMute", True, "mute", "muted", 1)
    await change_reaches_others("bob", "setMute", False, "unmute", "muted", 0)
    # camera off is only seen as a change if the camera was seen on
    checks.check("carol's video on (vrecv=1) before she turns the camera off",
                 all(conv.member_view(v).get("carol", {}).get("vrecv") == 1
                     for v in everyone if v != "carol"), detail(everyone))
    await change_reaches_others("carol", "setCamera", False, "camera off", "vrecv", 0)
    await change_reaches_others("carol", "setCamera", True, "camera on", "vrecv", 1)
    # AVS reconnects (CONFCONN update:true) when a conference camera comes back on
    await checks.wait("after carol's camera toggle: everyone still decodes everyone's video",
                      video_keeps_flowing(conv, everyone), MEDIA_TIMEOUT,
                      lambda: video_detail(everyone), interval=1.0)

    # --- a hang-up: the others' member list shrinks ------------------------------------
    remaining = ["alice", "bob", "dave"]
    await conv.refresh(everyone)
    # else the shrinking list below would not show that the SFT handled her HANGUP
    checks.check("carol is still in the call when she hangs up",
                 conv.latest["carol"]["callState"] == STATE_ESTAB
                 and all("carol" in conv.member_view(n) for n in remaining), detail(everyone))
    await conv.call("carol", "end")

    async def carol_gone() -> bool:
        await conv.refresh(remaining)
        return all("carol" not in conv.member_view(n) and len(conv.member_view(n)) == 2
                   for n in remaining)

    await checks.wait("carol hangs up: the others' member lists shrink to 3",
                      carol_gone, STATE_CHANGE_TIMEOUT, lambda: detail(remaining))
    check_no_errors(conv, checks, everyone, console)

    # --- the call's end ------------------------------------------------------------------
    for name in remaining:
        await conv.call(name, "end")

    async def all_closed() -> bool:
        await conv.refresh(everyone)
        return all(conv.latest[n]["closed"] for n in everyone)

    await checks.wait("the call ends: every client's close handler ran", all_closed,
                      STATE_CHANGE_TIMEOUT, lambda: detail(everyone))
    for name in everyone:
        s = conv.latest[name]
        checks.check(f"{name}: the SFT answered its HANGUP (no 'timeout waiting for HANGUP(r)')",
                     not s["logMatches"].get("hangupUnanswered"), str(s["errors"][-3:]))


async def measure_send_rates(conv: AvsConversation,
                             names: list[str]) -> dict[str, tuple[float | None, float]]:
    """Per client: the send estimate (bit/s) and the encode rate (frames/s) over
    FPS_WINDOW_SECONDS; the rate is also kept in the stats for the summary."""
    before = {n: (await conv.stats(n), conv.encoded_frames(n)) for n in names}
    await asyncio.sleep(FPS_WINDOW_SECONDS)
    await conv.refresh(names)
    rates = {}
    for name in names:
        s = conv.latest[name]
        elapsed = (s["at"] - before[name][0]["at"]) / 1000
        fps = (conv.encoded_frames(name) - before[name][1]) / elapsed
        s["encodeFps"] = round(fps, 1)
        rates[name] = (s["availableOutgoingBitrate"], fps)
    return rates


async def media_flows(conv: AvsConversation, names: list[str]) -> bool:
    await conv.refresh(names)
    for viewer in names:
        frames = conv.frames_from(viewer)
        for sender in names:
            if sender != viewer and not (conv.hears(viewer, sender)
                                         and frames.get(sender, 0) > 0):
                return False
    return True


def video_keeps_flowing(conv: AvsConversation, names: list[str]):  # type: ignore[no-untyped-def]
    """A predicate: true once every client decoded more frames from every other
    client than at the previous poll."""
    previous: dict[str, dict[str, int]] = {}

    async def grew() -> bool:
        await conv.refresh(names)
        now = {n: conv.frames_from(n) for n in names}
        ok = bool(previous) and all(now[v].get(s, 0) > previous[v].get(s, 0)
                                    for v in names for s in names if s != v)
        previous.update(now)
        return ok

    return grew


async def check_video_grows(conv: AvsConversation, checks: Checklist, names: list[str]) -> None:
    before = {n: conv.frames_from(n) for n in names}
    await asyncio.sleep(2.0)
    await conv.refresh(names)
    for viewer in names:
        after = conv.frames_from(viewer)
        for sender in names:
            if sender != viewer:
                checks.check(f"{viewer} keeps decoding {sender}'s video",
                             after.get(sender, 0) > before[viewer].get(sender, 0),
                             f"frames {before[viewer].get(sender, 0)} -> {after.get(sender, 0)}")


def check_no_errors(conv: AvsConversation, checks: Checklist, names: list[str],
                    console: list[str]) -> None:
    for name in names:
        s = conv.latest[name]
        bad = {k: v for k, v in s["logMatches"].items()
               if k in ("setRemoteFailed", "encodedStreamsTwice")}
        checks.check(f"{name}: no setRemoteDescription failure, no 'Encoded streams already "
                     "created'", not bad, f"{bad}: {s['errors'][-5:]}")
    bad_console = [line for line in console
                   if "Encoded streams already created" in line or "pageerror" in line
                   or "setRemoteDescription" in line and "error" in line.lower()]
    checks.check("page console: no pageerror, no encoded-streams or SDP errors",
                 not bad_console, "\n".join(bad_console[-10:]))


async def sees_video_state(conv: AvsConversation, names: list[str], vrecv: int) -> bool:
    await conv.refresh(names)
    return all((conv.member_view(viewer).get(other) or {}).get("vrecv") == vrecv
               for viewer in names for other in names if other != viewer)


async def member_field_is(conv: AvsConversation, viewers: list[str], about: str, field: str,
                          value: int) -> bool:
    await conv.refresh(viewers)
    return all((conv.member_view(v).get(about) or {}).get(field) == value for v in viewers)


def artefact_dir(tmp_path: Path, plane: str) -> Path:
    root = os.environ.get("AVS_INTEROP_ARTEFACTS")
    if not root:
        return tmp_path
    directory = Path(root) / plane
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def save_artefacts(conv: AvsConversation, console: list[str],
                         tmp_path: Path) -> None:
    if conv.screenshot is not None:
        (tmp_path / "avs-interop.png").write_bytes(conv.screenshot)
    logs = {}
    for name in conv.clients:
        with contextlib.suppress(Exception):
            logs[name] = await conv.call(name, "logTail", 3000)
    (tmp_path / "avs-stats.json").write_text(json.dumps(
        {"snapshots": conv.snapshots, "last": conv.latest}, indent=1))
    (tmp_path / "avs-logs.json").write_text(json.dumps(logs, indent=1))
    (tmp_path / "console.log").write_text("\n".join(console))
    print(f"\nAVS clients (artefacts in {tmp_path}):")
    for label, snap in conv.snapshots.items():
        print(f" {label}:\n{snap['summary']}")
    print(f" at the end:\n{conv.summary(list(conv.latest))}")
