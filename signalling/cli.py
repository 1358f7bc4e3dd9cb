"""``sftd``: the command line. Parses the options, sets up logging, turns the
options into a ``ServerConfig`` and runs the server ``build_server`` makes of it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import threading
import time
from importlib import metadata

from sftd.controller.sft import SftConfig

from .api import MAX_BODY_BYTES, ApiConfig
from .auth import Blacklist
from .server import DATAPLANES, ServerConfig, StartupError, build_server

log = logging.getLogger("sftd")


def version() -> str:
    try:
        return metadata.version("sftd-ebpf")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535):
        raise argparse.ArgumentTypeError(f"expected LO-HI within 1-65535, got {text!r}")
    return int(low), int(high)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sftd", description="Wire-compatible conference server (SFT) with an eBPF data plane. "
        "Flags follow Wire's sftd; long options are this implementation's additions.")
    p.add_argument("-I", dest="listen_addr", default="127.0.0.1", metavar="ADDR",
                   help="signalling listen address (default 127.0.0.1)")
    p.add_argument("-p", dest="listen_port", type=int, default=8585, metavar="PORT",
                   help="signalling listen port (default 8585)")
    p.add_argument("-A", dest="advertised", metavar="ADDR",
                   help="media address to advertise in candidates instead of the bound one "
                        "(1:1 NAT)")
    p.add_argument("-M", dest="metrics_addr", default="127.0.0.1", metavar="ADDR",
                   help="metrics listen address (default 127.0.0.1)")
    p.add_argument("-r", dest="metrics_port", type=int, default=49090, metavar="PORT",
                   help="metrics listen port (default 49090)")
    p.add_argument("-u", dest="url", metavar="URL",
                   help="this SFT's URL handed to clients (default http://<-I>:<-p>)")
    p.add_argument("-O", dest="interfaces", metavar="IF[,IF…]",
                   help="media interfaces (default: every non-loopback interface with IPv4; "
                        "'lo' allowed for local testing)")
    p.add_argument("-b", dest="blacklist", default="", metavar="LIST",
                   help="client version blacklist, e.g. '<6.2.9,6.2.11' (CONFCONN status 1)")
    p.add_argument("-l", dest="log_prefix", metavar="PREFIX",
                   help="write the log to PREFIX_<YYYY-MM-DD.HH:MM:SS>.log (start time) "
                        "instead of stderr")
    p.add_argument("-q", dest="quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("-T", dest="use_turn", action="store_true",
                   help="relay candidates through TURN (not supported yet: sftd refuses to "
                        "start with it; clients' own TURN relays work without it)")
    p.add_argument("-t", dest="turn_uri", metavar="URI",
                   help="federation TURN URI (accepted; federation is not implemented yet)")
    p.add_argument("-f", dest="federation_url", metavar="URL",
                   help="federation URL (accepted; federation is not implemented yet)")
    p.add_argument("-x", dest="turn_user", metavar="USER",
                   help="federation TURN username (accepted; federation is not implemented yet)")
    p.add_argument("-c", dest="turn_credential", metavar="PASSWORD",
                   help="federation TURN password (accepted; federation is not implemented yet)")
    p.add_argument("-s", dest="secret_file", metavar="PATH",
                   help="file with the shared secret (tokens for -a, federation); read and "
                        "checked whenever given")
    p.add_argument("-a", dest="auth", action="store_true",
                   help="require CONFCONN username/credential tokens (needs -s)")
    p.add_argument("-w", dest="workers", type=int, default=16, metavar="N",
                   help="worker count (default 16): the native data plane's media threads, "
                        "at most one per CPU; signalling runs on one event loop")
    p.add_argument("-k", dest="fir_interval", type=int, default=1000, metavar="MS",
                   help="send RTCP FIR to every video sender every MS ms (default 1000)")
    p.add_argument("-v", "--version", action="version", version=f"version: {version()}",
                   help="print the version and exit")
    p.add_argument("--debug", "--verbose", dest="verbose", action="store_true",
                   help="debug logging")
    p.add_argument("--tls-cert", metavar="PATH", help="serve the signalling API over HTTPS")
    p.add_argument("--tls-key", metavar="PATH", help="private key for --tls-cert")
    p.add_argument("--allow-origin", metavar="ORIGIN",
                   help="answer CORS (incl. OPTIONS preflight) for this origin, e.g. https://app.wire.com")
    p.add_argument("--media-ports", type=_port_range, default=(32768, 61000), metavar="LO-HI",
                   help="UDP port range for media legs (default 32768-61000)")
    p.add_argument("--dataplane", choices=("auto", *DATAPLANES), default="auto",
                   help="auto: the fastest plane that runs here, native (the C engine, -w "
                        "threads), else kernel (eBPF, root), else userspace; the log says "
                        "which and why (default auto)")
    p.add_argument("--native-io", choices=("auto", "xdp", "udp"), default="udp",
                   help="media I/O of --dataplane native: udp uses the legs' UDP sockets; xdp "
                        "steers legs' RTP into AF_XDP sockets on each -O interface and sends "
                        "copies from them (root, not loopback, IPv4; about half the CPU per "
                        "participant, but copies bypass netfilter and qdiscs); auto: xdp when "
                        "it attaches on every -O interface, else udp, the reason logged "
                        "(default udp)")
    p.add_argument("--instance", default="default", metavar="NAME",
                   help="instance name: BPF pins live under /sys/fs/bpf/sftd/NAME "
                        "(default 'default')")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log line format (default text)")
    p.add_argument("--drain-timeout", type=float, default=0, metavar="SECONDS",
                   help="after SIGTERM, exit at the latest after SECONDS even if calls "
                        "remain (default 0: wait for the last call)")
    p.add_argument("--demo", action="store_true",
                   help="serve the browser demo page at /demo/ (off by default)")
    p.add_argument("--setup-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="end a participant that has not connected this long after the offer "
                        "(default 10)")
    p.add_argument("--ping-timeout", type=float, default=20.0, metavar="SECONDS",
                   help="end a participant that has not sent PING for this long (default 20)")
    p.add_argument("--max-participants", type=int, default=0, metavar="N",
                   help="refuse new participants beyond N on this instance, CONFCONN status 4 "
                        "(default 0: no limit)")
    p.add_argument("--confconn-rate", type=float, default=0, metavar="PER_SECOND",
                   help="CONFCONN requests allowed per second per source address, burst 20; "
                        "more get HTTP 429 (default 0: no limit; behind an ingress all clients "
                        "share its address)")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, metavar="BYTES",
                   help=f"larger request bodies get HTTP 413 (default and maximum "
                        f"{MAX_BODY_BYTES})")
    p.add_argument("--request-timeout", type=float, default=15.0, metavar="SECONDS",
                   help="a request whose body or offer takes longer gets 408/500 (default 15)")
    p.add_argument("--max-conference-size", type=int, default=0, metavar="N",
                   help="refuse joins beyond N participants per conference, status 4 (default 0)")
    return p


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def log_path(prefix: str, now: float | None = None) -> str:
    """Wire's -l naming: the prefix, then the start time."""
    stamp = time.strftime("%Y-%m-%d.%H:%M:%S", time.localtime(now))
    return f"{prefix}_{stamp}.log"


