"""A TURN relay (coturn) on the SFT's own host: a client that only has a relay
candidate talks to sftd through turnserver, whose relay socket reaches sftd's
media socket over ``lo``; the kernel plane serves that leg like any other, and
the client exchanges media with one behind the veth without the interpreter."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from test_local_paths import call_via_lo_and, run_probe, stop_now  # tests/kernel is on sys.path

from tests.conftest import SftServer, free_tcp_port, free_udp_range, owned_name
from tests.e2e.helpers import new_convid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

TURN_USER, TURN_PASSWORD = "sftrelay", "relay-test-secret"


class TurnServer:
    """coturn from a config file of its own: only on ``address``, its own ports, one
    static user, no CLI, no TLS, log and pid file in ``directory``; stopped by PID."""

    def __init__(self, address: str, directory: Path) -> None:
        self.address = address
        self.port = free_tcp_port()
        self.relay_ports = free_udp_range()
        self.directory = directory
        self.log_path = directory / "turnserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"turn:{self.address}:{self.port}"

    def __enter__(self) -> TurnServer:
        turnserver = shutil.which("turnserver")
        assert turnserver, "coturn is not installed: scripts/setup.sh --test installs it"
        config = self.directory / "turnserver.conf"
        config.write_text("\n".join([
            f"listening-ip={self.address}", f"relay-ip={self.address}",
            f"listening-port={self.port}",
            f"min-port={self.relay_ports[0]}", f"max-port={self.relay_ports[1]}",
            "lt-cred-mech", f"user={TURN_USER}:{TURN_PASSWORD}", "realm=sft.test",
            "fingerprint", "no-cli", "no-tls", "no-dtls", "no-tcp", "no-tcp-relay",
            "no-multicast-peers", "no-stdout-log", "simple-log",
            f"log-file={self.log_path}", f"pidfile={self.directory / 'turnserver.pid'}",
            f"userdb={self.directory / 'turndb'}", ""]))
        self.proc = subprocess.Popen([turnserver, "-c", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers_stun():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"turnserver did not start:\n{self.log()[-2000:]}")
        return self

    def _answers_stun(self) -> bool:
        """A STUN binding request to the listener gets a success response."""
        request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.sendto(request, (self.address, self.port))
            try:
                answer = sock.recv(2048)
            except OSError:
                return False
        return answer[:2] == b"\x01\x01" and answer[8:20] == request[8:20]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def test_a_relay_only_client_through_coturn_on_the_sft_host(topology, tmp_path):
    host_ip, client_ip = topology.host_ip, topology.client_ip
    server = SftServer(("-I", host_ip, "-O", topology.host_if, "--dataplane", "kernel",
                        "--instance", owned_name("turn")), tmp_path)
    server.url = f"http://{host_ip}:{server.port}"
    with TurnServer(host_ip, tmp_path) as turn:
        await server.start()
        try:
            conv = new_convid()
            relayed = await run_probe(server.url, conv, "relayed", client_ip, 12, topology.netns,
                                      "--turn", turn.url, "--turn-user", TURN_USER,
                                      "--turn-password", TURN_PASSWORD, "--relay-only")
            direct = await run_probe(server.url, conv, "direct", client_ip, 12, topology.netns)
            # the relay's socket is on this host: its leg's media takes lo
            metrics = await call_via_lo_and(server, topology.host_if, (relayed, direct))
            log = server.log_text()
        finally:
            stop_now(server)
        turn_log = turn.log()
    # the relayed participant's ICE pair is turnserver's relay address, not the client's
    relay_ports = range(turn.relay_ports[0], turn.relay_ports[1] + 1)
    (port,) = (int(p) for p in re.findall(
        rf"\.relayed\.\w+ connected from {re.escape(host_ip)}:(\d+)", log))
    assert port in relay_ports, (log, turn_log[-2000:])
    assert re.search(rf"\.direct\.\w+ connected from {re.escape(client_ip)}:", log), log
    assert metrics['sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}'] == 0
    assert metrics['sft_userspace_media_dropped_total{reason="path_not_served"}'] == 0
    assert metrics['sft_dataplane_packets_total{counter="DROP_AUTH"}'] == 0
    assert metrics['sft_dataplane_packets_total{counter="TX_PACKETS"}'] > 200
    # a working call: no leg is reported without media
    assert sum(v for k, v in metrics.items()
               if k.startswith("sft_legs_without_media_total")) == 0, log
