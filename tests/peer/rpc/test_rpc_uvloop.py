"""The same transport under uvloop (its transports are not asyncio classes and it reads and
times differently): auth, large frames, timeouts, backlog, hostile bytes, third-party calls."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from conftest import TEST_LIMITS, RawClient

from peer.rpc import RemoteError, RpcClient, RpcPool, RpcServer, RpcTimeout

uvloop = pytest.importorskip("uvloop")


async def scenario() -> dict[str, Any]:
    gate = asyncio.Event()

    async def wait(i: int) -> int:
        await gate.wait()
        return i

    async def blob(n: int) -> bytes:
        return b"b" * n

    async def hang() -> None:
        await asyncio.Event().wait()

    server = RpcServer(
        handlers={"wait": wait, "blob": blob, "hang": hang, "add": lambda a, b: a + b},
        limits=TEST_LIMITS,
        secret="s",
    )
    await server.start("127.0.0.1", 0)
    out: dict[str, Any] = {}
    transfers: list[int] = []
    pool = RpcPool(secret="s", limits=TEST_LIMITS, on_transfer=lambda a, n, s: transfers.append(n))
    addr = ("127.0.0.1", server.port)
    try:
        out["add"] = await pool.call(addr, "add", 2, 3)
        out["blob"] = len(await pool.call(addr, "blob", 3_000_000))
        out["transfers"] = len(transfers)
        client = await RpcClient.connect(
            "127.0.0.1", server.port, secret="s", limits=TEST_LIMITS.with_(max_in_flight=64)
        )
        with pytest.raises(RpcTimeout):
            await client.call("hang", timeout=0.1)
        n = TEST_LIMITS.max_in_flight + 10
        tasks = [asyncio.create_task(client.call("wait", i)) for i in range(n)]
        await asyncio.sleep(0.1)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        out["backlog_ok"] = [r for r in results if not isinstance(r, RemoteError)] == list(range(n))
        await client.close()
        raw = await RawClient.open(server.port)
        await raw.send(b"\xc1garbage")
        note = await raw.recv()
        out["garbage_code"] = note[2][0]["code"]
        await raw.close()
        raw = await RawClient.open(server.port)
        out["ping"] = (await raw.call(1, "ping"))[3]
        out["unauth"] = (await raw.call(2, "info"))[2]["code"]
        await raw.close()
        out["stats"] = dict(server.stats)
    finally:
        await pool.close()
        await server.close()
    return out


def test_transport_under_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out = runner.run(scenario())
    assert out["add"] == 5
    assert out["blob"] == 3_000_000
    assert out["transfers"] == 1
    assert out["backlog_ok"]
    assert out["garbage_code"] == "malformed_frame"
    assert out["ping"] == "pong"
    assert out["unauth"] == "unauthorized"
    assert out["stats"]["malformed_frames"] == 1
    assert out["stats"]["auth_ok"] == 2


def test_third_party_ping_under_uvloop() -> None:
    async def main() -> list[Any]:
        server = RpcServer(limits=TEST_LIMITS)
        await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(msgpack.packb([0, 1, "ping", []]) + msgpack.packb([0, 2, "info", []]))
            unpacker = msgpack.Unpacker(raw=False)
            got: list[Any] = []
            while len(got) < 2:
                unpacker.feed(await reader.read(65536))
                got.extend(unpacker)
            writer.close()
            return got
        finally:
            await server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        first, second = runner.run(main())
    assert first == [1, 1, None, "pong"]
    assert second[3]["protocol"] == 1