def setup_logging(args: argparse.Namespace) -> None:
    handler: logging.Handler = (logging.FileHandler(log_path(args.log_prefix))
                                if args.log_prefix else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.verbose else
                  logging.WARNING if args.quiet else logging.INFO)
    for noisy in ("aiortc", "aioice", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)


def interface_addresses(names: list[str] | None) -> list[str]:
    """IPv4 addresses of the media interfaces."""
    from pyroute2 import IPRoute

    found: list[str] = []
    with IPRoute() as ipr:
        links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for addr in ipr.get_addr(family=socket.AF_INET):
            name = links.get(addr["index"], "")
            ip = addr.get_attr("IFA_ADDRESS")
            if names is None and name == "lo":
                continue
            if names is None or name in names:
                found.append(ip)
    if names is None and not found:
        log.warning("no non-loopback IPv4 interface: offering media on 127.0.0.1 only")
        found = ["127.0.0.1"]
    unknown = sorted(set(names or ()) - set(links.values()))
    if unknown:
        raise SystemExit(f"sftd: -O names unknown interfaces: {', '.join(unknown)}")
    return found


def config_from_args(args: argparse.Namespace, media_addresses: list[str],
                     interface_names: list[str]) -> ServerConfig:
    """The server configuration the options describe; SystemExit says what is wrong."""
    url = args.url or f"http://{args.listen_addr}:{args.listen_port}"
    if args.auth and not args.secret_file:
        raise SystemExit("sftd: -a needs -s SECRETFILE")
    secret = None
    if args.secret_file:  # read whenever given, as Wire's sftd does; -a decides its use
        try:
            with open(args.secret_file, "rb") as f:
                secret = f.read().strip()
        except OSError as exc:
            raise SystemExit(f"sftd: cannot read secret file {args.secret_file}: "
                             f"{exc.strerror}") from None
        if not secret:
            raise SystemExit(f"sftd: secret file {args.secret_file} is empty")
    try:
        blacklist = Blacklist(args.blacklist)
    except ValueError as exc:
        raise SystemExit(f"sftd: -b {args.blacklist!r}: {exc}") from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("sftd: --tls-cert and --tls-key go together")
    return ServerConfig(
        sft=SftConfig(url=url, media_addresses=media_addresses,
                      advertised_address=args.advertised, media_ports=args.media_ports,
                      fir_interval_ms=args.fir_interval, setup_timeout=args.setup_timeout,
                      ping_timeout=args.ping_timeout, max_participants=args.max_participants,
                      max_conference_size=args.max_conference_size, version=version()),
        api=ApiConfig(url=url, auth_secret=secret if args.auth else None, blacklist=blacklist,
                      allow_origin=args.allow_origin, demo=args.demo,
                      request_timeout=args.request_timeout, confconn_rate=args.confconn_rate,
                      max_body_bytes=args.max_body_bytes),
        listen=(args.listen_addr, args.listen_port),
        metrics_listen=(args.metrics_addr, args.metrics_port),
        dataplane=args.dataplane, interface_names=interface_names, instance=args.instance,
        workers=args.workers, native_io=args.native_io,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        drain_timeout=args.drain_timeout)


