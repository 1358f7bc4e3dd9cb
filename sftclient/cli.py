"""sft-probe: join a conference on an SFT, publish synthetic media, report what arrives.

    sft-probe http://127.0.0.1:8585 --count 3 --duration 5
    sft-probe http://127.0.0.1:8585 --conv 0123...ef --user alice --duration 30 --json

Exit status: 0 when every probe that had company received media from someone;
1 when a probe saw other participants but decoded nothing from them; 2 when a
join failed (HTTP error, rejection, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import secrets
import statistics
import sys
from typing import Any

from aiortc import RTCIceServer

from .client import JoinError, JoinRejected, WireClient

_CONVID = re.compile(r"^[0-9a-fA-F]{32}$")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="sft-probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="SFT base URL, e.g. http://127.0.0.1:8585")
    ap.add_argument("--conv", help="conference id, 32 hex chars (default: random)")
    ap.add_argument("--user", help="userid (default: random; with --count N, suffixed -i)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds to stay in the call after joining (default 5)")
    ap.add_argument("--count", type=int, default=1,
                    help="number of participants this probe runs in the conference (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--local-address", action="append", default=None,
                    help="host address to gather ICE candidates on (repeatable; "
                         "default 127.0.0.1; loopback allowed)")
    ap.add_argument("--vstreams", type=int, default=9)
    ap.add_argument("--amplitude", type=float, default=0.3, help="tone amplitude 0..1")
    ap.add_argument("--no-video", action="store_true", help="publish audio only")
    ap.add_argument("--refuse", action="append", default=[],
                    help="userid not to authorise in CONFPART (repeatable)")
    ap.add_argument("--turn", help="TURN server URL (turn:HOST:PORT) to gather a relay "
                                   "candidate through")
    ap.add_argument("--turn-user", help="TURN username")
    ap.add_argument("--turn-password", help="TURN password")
    ap.add_argument("--relay-only", action="store_true",
                    help="use only the TURN relay candidate (needs --turn)")
    ap.add_argument("--join-timeout", type=float, default=20.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.conv is not None and not _CONVID.match(args.conv):
        ap.error("--conv must be 32 hex characters")
    if args.count < 1:
        ap.error("--count must be at least 1")
    if args.relay_only and not args.turn:
        ap.error("--relay-only needs --turn")
    return args


async def _run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    convid = (args.conv or secrets.token_hex(16)).lower()
    clients = []
    ice_servers = [RTCIceServer(args.turn, args.turn_user, args.turn_password)] \
        if args.turn else []
    for i in range(args.count):
        user = args.user
        if user is not None and args.count > 1:
            user = f"{user}-{i}"
        clients.append(WireClient(
            args.url, convid, user, local_addresses=args.local_address or ["127.0.0.1"],
            refuse=args.refuse, amplitude=args.amplitude, video=not args.no_video,
            vstreams=args.vstreams, ice_servers=ice_servers, relay_only=args.relay_only))
    report: dict[str, Any] = {"url": args.url, "convid": convid, "clients": []}
    code = 0
    try:
        results = await asyncio.gather(*(c.join(args.join_timeout) for c in clients),
                                       return_exceptions=True)
        failed = [(c, r) for c, r in zip(clients, results) if isinstance(r, BaseException)]
        for c, exc in failed:
            if isinstance(exc, JoinRejected):
                what = f"rejected: CONFCONN status {exc.status}"
            elif isinstance(exc, JoinError):
                what = f"HTTP {exc.status} at {exc.stage}: {exc.text.strip()[:200]}"
            elif isinstance(exc, asyncio.TimeoutError):
                what = f"timed out after {args.join_timeout}s"
            else:
                what = f"{type(exc).__name__}: {exc}"
            report.setdefault("errors", []).append({"userid": c.userid, "error": what})
            code = 2
        joined = [c for c in clients if c.state == "joined"]
        if joined:
            await asyncio.sleep(args.duration)
        for c in clients:
            summary = c.summary()
            others = [p for p in c.confpart_people() if p != c.person]
            got = sum(s.audio_frames + s.video_frames for s in c.received.by_person.values())
            summary["others_present"] = len(others)
            summary["media_ok"] = not others or got > 0
            if c.state == "joined" and not summary["media_ok"] and code == 0:
                code = 1
            report["clients"].append(summary)
        joins = [c.join_time_video for c in clients if c.join_time_video is not None]
        if joins:
            report["join_ms_first_video_p50"] = round(statistics.median(joins) * 1000, 1)
    finally:
        await asyncio.gather(*(c.hangup() for c in clients), return_exceptions=True)
    report["exit_code"] = code
    return code, report


def _print_text(report: dict[str, Any]) -> None:
    print(f"conference {report['convid']} on {report['url']}")
    for err in report.get("errors", []):
        print(f"  JOIN FAILED {err['userid']}: {err['error']}")
    for c in report["clients"]:
        j = c["join_ms"]
        print(f"  {c['userid']}/{c['clientid']} [{c['state']}] "
              f"participants={len(c['participants'])}"
              f" join: offer {j['offer']} ms, connected {j['connected']} ms, "
              f"first video {j['first_video']} ms, first audio {j['first_audio']} ms")
        if not c["received"]:
            print("    received nothing")
        for person, s in c["received"].items():
            print(f"    from {person}: audio {s['audio_frames']} frames "
                  f"({s['audio_packets']} pkts, "
                  f"slots {','.join(s['audio_mids']) or '-'}), video {s['video_frames']} frames "
                  f"({s['video_packets']} pkts, slots {','.join(s['video_mids']) or '-'})")
        if c["unknown_csrc_packets"]:
            print(f"    unknown CSRCs: {c['unknown_csrc_packets']}")
    if "join_ms_first_video_p50" in report:
        print(f"join time (CONFCONN -> first decoded video frame) p50: "
              f"{report['join_ms_first_video_p50']} ms")
    print("result:", {0: "ok", 1: "NO MEDIA from present participants", 2: "JOIN FAILED"}
          [report["exit_code"]])


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        code, report = asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        _print_text(report)
    return code


if __name__ == "__main__":
    sys.exit(main())
