"""Shared fixtures: a real ``sftd`` process, Wire clients, headless Chromium pages.

``sftd``            one server with the default test arguments, plus any given by
                    ``@pytest.mark.sftd_args("--ping-timeout", "3")`` on the test.
``sftd_factory``    start more servers: ``await sftd_factory("--demo")``.
``sftd_on_plane``   one server per data plane in PLANES (the test runs once per plane);
                    on a veth plane the test process is the client host, in its own
                    network namespace, and the plane's media counters are checked at the end.
``wire_client``     ``await wire_client(server, convid, userid=..., **WireClient kwargs)``
                    returns a joined :class:`sftclient.WireClient`; all are closed at teardown.
``browser_page``    ``await browser_page(url)``: a Playwright page in its own fresh
                    Chromium (own ``--user-data-dir``), fake camera and microphone.

A failing test gets the tail of every server's log attached to its report.
Servers are stopped by their own PID (SIGTERM, then SIGKILL).

Kernel-plane instances and network namespaces of tests are named
``test-<pid>-<label>`` (``owned_name``); a killed run leaves them behind, and the
next session starts by removing those whose process is dead
(``sweep_dead_test_leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[1]
# SFTD_BIN runs the suite against another build of the server (same CLI).
SFTD = Path(os.environ.get("SFTD_BIN") or ROOT / ".venv" / "bin" / "sftd")
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
                 if os.path.exists(p)), "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
READY_TIMEOUT = 20.0
LOG_TAIL_LINES = 200
# owned_name(): BPF pin directories (a kernel-plane instance, or the steering and
# sink programs' "steer-<instance>-<if>" and "sink-<instance>") and network namespaces
_TEST_PINS = re.compile(r"(?:steer-|sink-)?test-(\d+)-")
_TEST_NETNS = re.compile(r"test-(\d+)-")

sys.path.insert(0, str(ROOT))
log = logging.getLogger("tests.sweep")


def owned_name(label: str) -> str:
    """A kernel-plane instance or network namespace name owned by this test
    process: ``test-<pid>-<label>``."""
    return f"test-{os.getpid()}-{label}"


@contextlib.contextmanager
def host_veth(tag: str, addresses: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """A veth pair in this namespace named ``<tag><pid>`` and ``<tag><pid>p``;
    ``addresses`` (CIDR) go on the first end, then the second, in order. Both
    ends are up; the pair is removed by name afterwards."""
    name = f"{tag}{os.getpid() % 100000}"
    ends = (name, f"{name}p")
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", ends[1]],
                   check=True)
    try:
        for end, address in zip(ends, addresses):
            subprocess.run(["ip", "addr", "add", address, "dev", end], check=True)
        for end in ends:
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        yield ends
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    return True


def sweep_dead_test_leftovers() -> list[str]:
    """Removes what test processes that are dead left behind (named by owned_name):
    their pin directories with the XDP and TC attachments of the programs pinned
    there (in this network namespace), and their network namespaces with the veths
    in them. Nothing of a live process, nothing not named by owned_name. Returns
    one line per thing removed."""
    if os.geteuid() != 0:
        return []
    removed: list[str] = []
    from sftd.bpf import attach

    pin_dirs = sorted(attach.PIN_ROOT.iterdir()) if attach.PIN_ROOT.is_dir() else []
    for pin_dir in pin_dirs:
        match = _TEST_PINS.match(pin_dir.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            attach.remove_stale(pin_dir, attach.tc_handle(pin_dir.name), pin_dir.name)
        except Exception as exc:  # noqa: BLE001 - the session goes on; say what is left
            log.warning("could not remove %s: %s", pin_dir, exc)
            continue
        removed.append(f"pins and attached programs of {pin_dir}")
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in netns_list.stdout.splitlines():
        netns = line.split(" ", 1)[0]
        match = _TEST_NETNS.match(netns)
        if match is None or _process_alive(int(match.group(1))):
            continue
        # its veths go with it, and with them their peers in this namespace
        if subprocess.run(["ip", "netns", "del", netns], capture_output=True).returncode == 0:
            removed.append(f"network namespace {netns}")
    for line in removed:
        log.warning("removed a dead test run's %s", line)
    return removed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sftd_args(*args): extra sftd arguments for `sftd`")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Leftovers of killed test runs (pins, programs on lo and on veths, namespaces)
    would shadow this run's: remove those whose test process is dead."""
    try:
        lines = [f"sweep: removed a dead test run's {line}"
                 for line in sweep_dead_test_leftovers()]
    except ImportError as exc:  # sftd not installed: the tests say so themselves
        lines = [f"sweep: skipped, sftd.bpf cannot be imported ({exc})"]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_range(size: int = 200) -> tuple[int, int]:
    """A UDP port range on 127.0.0.1 whose first, middle and last ports are free."""
    for _ in range(50):
        lo = random.randrange(20000, 60000 - size)
        probe = (lo, lo + size // 2, lo + size - 1)
        ok = True
        for port in probe:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return lo, lo + size - 1
    raise RuntimeError("no free UDP port range found")


class SftServer:
    """One ``sftd`` subprocess on free ports, logging to a file."""

    def __init__(self, extra_args: tuple[str, ...], logdir: Path, *,
                 address: str = "127.0.0.1", interface: str = "lo",
                 dataplane: str = "userspace") -> None:
        self.port = free_tcp_port()
        self.metrics_port = free_tcp_port()
        self.media_ports = free_udp_range()
        self.url = f"http://{address}:{self.port}"
        self.metrics_url = f"http://{address}:{self.metrics_port}/metrics"
        # the host addresses clients gather ICE candidates on to reach this server
        self.client_addresses: tuple[str, ...] = ("127.0.0.1",)
        self.args = [
            str(SFTD), "-I", address, "-p", str(self.port),
            "-M", address, "-r", str(self.metrics_port), "-O", interface,
            "--media-ports", f"{self.media_ports[0]}-{self.media_ports[1]}",
            "--dataplane", dataplane, *extra_args,
        ]
        self.log_path = logdir / f"sftd-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> SftServer:
        if not SFTD.exists():
            pytest.fail(f"{SFTD} not found (pip install -e . first, or set SFTD_BIN)")
        logfile = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=logfile, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT)
        logfile.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sftd exited with {self.proc.returncode} before it was ready:\n"
                            f"{' '.join(self.args)}\n{self.log_tail()}")
            if re.search(r"listening", self.log_text()):
                return self
            await asyncio.sleep(0.05)
        pytest.fail(f"sftd not ready after {READY_TIMEOUT}s:\n{self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def metrics(self) -> dict[str, float]:
        """Prometheus text as {'name' or 'name{labels}': value}."""
        async with aiohttp.ClientSession() as s, s.get(self.metrics_url) as r:
            assert r.status == 200, f"GET /metrics -> {r.status}"
            text = await r.text()
        return parse_prometheus(text)


def parse_prometheus(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)", line)
        if match:
            with contextlib.suppress(ValueError):
                out[match.group(1)] = float(match.group(2))
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    servers: list[SftServer] = getattr(item, "_sftd_servers", [])
    if report.failed and servers:
        for server in servers:
            report.sections.append((f"sftd log ({server.url}, {report.when})",
                                    server.log_tail()))


@pytest.fixture
async def sftd_factory(request: pytest.FixtureRequest,
                       tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[SftServer]]]:
    servers: list[SftServer] = []
    request.node._sftd_servers = servers

    async def start(*extra_args: str, **options: str) -> SftServer:
        server = SftServer(tuple(extra_args), tmp_path, **options)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        server.stop()