# How much nicer than the engine's workers the event loop's thread runs: where
# they share a core, forwarding media comes before signalling and the
# controller's timers (raising one's own nice needs no privilege).
CONTROLLER_NICE = 5


def media_first(dataplane: object) -> None:
    """Lower this thread's priority below the data plane's worker threads (already
    started, so they keep theirs); threads started later from here inherit it."""
    if getattr(dataplane, "workers", 0) <= 0:
        return
    tid = threading.get_native_id()
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + CONTROLLER_NICE))
    log.debug("controller thread at nice %d, the engine's workers at %d",
              os.getpriority(os.PRIO_PROCESS, tid), nice)


async def serve(config: ServerConfig) -> int:
    try:
        server = build_server(config)
        media_first(server.sft.dataplane)
        await server.run()
    except StartupError as exc:
        raise SystemExit(f"sftd: {exc}") from None
    return 0


def _interfaces_of(addresses: list[str]) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return sorted({links[a["index"]] for a in ipr.get_addr(family=socket.AF_INET)
                       if a.get_attr("IFA_ADDRESS") in addresses})


TURN_UNSUPPORTED = (
    "sftd: -T (relay candidates through a TURN server) is not supported yet: media "
    "relayed to the SFT would not reach its data plane. Start without -T: clients "
    "behind restrictive NATs still connect through their own TURN relays to the SFT's "
    "host candidates (use -A ADDR when the SFT sits behind a 1:1 NAT).")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.use_turn:
        raise SystemExit(TURN_UNSUPPORTED)
    setup_logging(args)
    # pyroute2's synchronous API runs its own loop: resolve interfaces before ours starts.
    names = [n for n in args.interfaces.split(",") if n] if args.interfaces else None
    addresses = interface_addresses(names)
    if not addresses:
        raise SystemExit(f"sftd: no IPv4 address on media interfaces {names or 'non-loopback'}; "
                         "pass -O with an interface that has one (e.g. -O lo for local tests)")
    config = config_from_args(args, addresses, names or _interfaces_of(addresses))
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
