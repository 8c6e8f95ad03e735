"""Hostile and third-party input on a raw socket: the server answers or closes that
connection only, keeps serving everyone else, and counts each fault."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
from conftest import TEST_LIMITS, RawClient, ServerFactory

from peer.rpc import RpcClient


async def still_serving(port: int) -> None:
    async with await RpcClient.connect("127.0.0.1", port, limits=TEST_LIMITS) as client:
        assert await client.call("ping") == "pong"


async def test_third_party_client_calls_ping_and_info(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(info=lambda: {"peer_id": "p9"})
    raw: RawClient = await raw_clients(server.port)
    assert await raw.call(1, "ping") == [1, 1, None, "pong"]
    reply = await raw.call(2, "info")
    assert reply[:3] == [1, 2, None]
    assert reply[3]["peer_id"] == "p9" and reply[3]["protocol"] == 1
    assert await raw.call(3, "echo", "hi") == [1, 3, None, "hi"]
    reply = await raw.call(4, "nosuch")
    assert reply[2] == {"code": "unknown_method", "message": "no method 'nosuch'"}
    # pipelined requests in one write come back matched by msgid
    await raw.send(b"".join(msgpack.packb([0, 100 + i, "add", [i, i]]) for i in range(10)))
    got = {}
    for _ in range(10):
        msg = await raw.recv()
        got[msg[1]] = msg[3]
    assert got == {100 + i: 2 * i for i in range(10)}


async def test_garbage_bytes_close_only_that_connection(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    server = await make_server()
    bystander: RawClient = await raw_clients(server.port)
    assert (await bystander.call(1, "ping"))[3] == "pong"
    bad: RawClient = await raw_clients(server.port)
    await bad.send(b"\xc1 this is not msgpack")
    note = await bad.recv()
    assert note[:2] == [2, "rpc.error"] and note[2][0]["code"] == "malformed_frame"
    assert await bad.closed_by_peer()
    assert (await bystander.call(2, "ping"))[3] == "pong"
    assert server.stats["malformed_frames"] == 1
    await still_serving(server.port)


async def test_wrong_shapes_get_errors_and_connection_stays(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    server = await make_server()
    raw: RawClient = await raw_clients(server.port)
    await raw.send_obj([0, 5, 42, []])  # method not a string, msgid readable
    reply = await raw.recv()
    assert reply[:2] == [1, 5] and reply[2]["code"] == "bad_request"
    await raw.send_obj([0, 6, "ping", "not-a-list"])
    assert (await raw.recv())[2]["code"] == "bad_request"
    for obj in ({"a": 1}, [9, 1, 2], "text", [1, 77, None, "unsolicited response"]):
        await raw.send_obj(obj)
        note = await raw.recv()
        assert note[:2] == [2, "rpc.error"] and note[2][0]["code"] == "bad_request"
    assert await raw.call(7, "ping") == [1, 7, None, "pong"]
    assert server.stats["bad_messages"] == 6


async def test_oversized_frame_closes_that_connection(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    server = await make_server()
    raw: RawClient = await raw_clients(server.port)
    # a bin header declaring 64 MiB: refused at the header, without waiting for its bytes
    header = b"\x94\x00\x01\xa4echo\x91\xc6" + (64 * 1024 * 1024).to_bytes(4, "big")
    await raw.send(header)
    note = await raw.recv(timeout=TEST_LIMITS.frame_timeout / 2)
    assert note[2][0]["code"] == "too_large" and "declares a bin" in note[2][0]["message"]
    assert await raw.closed_by_peer()
    # many values each within bounds but the frame beyond max_frame_bytes
    raw2: RawClient = await raw_clients(server.port)
    chunk = b"\xc5\x80\x00" + b"y" * 0x8000  # bin16 of 32 KiB
    n = TEST_LIMITS.max_frame_bytes // len(chunk) + 4
    header = b"\x94\x00\x02\xa4echo\x91\xdc" + n.to_bytes(2, "big")
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await raw2.send(header + chunk * n)
    assert await raw2.closed_by_peer()
    assert server.stats["oversized_frames"] == 2
    await still_serving(server.port)


async def test_slowloris_half_frame_is_cut_off(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(limits=TEST_LIMITS.with_(frame_timeout=0.3))
    raw: RawClient = await raw_clients(server.port)
    frame = msgpack.packb([0, 1, "echo", [b"z" * 1000]])
    await raw.send(frame[:500])
    note = await raw.recv(timeout=5)
    assert note[2][0]["code"] == "frame_timeout"
    assert await raw.closed_by_peer()
    assert server.stats["frame_timeouts"] == 1
    await still_serving(server.port)


async def test_slow_but_steady_frame_completes(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    server = await make_server()
    raw: RawClient = await raw_clients(server.port)
    frame = msgpack.packb([0, 1, "echo", [b"z" * 1000]])
    for i in range(0, len(frame), 200):
        await raw.send(frame[i : i + 200])
        await asyncio.sleep(0.02)
    assert (await raw.recv())[3] == b"z" * 1000


async def test_busy_when_one_read_overflows_the_backlog(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    gate = asyncio.Event()

    async def wait(i: int) -> int:
        await gate.wait()
        return i

    server = await make_server({"wait": wait})
    raw: RawClient = await raw_clients(server.port)
    n = TEST_LIMITS.max_in_flight + TEST_LIMITS.max_backlog + 3
    await raw.send(b"".join(msgpack.packb([0, i, "wait", [i]]) for i in range(n)))
    busy = []
    for _ in range(3):
        msg = await raw.recv()
        assert msg[2]["code"] == "busy"
        busy.append(msg[1])
    gate.set()
    results = {}
    for _ in range(n - 3):
        msg = await raw.recv()
        results[msg[1]] = msg[3]
    assert sorted(busy) == list(range(n - 3, n))
    assert results == {i: i for i in range(n - 3)}
    assert server.stats["busy_rejections"] == 3


async def test_dropped_mid_frame_and_mid_call_are_counted(
    make_server: ServerFactory, raw_clients
) -> None:  # type: ignore[no-untyped-def]
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    server = await make_server({"hang": hang})
    raw: RawClient = await raw_clients(server.port)
    await raw.send_obj([0, 1, "hang", []])
    await started.wait()
    await raw.send(msgpack.packb([0, 2, "echo", [b"q" * 100]])[:50])
    await raw.close()
    for _ in range(100):
        if server.stats["dropped_mid_call"]:
            break
        await asyncio.sleep(0.02)
    assert server.stats["dropped_mid_call"] == 1
    assert server.connections == 0
    await still_serving(server.port)


async def test_connection_limit(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(limits=TEST_LIMITS.with_(max_connections=2))
    a: RawClient = await raw_clients(server.port)
    b: RawClient = await raw_clients(server.port)
    assert (await a.call(1, "ping"))[3] == "pong"
    assert (await b.call(1, "ping"))[3] == "pong"
    c: RawClient = await raw_clients(server.port)
    note = await c.recv()
    assert note[2][0]["code"] == "busy"
    assert await c.closed_by_peer()
    assert server.stats["connections_rejected"] == 1
    await a.close()
    for _ in range(100):
        if server.connections < 2:
            break
        await asyncio.sleep(0.02)
    await still_serving(server.port)


async def test_notification_outlives_its_sender(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    done = asyncio.Event()

    async def slow_note(x: int) -> None:
        await asyncio.sleep(0.1)
        done.set()

    server = await make_server({"slow_note": slow_note})
    raw: RawClient = await raw_clients(server.port)
    await raw.send_obj([2, "slow_note", [1]])
    await raw.close()
    await asyncio.wait_for(done.wait(), 5)
    assert server.stats["dropped_mid_call"] == 0


async def test_request_then_immediate_close(make_server: ServerFactory, raw_clients) -> None:  # type: ignore[no-untyped-def]
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    server = await make_server({"slow": slow})
    for i in range(5):
        raw: RawClient = await raw_clients(server.port)
        await raw.send(msgpack.packb([0, i, "slow", [i]]) + msgpack.packb([0, 99, "add", [1, 2]]))
        await raw.close()
    for _ in range(500):
        if server.connections == 0 and server.stats["dropped_mid_call"] == 5:
            break
        await asyncio.sleep(0.01)
    assert server.connections == 0
    assert server.stats["dropped_mid_call"] == 5
    await still_serving(server.port)
