#!/usr/bin/env python3
"""Keeps sft_servers_all.json up to date: the URLs of the SFTs taking new calls.

Runs beside the join-call nginx, which serves the file (standard library
only). Each round resolves SERVICE, a headless Service that lists only ready
pods (draining pods have left it), asks every address for its own URL with
`GET http://<addr>:<port>/sft/url` (the -u value, e.g.
https://sftd.example.com/sfts/sftd-0) and writes
{"sft_servers_all": [url, ...]} atomically, sorted, when it changed.

Usage: sftd-disco.py --service NAME [--port 8585] --out FILE [--interval 5] [--once]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request


def addresses(service: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(service, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []  # no ready pod: the name has no records
    return sorted({info[4][0] for info in infos})


def sft_url(addr: str, port: int, timeout: float) -> str | None:
    host = f"[{addr}]" if ":" in addr else addr
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/sft/url", timeout=timeout) as r:
            url = r.read(2048).decode("utf-8", "replace").strip()
    except (OSError, urllib.error.URLError, ValueError):
        return None
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        return None
    return url


def discover(service: str, port: int, timeout: float) -> list[str]:
    urls = (sft_url(a, port, timeout) for a in addresses(service, port))
    return sorted({u for u in urls if u})


def write_if_changed(path: str, urls: list[str]) -> bool:
    body = json.dumps({"sft_servers_all": urls}) + "\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == body:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".sft_servers_all.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service", required=True)
    p.add_argument("--port", type=int, default=8585)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--once", action="store_true")
    args = p.parse_args(argv)
    while True:
        urls = discover(args.service, args.port, args.timeout)
        if write_if_changed(args.out, urls):
            print(f"sftd-disco: {len(urls)} SFT(s): {' '.join(urls)}", flush=True)
        if args.once:
            return 0
        # jitter, so the join-call replicas do not poll the pods in step
        time.sleep(args.interval * random.uniform(0.8, 1.2))


if __name__ == "__main__":
    sys.exit(main())
