"""Secure by default: exposed addresses need a key or token, the HTTP token, Retry-After, the
slowloris guard, `secret new`, and what --insecure leaves open."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from peer.cli import main
from peer.core.config import (
    PeerConfig,
    exposure_problem,
    insecure_warnings,
    load_peer_config,
    parse_advertise,
)
from peer.core.errors import ConfigError
from peer.runtime.backend import NullBackend
from peer.runtime.http import ConnectionGuard
from peer.runtime.node import Node, advertised_host


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.key"
    assert main(["secret", "new", str(path)]) == 0
    return path


def test_secret_new_writes_a_private_random_key(tmp_path: Path, key: Path) -> None:
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text().strip()
    assert len(text) == 64 and int(text, 16) >= 0
    other = tmp_path / "other.key"
    assert main(["secret", "new", str(other)]) == 0
    assert other.read_text() != key.read_text()
    assert main(["secret", "new", str(key)]) == 2  # never overwrites without --force
    assert key.read_text().strip() == text


@pytest.mark.parametrize(
    ("overrides", "needs"),
    [
        ({"listen": "0.0.0.0:7001"}, "cluster needs a key"),
        ({"listen": "192.0.2.7:7001"}, "cluster needs a key"),
        ({"advertise": "192.0.2.7"}, "cluster needs a key"),
        ({"http": "0.0.0.0:8001"}, "needs a token"),
        ({"http": "[::]:8001"}, "needs a token"),
    ],
)
def test_exposed_addresses_need_a_key_or_token(overrides: dict[str, Any], needs: str) -> None:
    with pytest.raises(ConfigError, match=needs):
        load_peer_config(None, {"name": "p", **overrides})


def test_key_token_or_insecure_lets_a_peer_start(key: Path) -> None:
    cfg = load_peer_config(
        None,
        {
            "name": "p",
            "listen": "0.0.0.0:7001",
            "http": "0.0.0.0:8001",
            "secret_file": str(key),
            "api_token_file": str(key),
        },
    )
    assert exposure_problem(cfg) is None and insecure_warnings(cfg) == []
    loose = load_peer_config(
        None, {"name": "p", "listen": "0.0.0.0:7001", "http": "0.0.0.0:8001", "insecure": True}
    )
    warnings = insecure_warnings(loose)
    assert len(warnings) == 2 and all("--insecure" in w for w in warnings)
    local = load_peer_config(None, {"name": "p", "listen": "127.0.0.1:7001"})
    assert exposure_problem(local) is None and insecure_warnings(local) == []


def test_the_cli_refuses_an_exposed_peer_and_says_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["peer", "--name", "p", "--listen", "0.0.0.0:7001"]) == 2
    err = capsys.readouterr().err
    assert "amcoedge secret new" in err and "--secret-file" in err and "--insecure" in err


def test_advertise() -> None:
    assert parse_advertise("10.1.2.3") == ("10.1.2.3", 0)
    assert parse_advertise("10.1.2.3:7005") == ("10.1.2.3", 7005)
    with pytest.raises(ConfigError):
        load_peer_config(None, {"name": "p", "advertise": "0.0.0.0", "insecure": True})
    cfg = PeerConfig(name="p", listen=("127.0.0.1", 0), advertise=("10.9.8.7", 0), insecure=True)
    assert advertised_host(cfg) == "10.9.8.7"
    assert advertised_host(PeerConfig(name="p", listen=("127.0.0.5", 0))) == "127.0.0.5"


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Node]:
    token = tmp_path / "api.token"
    token.write_text("s3cret-token-0123456789\n")
    cfg = PeerConfig(
        name="solo",
        listen=("127.0.0.1", 0),
        http=("127.0.0.1", 0),
        gossip="local",
        calibrate=False,
        api_token_file=str(token),
    )
    node = Node(cfg, backend=NullBackend())
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_the_http_token_is_required_except_for_healthz(guarded: Node) -> None:
    base = f"http://127.0.0.1:{guarded.http_port}"
    body = {"count": 2, "label": 1, "steps": 2, "seed": 1, "mode": "local"}
    async with ClientSession() as s:
        async with s.get(f"{base}/healthz") as r:
            assert r.status == 200
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            async with s.post(f"{base}/v1/generate", json=body, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await r.json())["error"]["code"] == "unauthorized"
        auth = {"Authorization": "Bearer s3cret-token-0123456789"}
        async with s.post(f"{base}/v1/generate", json=body, headers=auth) as r:
            assert r.status == 200 and len((await r.json())["result"]["images"]) == 2
        async with s.get(f"{base}/v1/cluster?token=s3cret-token-0123456789") as r:
            assert r.status == 200
    sample = guarded.metrics.registry.get_sample_value(
        "amcoedge_http_requests_total",
        {"route": "/v1/generate", "status": "401", "code": "unauthorized"},
    )
    assert sample == 2


async def test_overloaded_answers_503_with_retry_after(guarded: Node) -> None:
    base = f"http://127.0.0.1:{guarded.http_port}"
    guarded.gossip = None  # a peer that is still starting refuses work with 503
    auth = {"Authorization": "Bearer s3cret-token-0123456789"}
    body = {"count": 1, "steps": 2, "mode": "local"}
    async with (
        ClientSession() as s,
        s.post(f"{base}/v1/generate", json=body, headers=auth) as r,
    ):
        assert r.status == 503
        assert int(r.headers["Retry-After"]) >= 1


def test_guard_closes_connections_that_send_no_request() -> None:
    now = [0.0]
    guard = ConnectionGuard(10.0, lambda: now[0])

    class Tr:
        def __init__(self) -> None:
            self.closed = False

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

    idle, busy = Tr(), Tr()
    guard._busy[id(busy)] = 1  # a request in progress (the middleware's bookkeeping)
    assert guard.sweep([idle, busy]) == 0  # first seen now
    now[0] = 10.5
    assert guard.sweep([idle, busy]) == 1
    assert idle.closed and not busy.closed and guard.closed == 1


async def test_a_slowloris_connection_is_closed_and_the_peer_keeps_serving(guarded: Node) -> None:
    assert guarded.guard is not None
    guarded.guard.header_timeout_s = 0.5
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10.0)  # EOF once the guard closes it
    assert data == b""
    assert guarded.guard.closed >= 1
    writer.close()
    async with (
        ClientSession() as s,
        s.get(f"http://127.0.0.1:{guarded.http_port}/healthz") as r,
    ):
        assert r.status == 200


async def test_an_exposed_node_refuses_to_start_even_when_built_directly() -> None:
    cfg = dataclasses.replace(
        PeerConfig(name="x", calibrate=False), listen=("0.0.0.0", 0), http=("127.0.0.1", 0)
    )
    node = Node(cfg, backend=NullBackend())
    with pytest.raises(ConfigError, match="needs a key"):
        await node.start()
    await node.stop()
