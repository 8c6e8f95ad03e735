"""``RpcPool``: one connection per peer, lazy reconnects, transfer measurements."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from conftest import TEST_LIMITS, ServerFactory

from peer.rpc import (
    PROTOCOL_VERSION,
    ConnectionLost,
    RpcPool,
    RpcServer,
    pack_tensor,
    unpack_tensor,
)


async def test_one_connection_per_peer_shared_by_concurrent_calls(
    make_server: ServerFactory,
) -> None:
    a = await make_server()
    b = await make_server()
    pool = RpcPool(limits=TEST_LIMITS)
    try:
        calls = [pool.call(("127.0.0.1", s.port), "add", i, 1) for s in (a, b) for i in range(20)]
        results = await asyncio.gather(*calls)
        assert results == [i + 1 for _ in range(2) for i in range(20)]
        assert a.stats["connections_opened"] == 1
        assert b.stats["connections_opened"] == 1
        assert len(pool.addresses) == 2
    finally:
        await pool.close()


async def test_reconnects_after_the_peer_restarts() -> None:
    server = RpcServer(handlers={"add": lambda x, y: x + y}, limits=TEST_LIMITS)
    await server.start("127.0.0.1", 0)
    port = server.port
    pool = RpcPool(limits=TEST_LIMITS)
    try:
        assert await pool.call(("127.0.0.1", port), "add", 1, 2) == 3
        await server.close()
        with pytest.raises(ConnectionLost):
            await pool.call(("127.0.0.1", port), "add", 1, 2)
        server = RpcServer(handlers={"add": lambda x, y: x + y}, limits=TEST_LIMITS)
        await server.start("127.0.0.1", port)
        assert await pool.call(("127.0.0.1", port), "add", 2, 2) == 4
    finally:
        await pool.close()
        await server.close()


async def test_unreachable_peer_is_connection_lost() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    pool = RpcPool(limits=TEST_LIMITS, connect_timeout=2.0)
    with pytest.raises(ConnectionLost):
        await pool.call(("127.0.0.1", port), "ping")
    await pool.close()


async def test_on_transfer_reports_large_responses_only(make_server: ServerFactory) -> None:
    async def latent(n: int) -> dict[str, object]:
        return pack_tensor(np.ones(n, np.float32))

    server = await make_server({"latent": latent})
    reports: list[tuple[tuple[str, int], int, float]] = []
    pool = RpcPool(
        limits=TEST_LIMITS,
        on_transfer=lambda addr, nbytes, secs: reports.append((addr, nbytes, secs)),
        transfer_min_bytes=64 * 1024,
    )
    addr = ("127.0.0.1", server.port)
    try:
        small = await pool.call(addr, "latent", 10)
        assert unpack_tensor(small).shape == (10,)
        assert reports == []
        big = await pool.call(addr, "latent", 1_000_000)  # 4 MB: always several reads
        assert unpack_tensor(big).sum() == 1_000_000
        assert len(reports) == 1
        where, nbytes, secs = reports[0]
        assert where == addr
        assert 64 * 1024 <= nbytes <= 4_000_100
        assert secs > 0
    finally:
        await pool.close()


async def test_a_failing_callback_does_not_fail_the_call(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def blob() -> bytes:
        return b"b" * 3_000_000

    def broken(addr: object, nbytes: int, secs: float) -> None:
        raise RuntimeError("callback bug")

    server = await make_server({"blob": blob})
    pool = RpcPool(limits=TEST_LIMITS, on_transfer=broken)
    try:
        assert len(await pool.call(("127.0.0.1", server.port), "blob")) == 3_000_000
        assert any("on_transfer" in r.getMessage() for r in caplog.records)
    finally:
        await pool.close()


async def test_secret_pool(make_server: ServerFactory) -> None:
    server = await make_server(secret="k")
    pool = RpcPool(secret="k", limits=TEST_LIMITS)
    try:
        assert await pool.call(("127.0.0.1", server.port), "ping") == "pong"
    finally:
        await pool.close()
    with pytest.raises(ConnectionLost):
        await pool.call(("127.0.0.1", server.port), "ping")


async def test_on_transfer_times_the_wire_not_the_handler() -> None:
    """A peer that thinks for a while, then trickles its answer out: the report covers the
    trickle (bytes after the first read, first read to last byte), not the thinking."""
    import msgpack

    chunk, chunks, gap, compute = 40_000, 10, 0.02, 0.8

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        while data := await reader.read(65536):
            unpacker.feed(data)
            for msg in unpacker:
                if msg[2] == "hello":
                    writer.write(msgpack.packb([1, msg[1], None, {"protocol": PROTOCOL_VERSION}]))
                    continue
                await asyncio.sleep(compute)
                frame = msgpack.packb([1, msg[1], None, b"p" * (chunk * chunks)])
                step = len(frame) // chunks + 1
                for i in range(0, len(frame), step):
                    writer.write(frame[i : i + step])
                    await writer.drain()
                    await asyncio.sleep(gap)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reports: list[tuple[int, float]] = []
    pool = RpcPool(limits=TEST_LIMITS, on_transfer=lambda a, n, s: reports.append((n, s)))
    try:
        assert len(await pool.call(("127.0.0.1", port), "blob")) == chunk * chunks
        [(nbytes, seconds)] = reports
        assert chunk * (chunks - 3) <= nbytes < chunk * chunks + 100
        assert (chunks - 2) * gap <= seconds < compute  # sleeps only overshoot
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
