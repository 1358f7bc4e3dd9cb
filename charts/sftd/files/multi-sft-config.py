#!/usr/bin/env python3
"""Fetches TURN credentials for multi-SFT calls (multiSFT.discoveryRequired).

Runs as an init container (standard library only): GET URL must answer JSON
{"username": ..., "password": ..., "uris": [uri, ...]}; writes DIR/username,
DIR/password and DIR/turn_server (the first URI), as Wire's chart does.
Any missing field fails the pod start, so sftd never starts half-configured.

Usage: multi-sft-config.py URL DIR
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[1]:
        print("multi-sft-config: usage: multi-sft-config.py URL DIR "
              "(set multiSFT.turnDiscoveryURL)", file=sys.stderr)
        return 2
    url, out = argv[1], argv[2]
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
    except (OSError, urllib.error.URLError, ValueError) as e:
        print(f"multi-sft-config: no answer from {url}: {e}", file=sys.stderr)
        return 1
    uris = doc.get("uris") if isinstance(doc, dict) else None
    values = {
        "username": doc.get("username") if isinstance(doc, dict) else None,
        "password": doc.get("password") if isinstance(doc, dict) else None,
        "turn_server": uris[0] if isinstance(uris, list) and uris else None,
    }
    for name, value in values.items():
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            print(f"multi-sft-config: response has no usable {name}", file=sys.stderr)
            return 1
    for name, value in values.items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write(value)
    print(f"multi-sft-config: TURN server {values['turn_server']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
