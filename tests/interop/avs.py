"""Drive real @wireapp/avs clients in headless Chromium.

One page (``page/index.html``) plays the Wire backend; each client is an
iframe (``page/client.html``) with its own AVS engine. Playwright answers the
requests for the page and the npm package's ``dist/`` under ``PAGE_PATH`` of
the SFT's own origin (they never reach sftd), so the clients' SFT requests
are same-origin: no CORS, no local-network-access prompt.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGE_DIR = HERE / "page"
AVS_DIST = HERE / "node_modules" / "@wireapp" / "avs" / "dist"
PAGE_PATH = "/avs-interop/"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def avs_missing_reason() -> str | None:
    """Why the pinned AVS package is unusable here, or None."""
    package = AVS_DIST.parent / "package.json"
    if not package.exists():
        return (f"{AVS_DIST.parent} missing: run scripts/setup.sh --test "
                "(npm ci in tests/interop)")
    version = json.loads(package.read_text())["version"]
    pinned = json.loads((HERE / "package.json").read_text())["dependencies"]["@wireapp/avs"]
    if version != pinned:
        return f"@wireapp/avs {version} installed, tests/interop pins {pinned}: rerun setup"
    return None


async def serve_page(context: Any, sft_url: str) -> str:
    """Answer requests under ``sft_url + PAGE_PATH`` from the test page and the
    AVS package files; returns the page's URL."""
    base_url = sft_url.rstrip("/") + PAGE_PATH

    async def handle(route: Any) -> None:
        path = route.request.url[len(base_url):].split("?", 1)[0] or "index.html"
        base, name = (AVS_DIST, path[4:]) if path.startswith("avs/") else (PAGE_DIR, path)
        file = (base / name).resolve()
        if file.parent != base.resolve() or not file.is_file():
            await route.fulfill(status=404, body=f"not found: {path}")
            return
        await route.fulfill(path=str(file),
                            content_type=CONTENT_TYPES.get(file.suffix, "application/octet-stream"))

    await context.route(f"{base_url}**", handle)
    return base_url + "index.html"


@dataclass
class Client:
    name: str
    userid: str = field(default_factory=lambda: str(uuid.uuid4()))
    clientid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def person(self) -> str:
        return f"{self.userid}/{self.clientid}"


