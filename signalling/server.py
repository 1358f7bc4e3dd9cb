"""The composition root: from one ``ServerConfig``, the whole server (data
plane, ``Sft``, HTTP API, metrics) wired together and ready to run. The CLI
only turns options into a ``ServerConfig``; tests and benchmarks that want the
server as sftd runs it call ``build_server`` themselves."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from sftd.controller.dataplane import DataPlane, DataPlaneUnavailable
from sftd.controller.metrics import SftCollector, make_registry
from sftd.controller.sft import Sft, SftConfig
from sftd.controller.userspace import UserspaceDataPlane

from .api import ApiConfig, make_app, make_metrics_app

log = logging.getLogger("sftd")


class StartupError(Exception):
    """The server cannot start as configured; ``str()`` says why and what to do."""


@dataclass
class ServerConfig:
    """Everything ``build_server`` needs: the controller's and the API's own
    settings, plus what only the whole server decides (listeners, data plane)."""

    sft: SftConfig
    api: ApiConfig
    listen: tuple[str, int] = ("127.0.0.1", 8585)
    metrics_listen: tuple[str, int] = ("127.0.0.1", 49090)
    dataplane: str = "auto"  # a DATAPLANES name, or "auto"
    interface_names: list[str] = field(default_factory=list)  # media interfaces (-O)
    instance: str = "default"  # BPF pins under /sys/fs/bpf/sftd/<instance>
    tls: tuple[str, str] | None = None  # (certificate, key) files: HTTPS signalling
    drain_timeout: float = 0.0  # after SIGTERM, exit after this long (0: last call)
    workers: int = 16  # -w: the native plane's media threads (at most one per CPU)
    native_io: str = "udp"  # --native-io: the native plane's media I/O (auto, xdp, udp)


DataPlaneFactory = Callable[[ServerConfig], DataPlane]


def _userspace(config: ServerConfig) -> DataPlane:
    return UserspaceDataPlane()


def _kernel(config: ServerConfig) -> DataPlane:
    try:
        from sftd.bpf import sizing
        from sftd.bpf.dataplane import KernelDataPlane, kernel_available
    except ImportError as exc:
        raise DataPlaneUnavailable(f"kernel data plane not installed ({exc})") from exc
    ok, reason = kernel_available()
    if not ok:
        raise DataPlaneUnavailable(reason)
    try:
        plane = KernelDataPlane(
            interfaces=config.interface_names, media_ports=config.sft.media_ports,
            instance=config.instance,
            keystream_entries=sizing.keystream_entries(config.sft.max_participants),
            audio_ring=sizing.KEYSTREAM_AUDIO_RING, video_ring=sizing.KEYSTREAM_VIDEO_RING,
            ingress_ring_factor=sizing.KEYSTREAM_INGRESS_RING_FACTOR)
    except Exception as exc:  # any load failure: auto mode falls back, with the reason
        raise DataPlaneUnavailable(f"BPF load failed: {exc}") from exc
    log.info("data plane: kernel (eBPF) on %s (and on the path of any leg that takes "
             "another interface, e.g. lo for clients on this host)",
             ",".join(config.interface_names))
    return plane


def _native(config: ServerConfig) -> DataPlane:
    try:
        from sftd.engine.dataplane import EngineUnavailable, NativeDataPlane
    except ImportError as exc:
        raise DataPlaneUnavailable(f"native data plane not installed ({exc})") from exc
    try:
        return NativeDataPlane(workers=config.workers, io=config.native_io,
                               interfaces=tuple(config.interface_names),
                               media_ports=config.sft.media_ports, instance=config.instance)
    except EngineUnavailable as exc:
        raise DataPlaneUnavailable(str(exc)) from exc


# --dataplane NAME -> how to make it; a factory raises DataPlaneUnavailable
# when its plane cannot run here. A new plane registers with one entry.
DATAPLANES: dict[str, DataPlaneFactory] = {
    "userspace": _userspace,
    "kernel": _kernel,
    "native": _native,
}
# --dataplane auto: the first that runs here, fastest first (measured side by
# side in docs/benchmark.md: native about 2x kernel, kernel about 2x userspace)
AUTO_ORDER = ("native", "kernel", "userspace")


def choose_dataplane(config: ServerConfig) -> DataPlane:
    if config.dataplane != "auto":
        factory = DATAPLANES.get(config.dataplane)
        if factory is None:
            raise StartupError(f"unknown --dataplane {config.dataplane!r}; choose one of "
                               f"auto, {', '.join(DATAPLANES)}")
        try:
            plane = factory(config)
        except DataPlaneUnavailable as exc:
            raise StartupError(f"--dataplane {config.dataplane} requested but unavailable: "
                               f"{exc}") from exc
        log.info("data plane: %s (--dataplane %s)", plane.name, config.dataplane)
        return plane
    unavailable: list[str] = []
    for name in AUTO_ORDER:
        try:
            plane = DATAPLANES[name](config)
        except DataPlaneUnavailable as exc:
            unavailable.append(f"the {name} path is unavailable: {exc}")
            continue
        if unavailable:
            log.warning("data plane: %s (--dataplane auto), because %s", plane.name,
                        "; ".join(unavailable))
        else:
            log.info("data plane: %s (--dataplane auto: the fastest plane, and it runs here)",
                     plane.name)
        return plane
    raise StartupError(f"no data plane can run here: {'; '.join(unavailable)}")


@dataclass
class Server:
    """sftd, built: start() listens, run() serves until SIGTERM/SIGINT."""

    config: ServerConfig
    sft: Sft
    api_app: web.Application
    metrics_app: web.Application
    _runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def dataplane(self) -> DataPlane:
        return self.sft.dataplane

    async def start(self) -> None:
        """Listen on the API and metrics addresses and start the controller."""
        ssl_context = None
        if self.config.tls is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_context.load_cert_chain(*self.config.tls)
            except (OSError, ssl.SSLError) as exc:
                self.dataplane.close()
                raise StartupError(f"--tls-cert/--tls-key {' '.join(self.config.tls)}: "
                                   f"{exc}") from exc
        api = web.AppRunner(self.api_app, access_log=None, handler_cancellation=True)
        metrics = web.AppRunner(self.metrics_app, access_log=None)
        self._runners = [api, metrics]
        await api.setup()
        await metrics.setup()
        try:
            await web.TCPSite(api, *self.config.listen, ssl_context=ssl_context).start()
            await web.TCPSite(metrics, *self.config.metrics_listen).start()
        except OSError as exc:
            await self._cleanup_runners()
            self.dataplane.close()
            raise StartupError(f"cannot listen: {exc.strerror} ({exc})") from exc
        self.sft.start()
        scheme = "https" if ssl_context else "http"
        log.info("listening on %s://%s:%d (url %s), metrics on %s:%d, media %s ports %d-%d, "
                 "%s data plane", scheme, *self.config.listen, self.config.sft.url,
                 *self.config.metrics_listen, ",".join(self.config.sft.media_addresses),
                 *self.config.sft.media_ports, self.dataplane.name)

    async def stop(self) -> None:
        started = time.monotonic()
        log.info("shutting down (%d participants left)", len(self.sft.participants))
        await self.sft.stop()
        await self._cleanup_runners()
        log.info("stopped in %.1f s", time.monotonic() - started)

    async def _cleanup_runners(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners = []

    async def run(self) -> None:
        """Serve until SIGINT, or until SIGTERM's drain ends (last call gone or
        --drain-timeout passed); then stop."""
        await self.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:
            self.sft.drain()
            if not self.sft.participants:
                done.set()
            elif self.config.drain_timeout > 0:
                loop.call_later(self.config.drain_timeout, done.set)

        self.sft.on_idle = done.set
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        loop.add_signal_handler(signal.SIGINT, done.set)
        await done.wait()
        await self.stop()


def build_server(config: ServerConfig) -> Server:
    """The whole server for ``config``: data plane chosen, controller, API and
    metrics wired; nothing listens until ``start()``."""
    dataplane = choose_dataplane(config)
    sft = Sft(config.sft, dataplane)
    registry = make_registry(SftCollector(
        config.sft.version, sft.state, lambda: dataplane.name, sft.counters,
        sft.conference_packets, dataplane.read_detail_counters, sft.supervisor.restarts,
        lambda: dict(sft.refused), dataplane.legs_by_interface,
        getattr(dataplane, "read_bpf_failures", dict),
        userspace_media_drops=dataplane.read_userspace_media_drops,
        legs_without_media=lambda: dict(sft.media_watch.found)))
    return Server(config, sft, make_app(sft, config.api), make_metrics_app(sft, registry))