def _sftd_args(request: pytest.FixtureRequest) -> list[str]:
    extra: list[str] = []
    for marker in request.node.iter_markers("sftd_args"):
        extra.extend(str(a) for a in marker.args)
    return extra


@pytest.fixture
async def sftd(request: pytest.FixtureRequest,
               sftd_factory: Callable[..., Awaitable[SftServer]]) -> SftServer:
    return await sftd_factory(*_sftd_args(request))


@dataclass(frozen=True)
class PlaneSetup:
    """How the end-to-end tests run ``sftd`` on one data plane."""

    dataplane: str  # sftd --dataplane
    # False: sftd and clients on loopback (-O lo). True: sftd on the host end of a
    # veth pair (-O that end), the clients in a network namespace at the other end,
    # so every media packet crosses the interface the plane serves.
    veth: bool
    # The plane forwards media itself: at the end of every test sftd must report
    # that no media packet went through the Python interpreter (USERSPACE_MEDIA 0)
    # and that the plane sent copies (TX_PACKETS > 0).
    media_outside_python: bool
    args: tuple[str, ...] = ()  # more sftd options
    # every copy left through AF_XDP (the engine's XDP_TX equals TX_PACKETS)
    sent_by_af_xdp: bool = False
    veth_prefix: str = "e2"  # VethTopology names


