#!/usr/bin/env python3
"""Writes the public address of this pod's node, for sftd's -A.

Runs as an init container of the sftd pods (standard library only). Reads the
Node object through the API with the pod's ServiceAccount token (ClusterRole:
get nodes) and takes, as Wire's chart does, the first address of type
ExternalIP, else the annotation wire.com/external-ip. Writes it to OUT (an
empty file when the node has neither: sftd then advertises its listen address).

Environment: NODE_NAME (required); KUBERNETES_SERVICE_HOST/PORT or API_URL;
SA_DIR (default /var/run/secrets/kubernetes.io/serviceaccount).
Usage: external-ip.py OUT
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

ANNOTATION = "wire.com/external-ip"


def api_base() -> str:
    if os.environ.get("API_URL"):
        return os.environ["API_URL"].rstrip("/")
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def get_node(name: str) -> dict:
    sa_dir = os.environ.get("SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
    with open(os.path.join(sa_dir, "token"), encoding="ascii") as f:
        token = f.read().strip()
    url = f"{api_base()}/api/v1/nodes/{urllib.parse.quote(name, safe='')}"
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.load(response)


def external_ip(node: dict) -> str:
    for address in node.get("status", {}).get("addresses") or []:
        if address.get("type") == "ExternalIP" and address.get("address"):
            return address["address"]
    annotations = node.get("metadata", {}).get("annotations") or {}
    return annotations.get(ANNOTATION, "").strip()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    node_name = os.environ.get("NODE_NAME", "")
    if not node_name:
        print("external-ip: NODE_NAME is not set", file=sys.stderr)
        return 1
    try:
        node = get_node(node_name)
    except (OSError, urllib.error.URLError, ValueError) as e:
        print(f"external-ip: cannot read node {node_name}: {e}", file=sys.stderr)
        return 1
    addr = external_ip(node)
    if addr:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            print(f"external-ip: node {node_name}: {addr!r} is not an IP address", file=sys.stderr)
            return 1
    with open(argv[1], "w", encoding="ascii") as f:
        f.write(addr)
    print(f"external-ip: node {node_name}: {addr or '(none, sftd advertises its listen address)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
