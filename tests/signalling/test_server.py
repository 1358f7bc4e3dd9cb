"""The composition root: build_server() wires a server that listens, answers and
stops as sftd does; the data-plane registry picks, falls back and refuses by name."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sftd.controller.dataplane import DataPlaneUnavailable
from sftd.controller.sft import SftConfig
from sftd.signalling import cli, server
from sftd.signalling.api import ApiConfig
from sftd.signalling.server import ServerConfig, StartupError, build_server

URL = "http://sft.example/sfts/sftd-0"
CONV = "0123456789abcdef0123456789abcdef"
pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(**kw: Any) -> ServerConfig:
    return ServerConfig(sft=SftConfig(url=URL, media_addresses=["127.0.0.1"],
                                      media_ports=(42100, 42199)),
                        api=ApiConfig(url=URL), **kw)


async def test_built_server_listens_answers_and_stops() -> None:
    api_port, metrics_port = _free_port(), _free_port()
    built = build_server(_config(listen=("127.0.0.1", api_port),
                                 metrics_listen=("127.0.0.1", metrics_port),
                                 dataplane="userspace"))
    assert built.dataplane.name == "userspace"
    await built.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api_port}/sft/url") as r:
                assert r.status == 200 and (await r.text()).strip() == URL
            async with http.post(f"http://127.0.0.1:{api_port}/sft/{CONV}", json={
                    "version": "3.0", "type": "CONFCONN", "sessid": "s", "resp": False,
                    "src_userid": "alice", "src_clientid": "c1", "vstreams": 1}) as r:
                assert r.status == 200 and (await r.json())["type"] == "SETUP"
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                text = await r.text()
                assert "sft_participants 1.0" in text
                assert 'sft_dataplane_info{dataplane="userspace"} 1.0' in text
    finally:
        await built.stop()
    assert not built.sft.participants
    with socket.socket() as s:  # the listener is gone
        assert s.connect_ex(("127.0.0.1", api_port)) != 0


async def test_a_taken_port_is_a_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        built = build_server(_config(listen=taken.getsockname(), dataplane="userspace",
                                     metrics_listen=("127.0.0.1", _free_port())))
        with pytest.raises(StartupError, match="cannot listen"):
            await built.start()


async def test_auto_takes_the_native_plane_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    """The real registry: the native engine runs anywhere it is built (its UDP I/O
    needs no privilege), and it is the fastest, so auto takes it and logs why."""
    caplog.set_level(logging.INFO, logger="sftd")
    plane = server.choose_dataplane(_config(dataplane="auto", interface_names=["lo"]))
    try:
        assert plane.name == "native"
        assert "data plane: native (--dataplane auto: the fastest plane" in caplog.text
    finally:
        plane.close()


def _unavailable(config: ServerConfig) -> server.DataPlane:
    raise DataPlaneUnavailable("needs hardware this host lacks")


async def test_registry_falls_back_in_auto_and_refuses_when_asked_by_name(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A plane that cannot run here: auto takes the next one and says why; asked
    for by name, it is a startup error with the reason."""
    monkeypatch.setitem(server.DATAPLANES, "scarce", _unavailable)
    monkeypatch.setattr(server, "AUTO_ORDER", ("scarce", "userspace"))
    caplog.set_level(logging.WARNING, logger="sftd")
    plane = server.choose_dataplane(_config(dataplane="auto"))
    try:
        assert plane.name == "userspace"
        assert "the scarce path is unavailable: needs hardware this host lacks" in caplog.text
    finally:
        plane.close()
    with pytest.raises(StartupError, match="scarce requested but unavailable: needs hardware"):
        server.choose_dataplane(_config(dataplane="scarce"))
    with pytest.raises(StartupError, match="unknown --dataplane 'nope'"):
        server.choose_dataplane(_config(dataplane="nope"))


def test_cli_offers_the_registered_planes() -> None:
    assert cli.build_parser().parse_args(["--dataplane", "kernel"]).dataplane == "kernel"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--dataplane", "nope"])


def test_cli_options_become_the_server_config(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    args = cli.build_parser().parse_args([
        "-I", "127.0.0.2", "-p", "9000", "-s", str(secret), "-a", "-b", "<6.0",
        "--max-participants", "7", "--dataplane", "userspace", "--media-ports", "40000-40099"])
    config = cli.config_from_args(args, ["127.0.0.1"], ["lo"])
    assert config.listen == ("127.0.0.2", 9000) and config.dataplane == "userspace"
    assert config.sft.url == config.api.url == "http://127.0.0.2:9000"
    assert config.api.auth_secret == b"s3cret" and config.sft.max_participants == 7
    assert config.sft.media_ports == (40000, 40099) and config.interface_names == ["lo"]
    assert config.api.blacklist is not None and config.api.blacklist.blocks("5.9")
    with pytest.raises(SystemExit, match="--tls-cert and --tls-key go together"):
        cli.config_from_args(cli.build_parser().parse_args(["--tls-cert", "c.pem"]), [], [])