# Adding a plane to the conformance tests is one entry here.
PLANES = {
    "userspace": PlaneSetup("userspace", veth=False, media_outside_python=False),
    "kernel": PlaneSetup("kernel", veth=True, media_outside_python=True),
    "native": PlaneSetup("native", veth=False, media_outside_python=True),
    "native-xdp": PlaneSetup("native", veth=True, media_outside_python=True,
                             args=("--native-io", "xdp"), sent_by_af_xdp=True,
                             veth_prefix="xe"),
}
_veth_count = itertools.count()


class VethTopology:
    """A veth pair: one end in this namespace with ``host_ip``, the other in a new
    namespace with ``client_ip``. Names (``prefix``, then the process and a count)
    and the /24 are unique to this process and call, so parallel test runs never
    share a link or a route; the namespace's name (owned_name) is also the
    instance name for a kernel plane on it."""

    def __init__(self, prefix: str = "e2", queues: int = 1) -> None:
        self.queues = queues  # real receive and transmit queues of each end
        n = next(_veth_count)
        tag = f"{os.getpid()}x{n}"  # interface names: at most 15 characters
        self.netns = owned_name(f"{prefix}n{n}")
        self.host_if, self.client_if = f"{prefix}h{tag}", f"{prefix}c{tag}"
        self.host_ip, self.client_ip = self._free_subnet(os.getpid() * 8 + n)

    @staticmethod
    def _free_subnet(start: int) -> tuple[str, str]:
        """(host, client) addresses in a /24 of 100.64.0.0/10 that no interface of
        this namespace has, the search starting from ``start``."""
        used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                              text=True).stdout
        for step in range(64 * 256):
            block = (start + step) % (64 * 256)
            prefix = f"100.{64 + block // 256}.{block % 256}"
            if f" {prefix}." not in used:
                return f"{prefix}.1", f"{prefix}.2"
        raise RuntimeError("no free /24 in 100.64.0.0/10 for a veth pair")

    @staticmethod
    def _run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    def __enter__(self) -> VethTopology:
        self._run("ip", "netns", "add", self.netns)
        try:
            queues = ("numtxqueues", str(self.queues), "numrxqueues", str(self.queues)) \
                if self.queues > 1 else ()  # else the kernel's default: one real queue
            self._run("ip", "link", "add", self.host_if, *queues, "type", "veth", "peer",
                      "name", self.client_if, "netns", self.netns, *queues)
            self._run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            self._run("ip", "link", "set", self.host_if, "up")
            self._run("ip", "-n", self.netns, "addr", "add", f"{self.client_ip}/24", "dev",
                      self.client_if)
            for dev in (self.client_if, "lo"):
                self._run("ip", "-n", self.netns, "link", "set", dev, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


@pytest.fixture
def topology() -> Iterator[VethTopology]:
    """A VethTopology for one test: sftd on ``host_if``/``host_ip``, clients in ``netns``."""
    with VethTopology() as topo:
        yield topo


async def _check_media_stayed_outside_python(server: SftServer, setup: PlaneSetup) -> None:
    metrics = await server.metrics()
    info = f'sft_dataplane_info{{dataplane="{setup.dataplane}"}}'
    assert metrics.get(info) == 1, f"sftd does not run the {setup.dataplane} plane: {info}"
    through_python = metrics['sft_dataplane_detail_total{counter="USERSPACE_MEDIA"}']
    sent = metrics['sft_dataplane_packets_total{counter="TX_PACKETS"}']
    assert through_python == 0, (
        f"{through_python:.0f} media packets went through the interpreter on the "
        f"{setup.dataplane} plane")
    assert sent > 0, f"the {setup.dataplane} plane forwarded no media"
    if setup.sent_by_af_xdp:
        by_xdp = metrics['sft_dataplane_detail_total{counter="XDP_TX"}']
        assert by_xdp == sent, f"{sent - by_xdp:.0f} of {sent:.0f} copies left by the sockets"


def _plane_params() -> list[Any]:
    return [pytest.param(name, marks=[pytest.mark.kernel] if setup.veth else [], id=name)
            for name, setup in PLANES.items()]


@pytest.fixture(params=_plane_params())
async def sftd_on_plane(request: pytest.FixtureRequest,
                        sftd_factory: Callable[..., Awaitable[SftServer]]
                        ) -> AsyncIterator[SftServer]:
    """``sftd`` on each data plane in turn; clients made by ``wire_client`` for it
    reach it the way that plane needs. ``@pytest.mark.sftd_args`` applies."""
    setup = PLANES[request.param]
    extra = _sftd_args(request)
    if not setup.veth:
        server = await sftd_factory(*setup.args, *extra, dataplane=setup.dataplane)
        yield server
        if setup.media_outside_python:
            await _check_media_stayed_outside_python(server, setup)
        return
    if os.geteuid() != 0:
        pytest.skip(f"the {setup.dataplane} plane needs root (BPF, network namespaces)")
    from pyroute2 import netns

    with VethTopology(setup.veth_prefix) as topo:
        server = await sftd_factory("--instance", topo.netns, *setup.args, *extra,
                                    address=topo.host_ip,
                                    interface=topo.host_if, dataplane=setup.dataplane)
        server.client_addresses = (topo.client_ip,)
        # From here this test's sockets (HTTP, ICE, metrics) live in the clients'
        # namespace: the test process is the client host. sftd started before.
        netns.pushns(topo.netns)
        try:
            yield server
            if setup.media_outside_python:
                await _check_media_stayed_outside_python(server, setup)
        finally:
            netns.popns()
            server.stop()  # detaches from the veth before it goes away


@pytest.fixture
async def wire_client() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    from sftd.sftclient import WireClient

    clients: list[WireClient] = []

    async def make(server: SftServer, convid: str, userid: str | None = None, *,
                   join: bool = True, **kwargs: Any) -> WireClient:
        kwargs.setdefault("local_addresses", server.client_addresses)
        client = WireClient(server.url, convid, userid, **kwargs)
        clients.append(client)
        if join:
            await client.join()
        return client

    yield make
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def write_tone_wav(path: Path, seconds: float = 2.0, hz: int = 440,
                   amplitude: float = 0.4) -> Path:
    """A continuous tone for Chromium's fake microphone. Its default fake audio
    is a short beep a second: silence to the SFT's level-based audio slots, so
    a browser that is not the key generator would rarely get a slot."""
    rate = 48000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(32767 * amplitude * math.sin(2 * math.pi * hz * i / rate)))
            for i in range(int(rate * seconds))))
    return path


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Each call launches its own Chromium with a fresh profile and opens ``url``."""
    from playwright.async_api import async_playwright

    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed")
    tone = write_tone_wav(tmp_path / "tone.wav")
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={tone}"]
    contexts: list[Any] = []
    profiles: list[str] = []
    console: dict[int, list[str]] = {}
    async with async_playwright() as pw:

        async def open_page(url: str, extra_args: tuple[str, ...] = ()) -> Any:
            profile = tempfile.mkdtemp(prefix="sft-chromium-")
            profiles.append(profile)
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=[*flags, *extra_args],
                permissions=["camera", "microphone"], ignore_default_args=["--mute-audio"])
            contexts.append(context)
            page = context.pages[0] if context.pages else await context.new_page()
            lines = console.setdefault(id(page), [])
            page.on("console", lambda msg: lines.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda exc: lines.append(f"pageerror: {exc}"))
            page.console_lines = lines  # type: ignore[attr-defined]  # for assertions
            await page.goto(url)
            return page

        try:
            yield open_page
        finally:
            for context in contexts:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(context.close(), 10)
            for profile in profiles:
                shutil.rmtree(profile, ignore_errors=True)