class AvsConversation:
    """A conversation of AVS clients in one page, all pointed at one SFT URL."""

    def __init__(self, page: Any, sft_url: str) -> None:
        self.page = page
        self.sft_url = sft_url
        self.convid = str(uuid.uuid4())
        self.clients: dict[str, Client] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.screenshot: bytes | None = None

    async def add(self, name: str) -> Client:
        client = Client(name)
        self.clients[name] = client
        await self.page.evaluate("args => interop.addClient(args)", {
            "userid": client.userid, "clientid": client.clientid,
            "convid": self.convid, "sftUrl": self.sft_url})
        return client

    async def call(self, name: str, method: str, *args: Any) -> Any:
        return await self.page.evaluate(
            "([c, m, a]) => interop.client(c)[m](...a)",
            [self.clients[name].clientid, method, list(args)])

    async def stats(self, name: str) -> dict[str, Any]:
        result = await self.call(name, "stats")
        self.latest[name] = result
        return result

    async def refresh(self, names: list[str]) -> None:
        for name in names:
            await self.stats(name)

    def name_of(self, person: str) -> str:
        return next((c.name for c in self.clients.values() if c.person == person), person)

    def snapshot(self, label: str, names: list[str]) -> None:
        """Keep the latest stats and their summary under ``label`` for the report."""
        self.snapshots[label] = {"summary": self.summary(names),
                                 "stats": copy.deepcopy({n: self.latest.get(n) for n in names})}

    def summary(self, names: list[str]) -> str:
        """One line per client: members (aestab/vrecv/muted), whom it hears, video
        frames decoded per member, the send estimate and the encode rate."""
        lines = []
        for name in names:
            s = self.latest.get(name)
            if not s:
                lines.append(f"  {name}: no stats")
                continue
            members = {n: f"a{m['aestab']}v{m['vrecv']}m{m['muted']}"
                       for n, m in self.member_view(name).items()}
            hears = [o for o in names if o != name and self.hears(name, o)]
            bps = s.get("availableOutgoingBitrate")
            pcs = [c["connectionState"] for c in s["connections"]]
            lines.append(
                f"  {name}: state={s['callState']} members={members} hears={hears} "
                f"video frames={self.frames_from(name)} "
                f"out={None if bps is None else round(bps / 1000)}kbit/s "
                f"encode_fps={s.get('encodeFps')} pcs={pcs}")
        return "\n".join(lines)

    def media_detail(self, names: list[str]) -> str:
        """Why video would not decode: per client, each received video slot
        (packets, frames, keyframes, drops, PLI/FIR sent), each sent layer
        (keyframes encoded, PLI/FIR received) and the last frame-encryption lines."""
        lines = []
        for name in names:
            s = self.latest.get(name) or {}
            for slot in s.get("inboundVideo", []):
                owner = self.name_of(slot["owner"]) if slot["owner"] else "-"
                lines.append(
                    f"  {name} <- {owner} ssrc={slot['ssrc']}: packets={slot['packetsReceived']} "
                    f"frames={slot.get('framesReceived')}/{slot['framesDecoded']} decoded "
                    f"key={slot.get('keyFramesDecoded')} dropped={slot.get('framesDropped')} "
                    f"pli={slot.get('pliCount')} fir={slot.get('firCount')}")
            for out in s.get("outbound", []):
                if out["kind"] == "video":
                    lines.append(
                        f"  {name} -> rid={out['rid']} ssrc={out['ssrc']}: "
                        f"frames={out['framesEncoded']} key={out.get('keyFramesEncoded')} "
                        f"pli={out.get('pliCount')} fir={out.get('firCount')}")
            lines += [f"  {name} log: {line}" for line in s.get("mediaLog", [])[-8:]]
        return "\n".join(lines)

    # --- views over the latest stats -------------------------------------------------

    def member_view(self, viewer: str) -> dict[str, dict[str, int]]:
        """The viewer's participant-changed members (self excluded), by client name."""
        members = (self.latest.get(viewer) or {}).get("members") or []
        me = self.clients[viewer].person
        return {self.name_of(f"{m['userid']}/{m['clientid']}"): m for m in members
                if f"{m['userid']}/{m['clientid']}" != me}

    def audio_ssrcs(self, name: str) -> set[int]:
        return {o["ssrc"] for o in (self.latest.get(name) or {}).get("outbound", [])
                if o["kind"] == "audio"}

    def hears(self, viewer: str, sender: str, within_ms: float = 5000) -> bool:
        """The viewer's audio receivers saw the sender's audio SSRC as CSRC lately."""
        s = self.latest.get(viewer) or {}
        seen = s.get("csrcSeen") or {}
        return any(s["at"] - seen.get(str(ssrc), 0) <= within_ms
                   for ssrc in self.audio_ssrcs(sender))

    def frames_from(self, viewer: str) -> dict[str, int]:
        """Decoded video frames per sender (AVS's own track -> member mapping)."""
        out: dict[str, int] = {}
        for slot in (self.latest.get(viewer) or {}).get("inboundVideo", []):
            if slot["owner"]:
                who = self.name_of(slot["owner"])
                out[who] = out.get(who, 0) + slot["framesDecoded"]
        return out

    def encoded_frames(self, name: str) -> int:
        """Frames of the busiest outgoing video layer (simulcast or not)."""
        return max((o["framesEncoded"] for o in (self.latest.get(name) or {}).get("outbound", [])
                    if o["kind"] == "video"), default=0)


@dataclass
class Checklist:
    """Named checks that keep going after a failure, so one run reports them all."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, bool(ok), "" if ok else detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}", flush=True)  # progress under -s
        return bool(ok)

    async def wait(self, name: str, predicate: Callable[[], Awaitable[bool]], timeout: float,
                   detail: Callable[[], str], interval: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if await predicate():
                return self.check(name, True)
            if time.monotonic() > deadline:
                return self.check(name, False, f"timed out after {timeout:.0f}s: {detail()}")
            await asyncio.sleep(interval)

    @property
    def failed(self) -> list[tuple[str, bool, str]]:
        return [r for r in self.results if not r[1]]

    def table(self) -> str:
        return "\n".join(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f"\n        {detail}"
                                                                       if detail else "")
                         for name, ok, detail in self.results)
