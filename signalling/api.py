"""The HTTP API of sftd (docs/protocol.md §2) on aiohttp, plus the metrics
listener. Paths have exactly two segments: ``/<anything>/<convid>``;
``…/url`` and ``…/status`` answer discovery and health probes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sftd import econn
from sftd.controller.sft import Sft

from .auth import Blacklist, check_token

log = logging.getLogger("sftd.http")

DEMO_DIR = Path(__file__).parent / "demo"
MAX_BODY_BYTES = econn.MAX_MESSAGE_BYTES  # default of --max-body-bytes, and its ceiling


@dataclass
class ApiConfig:
    url: str
    auth_secret: bytes | None = None
    blacklist: Blacklist | None = None
    allow_origin: str | None = None
    demo: bool = False
    request_timeout: float = 15.0  # whole request: body read and offer preparation
    confconn_rate: float = 0.0  # CONFCONNs per second per source address (0: no limit)
    max_body_bytes: int = MAX_BODY_BYTES
    confconn_burst: int = 20


class RateLimiter:
    """Token bucket per source address for CONFCONN requests."""

    MAX_TRACKED = 100_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.MAX_TRACKED:
            self._buckets.clear()  # bounded memory under address spraying
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1, now)
        return True


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\r\n", content_type="text/plain")


def make_app(sft: Sft, config: ApiConfig) -> web.Application:
    middlewares = [_cors(config.allow_origin)] if config.allow_origin else []
    body_limit = min(config.max_body_bytes, MAX_BODY_BYTES)
    app = web.Application(client_max_size=body_limit, middlewares=middlewares)

    limiter = RateLimiter(config.confconn_rate, config.confconn_burst)

    async def econn_request(request: web.Request) -> web.Response:
        second = request.match_info["second"]  # first segment unchecked (docs/protocol.md §2)
        if second == "url":
            return _text(200, config.url)
        if second == "status":
            return _text(200, "OK")
        convid = second
        if not convid or len(convid) > 128:
            return _text(400, "conversation id missing or too long")
        try:
            body = await asyncio.wait_for(request.read(), timeout=config.request_timeout)
        except web.HTTPRequestEntityTooLarge:
            return _text(413, f"body larger than {body_limit} bytes (--max-body-bytes)")
        except TimeoutError:
            return _text(408, f"request body not received within {config.request_timeout:g} s")
        try:
            msg = econn.decode(body)
        except econn.EconnError as exc:
            return _text(400, f"bad econn message: {exc}")
        may_start = True
        authenticated = False
        if isinstance(confconn := msg.body, econn.Confconn):
            # Every CONFCONN, also for a participant that exists: one naming a
            # running participant ends or restarts it, so it needs the same checks.
            if not limiter.allow(request.remote or "?"):
                return _text(429, "too many CONFCONN requests from this address; retry later")
            if config.blacklist and config.blacklist.blocks(confconn.toolver):
                return _json(econn.confconn_status(msg.sessid, econn.STATUS_BLACKLISTED))
            if config.auth_secret is not None:
                token = check_token(config.auth_secret, confconn.username, confconn.credential)
                if token.status != econn.STATUS_OK:
                    return _json(econn.confconn_status(msg.sessid, token.status))
                may_start = token.may_start
                authenticated = True
        try:
            result = await asyncio.wait_for(
                sft.handle_econn(convid, msg, may_start, request.method, authenticated),
                timeout=config.request_timeout)
        except TimeoutError:
            return _text(500, "offer not ready in time")
        if result.message is not None:
            return _json(result.message, result.http_status)
        return _text(result.http_status, result.reason)

    if config.demo and DEMO_DIR.is_dir():
        async def demo_root(request: web.Request) -> web.Response:
            raise web.HTTPFound("/demo/index.html" + (f"?{request.query_string}"
                                                      if request.query_string else ""))
        app.router.add_get("/demo", demo_root)
        app.router.add_get("/demo/", demo_root)
        app.router.add_get("/", demo_root)
        app.router.add_static("/demo/", DEMO_DIR)
    app.router.add_route("*", "/{first}/{second}", econn_request)
    app.router.add_route("*", r"/{tail:[\s\S]*}", _bad_path)
    return app


async def _bad_path(request: web.Request) -> web.Response:
    return _text(400, f"path {request.path!r} must have exactly two segments: /sft/<convid>")


def _json(msg: econn.Message, status: int = 200) -> web.Response:
    return web.Response(status=status, body=msg.encode(), content_type="application/json")


def _cors(origin: str):  # type: ignore[no-untyped-def]
    @web.middleware
    async def cors(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.method == "OPTIONS":
            response = web.Response(status=204)
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Max-Age"] = "86400"
        response.headers["Vary"] = "Origin"
        return response
    return cors


def make_metrics_app(sft: Sft, registry: CollectorRegistry) -> web.Application:
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(request: web.Request) -> web.Response:
        problem = sft.not_ready()
        return _text(503, problem) if problem else _text(200, "ready")

    async def debug(request: web.Request) -> web.Response:
        lines = [f"dataplane {sft.dataplane.name} draining={sft.draining}"]
        for conference in sft.conferences.values():
            lines.append(f"conference {conference.convid} id={conference.conference_id}")
            for p in conference.participants:
                lines.append(f"  {p.userid}.{p.clientid} state={p.state} leg={p.leg.leg_id} "
                             f"audio={p.ssrc_audio} video={p.video_ssrcs} "
                             f"authorized={len(p.authorized)}")
        return _text(200, "\n".join(lines))

    app.router.add_get("/metrics", metrics)
    async def healthz(request: web.Request) -> web.Response:
        return _text(200, "ok")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/debug", debug)
    return app
