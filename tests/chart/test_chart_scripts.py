"""The small programs the chart runs in its pods (charts/sftd/files/), run here
against local stand-ins: a fake Kubernetes API, fake SFTs answering /sft/url,
a fake TURN credentials endpoint. Loopback only; no helm needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "charts" / "sftd" / "files"


class Fake:
    """A loopback HTTP server answering GET path -> (status, body); records requests."""

    def __init__(self, routes: dict[str, tuple[int, str]]):
        self.routes = routes
        self.requests: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fake.requests.append((self.path, dict(self.headers)))
                status, body = fake.routes.get(self.path, (404, "not found"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FILES / script), *args], capture_output=True,
                          text=True, timeout=60, env={"PATH": os.environ["PATH"], **(env or {})})


# --- external-ip.py ------------------------------------------------------------


def node(addresses=(), annotations=None) -> str:
    return json.dumps({"metadata": {"name": "n1", "annotations": annotations or {}},
                       "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]}})


@pytest.mark.parametrize("doc, expected", [
    (node([("InternalIP", "10.0.0.4"), ("ExternalIP", "203.0.113.9")],
          {"wire.com/external-ip": "198.51.100.1"}), "203.0.113.9"),   # ExternalIP first, as Wire's chart
    (node([("InternalIP", "10.0.0.4")], {"wire.com/external-ip": "198.51.100.1"}), "198.51.100.1"),
    (node([("InternalIP", "10.0.0.4")], {"wire.com/external-ip": "2001:db8::7"}), "2001:db8::7"),
    (node([("InternalIP", "10.0.0.4"), ("Hostname", "n1")]), ""),   # none: sftd advertises -I
])
def test_external_ip(tmp_path, doc, expected):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok-123\n")
    out = tmp_path / "ip"
    with Fake({"/api/v1/nodes/n1": (200, doc)}) as api:
        r = run("external-ip.py", str(out), env={"NODE_NAME": "n1", "SA_DIR": str(sa),
                                                 "API_URL": f"http://127.0.0.1:{api.port}"})
    assert r.returncode == 0, r.stderr
    assert out.read_text() == expected
    path, headers = api.requests[0]
    assert headers["Authorization"] == "Bearer tok-123"


@pytest.mark.parametrize("status, doc", [
    (403, "forbidden"),                                          # RBAC missing: fail, kubelet retries
    (200, node([], {"wire.com/external-ip": "not-an-ip"})),      # typo in the annotation
])
def test_external_ip_fails_loudly(tmp_path, status, doc):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    out = tmp_path / "ip"
    with Fake({"/api/v1/nodes/n1": (status, doc)}) as api:
        r = run("external-ip.py", str(out), env={"NODE_NAME": "n1", "SA_DIR": str(sa),
                                                 "API_URL": f"http://127.0.0.1:{api.port}"})
    assert r.returncode == 1
    assert not out.exists()


# --- sftd-disco.py ---------------------------------------------------------------


def test_discovery_writes_urls_of_answering_sfts(tmp_path):
    out = tmp_path / "sft_servers_all.json"
    with Fake({"/sft/url": (200, "https://sft.example.com/sfts/sftd-0\r\n")}) as sft:
        r = run("sftd-disco.py", "--service", "localhost", "--port", str(sft.port),
                "--out", str(out), "--once")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == {"sft_servers_all": ["https://sft.example.com/sfts/sftd-0"]}
    mtime = out.stat().st_mtime_ns
    # unchanged list: the file is left alone (nginx serves it while we run)
    with Fake({"/sft/url": (200, "https://sft.example.com/sfts/sftd-0\r\n")}) as sft:
        run("sftd-disco.py", "--service", "localhost", "--port", str(sft.port), "--out", str(out), "--once")
    assert out.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("routes", [
    {},                                           # pod does not answer /sft/url
    {"/sft/url": (200, "garbage with spaces")},   # not a URL
    {"/sft/url": (503, "draining")},
])
def test_discovery_skips_sfts_without_a_url(tmp_path, routes):
    out = tmp_path / "sft_servers_all.json"
    out.write_text('{"sft_servers_all": ["https://old/sfts/sftd-9"]}\n')
    with Fake(routes) as sft:
        r = run("sftd-disco.py", "--service", "localhost", "--port", str(sft.port),
                "--out", str(out), "--once")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == {"sft_servers_all": []}


def test_discovery_without_ready_pods_writes_an_empty_list(tmp_path):
    out = tmp_path / "sft_servers_all.json"
    r = run("sftd-disco.py", "--service", "no-such-service.invalid.", "--port", "8585",
            "--out", str(out), "--once")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == {"sft_servers_all": []}


# --- multi-sft-config.py -----------------------------------------------------------


def test_multi_sft_config_writes_turn_credentials(tmp_path):
    body = json.dumps({"username": "u1", "password": "p1", "ttl": 3600,
                       "uris": ["turn:turn.example.com:3478", "turns:turn.example.com:5349"]})
    with Fake({"/creds": (200, body)}) as turn:
        r = run("multi-sft-config.py", f"http://127.0.0.1:{turn.port}/creds", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "username").read_text() == "u1"
    assert (tmp_path / "password").read_text() == "p1"
    assert (tmp_path / "turn_server").read_text() == "turn:turn.example.com:3478"


@pytest.mark.parametrize("status, body", [
    (200, json.dumps({"username": "u1", "password": "p1", "uris": []})),
    (200, json.dumps({"password": "p1", "uris": ["turn:x"]})),
    (200, "not json"),
    (500, "{}"),
])
def test_multi_sft_config_refuses_incomplete_answers(tmp_path, status, body):
    with Fake({"/creds": (status, body)}) as turn:
        r = run("multi-sft-config.py", f"http://127.0.0.1:{turn.port}/creds", str(tmp_path))
    assert r.returncode == 1
    assert not (tmp_path / "turn_server").exists()
