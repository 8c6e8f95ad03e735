"""Client/server behaviour: calls, errors, timeouts, cancellation, multiplexing, backpressure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import TEST_LIMITS, ServerFactory

from peer.rpc import (
    PROTOCOL_VERSION,
    ConnectionLost,
    EncodeError,
    RemoteError,
    RpcClient,
    RpcError,
    RpcTimeout,
    VersionMismatch,
)


async def connect(server: Any, **kw: Any) -> RpcClient:
    return await RpcClient.connect("127.0.0.1", server.port, limits=TEST_LIMITS, **kw)


async def test_builtins(make_server: ServerFactory) -> None:
    server = await make_server(info=lambda: {"peer_id": "p1", "capacity": 2.5})
    async with await connect(server) as client:
        assert await client.call("ping") == "pong"
        assert await client.call("ping", b"\x00" * 10) == b"\x00" * 10
        info = await client.call("info")
        assert info["protocol"] == PROTOCOL_VERSION
        assert info["peer_id"] == "p1"
        assert {"ping", "info", "echo", "add"} <= set(info["methods"])
        assert client.server_hello["protocol"] == PROTOCOL_VERSION


async def test_handler_results_and_add_handler_after_start(make_server: ServerFactory) -> None:
    server = await make_server()
    async with await connect(server) as client:
        assert await client.call("add", 2, 3) == 5
        with pytest.raises(RemoteError) as err:
            await client.call("mul", 2, 3)
        assert err.value.code == "unknown_method"

        async def mul(a: int, b: int) -> int:
            return a * b

        server.add_handler("mul", mul)
        assert await client.call("mul", 2, 3) == 6


def test_reserved_and_duplicate_names_are_refused() -> None:
    from peer.rpc import RpcServer

    server = RpcServer()

    async def h() -> None:
        return None

    for name in ("ping", "info", "hello", "auth.x", "rpc.error", ""):
        with pytest.raises(ValueError):
            server.add_handler(name, h)
    server.add_handler("x", h)
    with pytest.raises(ValueError):
        server.add_handler("x", h)
    server.add_handler("x", h, replace=True)


async def test_errors_map_to_stable_codes(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise KeyError("nope")

    async def typed() -> None:
        raise RpcError("share too big", code="bad_share")

    async def unencodable() -> object:
        return object()

    def sync_ok(x: int) -> int:
        return x + 1

    server = await make_server(
        {"boom": boom, "typed": typed, "unencodable": unencodable, "sync_ok": sync_ok}
    )
    async with await connect(server) as client:
        with (
            caplog.at_level(logging.ERROR, logger="peer.rpc.server"),
            pytest.raises(RemoteError) as err,
        ):
            await client.call("boom")
        assert err.value.code == "internal"
        assert "KeyError" in err.value.message
        assert any("boom" in r.getMessage() for r in caplog.records)
        with pytest.raises(RemoteError) as err:
            await client.call("typed")
        assert (err.value.code, err.value.message) == ("bad_share", "share too big")
        with pytest.raises(RemoteError) as err:
            await client.call("add", 1)
        assert err.value.code == "invalid_params"
        with pytest.raises(RemoteError) as err:
            await client.call("unencodable")
        assert err.value.code == "internal"
        assert await client.call("sync_ok", 1) == 2
        # the connection and server are still fine
        assert await client.call("add", 1, 1) == 2
    assert server.stats["handler_errors"] == 1
    assert server.stats["invalid_params"] == 1
    assert server.stats["unencodable_results"] == 1


async def test_oversized_request_fails_locally(make_server: ServerFactory) -> None:
    server = await make_server()
    async with await connect(server) as client:
        with pytest.raises(EncodeError) as err:
            await client.call("echo", b"x" * (TEST_LIMITS.max_frame_bytes + 1))
        assert err.value.code == "too_large"
        with pytest.raises(EncodeError):
            await client.call("echo", {1, 2})
        assert await client.call("ping") == "pong"


async def test_oversized_result_is_an_error_not_a_dead_connection(
    make_server: ServerFactory,
) -> None:
    async def big() -> bytes:
        return b"x" * (TEST_LIMITS.max_frame_bytes + 10)

    server = await make_server({"big": big})
    async with await connect(server) as client:
        with pytest.raises(RemoteError) as err:
            await client.call("big")
        assert err.value.code == "too_large"
        assert await client.call("ping") == "pong"


async def test_concurrent_calls_are_multiplexed_out_of_order(make_server: ServerFactory) -> None:
    async def delayed(i: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return i

    server = await make_server({"delayed": delayed})
    async with await connect(server) as client:
        delays = [0.05 * ((7 * i) % 5) for i in range(40)]
        results = await asyncio.gather(
            *(client.call("delayed", i, d) for i, d in enumerate(delays))
        )
        assert results == list(range(40))
    assert server.stats["connections_opened"] == 1


async def test_timeout_then_connection_still_usable(make_server: ServerFactory) -> None:
    release = asyncio.Event()

    async def hang() -> str:
        await release.wait()
        return "late"

    server = await make_server({"hang": hang})
    async with await connect(server) as client:
        with pytest.raises(RpcTimeout) as err:
            await client.call("hang", timeout=0.1)
        assert isinstance(err.value, TimeoutError)
        assert await client.call("ping", timeout=5.0) == "pong"
        release.set()
        for _ in range(500):
            if client.late_responses:
                break
            await asyncio.sleep(0.01)
        assert client.late_responses == 1
        assert client.in_flight == 0
        with pytest.raises(ValueError):
            await client.call("ping", timeout=0)


async def test_mixed_timeouts_expire_in_order(make_server: ServerFactory) -> None:
    async def sleep(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    server = await make_server({"sleep": sleep})
    async with await connect(server) as client:
        slow = asyncio.create_task(client.call("sleep", 5.0, timeout=1.5))
        fast = asyncio.create_task(client.call("sleep", 5.0, timeout=0.1))
        ok = asyncio.create_task(client.call("sleep", 0.05, timeout=2.0))
        assert await ok == 0.05
        with pytest.raises(RpcTimeout):
            await fast
        assert not slow.done()
        with pytest.raises(RpcTimeout):
            await slow


async def test_caller_cancellation_frees_the_slot(make_server: ServerFactory) -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    server = await make_server({"hang": hang})
    async with await connect(server) as client:
        task = asyncio.create_task(client.call("hang"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.in_flight == 0
        assert await client.call("ping") == "pong"


async def test_handler_cancelling_itself_answers_cancelled(make_server: ServerFactory) -> None:
    async def gives_up() -> None:
        raise asyncio.CancelledError

    server = await make_server({"gives_up": gives_up})
    async with await connect(server) as client:
        with pytest.raises(RemoteError) as err:
            await client.call("gives_up")
        assert err.value.code == "cancelled"


async def test_in_flight_bound_and_backlog(make_server: ServerFactory) -> None:
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def slow(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return i

    server = await make_server({"slow": slow})
    # A client allowing more in flight than the server: the server queues, then refuses.
    loose = TEST_LIMITS.with_(max_in_flight=100)
    async with await RpcClient.connect("127.0.0.1", server.port, limits=loose) as client:
        n = TEST_LIMITS.max_in_flight + TEST_LIMITS.max_backlog + 5
        tasks = [asyncio.create_task(client.call("slow", i)) for i in range(n)]
        for _ in range(500):
            if running == TEST_LIMITS.max_in_flight:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # give any excess a chance to (wrongly) start
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    # The server ran at most max_in_flight at once; the rest waited in the backlog or in
    # the socket (reading paused), and only requests beyond the backlog within one read
    # would be refused.
    busy = [r for r in results if isinstance(r, RemoteError) and r.code == "busy"]
    done = [r for r in results if isinstance(r, int)]
    assert peak == TEST_LIMITS.max_in_flight
    assert len(busy) + len(done) == n
    assert done == [i for i in range(n) if i in set(done)]
    assert server.stats["busy_rejections"] == len(busy)


async def test_client_side_in_flight_bound_waits(make_server: ServerFactory) -> None:
    running = 0
    peak = 0

    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    server = await make_server({"slow": slow})
    tight = TEST_LIMITS.with_(max_in_flight=3)
    async with await RpcClient.connect("127.0.0.1", server.port, limits=tight) as client:
        await asyncio.gather(*(client.call("slow") for _ in range(20)))
    assert peak == 3
    assert server.stats["busy_rejections"] == 0


async def test_notifications(make_server: ServerFactory) -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def note(x: Any) -> None:
        await got.put(x)

    server = await make_server({"note": note})
    async with await connect(server) as client:
        await client.notify("note", 42)
        assert await asyncio.wait_for(got.get(), 5) == 42
        await client.notify("missing", 1)  # reported as rpc.error, connection stays
        assert await client.call("ping") == "pong"
    assert server.stats["notifications"] == 2
    assert server.stats["unknown_methods"] == 1


def hanging_handler() -> tuple[asyncio.Event, asyncio.Event, Callable[[], Awaitable[None]]]:
    """A handler that never returns: (started, cancelled, handler)."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return started, cancelled, hang


async def test_server_drop_mid_call_raises_connection_lost(make_server: ServerFactory) -> None:
    started, cancelled, hang = hanging_handler()
    server = await make_server({"hang": hang})
    client = await connect(server)
    task = asyncio.create_task(client.call("hang"))
    await started.wait()
    await server.close()
    with pytest.raises(ConnectionLost) as err:
        await task
    assert "shutting_down" in str(err.value)
    assert cancelled.is_set()
    assert client.closed
    with pytest.raises(ConnectionLost):
        await client.call("ping")
    await client.close()


async def test_client_drop_mid_call_cancels_the_handler(make_server: ServerFactory) -> None:
    started, cancelled, hang = hanging_handler()
    server = await make_server({"hang": hang})
    client = await connect(server)
    task = asyncio.create_task(client.call("hang"))
    await started.wait()
    await client.close()
    with pytest.raises(ConnectionLost):
        await task
    await asyncio.wait_for(cancelled.wait(), 5)
    assert server.stats["dropped_mid_call"] == 1
    async with await connect(server) as again:
        assert await again.call("ping") == "pong"


async def test_version_mismatch_server_side(make_server: ServerFactory) -> None:
    server = await make_server()
    async with await connect(server) as client:
        with pytest.raises(RemoteError) as err:
            await client.call("hello", PROTOCOL_VERSION + 1)
        assert err.value.code == "version_mismatch"
        assert await client.call("ping") == "pong"
    assert server.stats["version_mismatches"] == 1


async def _fake_server(answer: Any) -> asyncio.Server:
    """A msgpack-RPC server that answers every request with ``answer`` (a result or error)."""
    import msgpack

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        while data := await reader.read(65536):
            unpacker.feed(data)
            for msg in unpacker:
                error, result = answer(msg)
                writer.write(msgpack.packb([1, msg[1], error, result]))
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "answer",
    [
        lambda m: (None, {"protocol": PROTOCOL_VERSION + 1}),
        lambda m: ({"code": "version_mismatch", "message": "speaks 9"}, None),
        lambda m: ("no such method", None),
        lambda m: ({"code": "unknown_method", "message": "hello?"}, None),
    ],
)
async def test_version_mismatch_client_side(answer: Any) -> None:
    fake = await _fake_server(answer)
    port = fake.sockets[0].getsockname()[1]
    try:
        with pytest.raises((VersionMismatch, RemoteError)) as err:
            await RpcClient.connect("127.0.0.1", port, timeout=5)
        if isinstance(err.value, RemoteError):
            assert err.value.code == "remote_error"
    finally:
        fake.close()
        await fake.wait_closed()


async def test_plain_server_without_handshake() -> None:
    fake = await _fake_server(lambda m: (None, m[3]))
    port = fake.sockets[0].getsockname()[1]
    try:
        client = await RpcClient.connect("127.0.0.1", port, handshake=False)
        assert await client.call("anything", 1, "two") == [1, "two"]
        await client.close()
    finally:
        fake.close()
        await fake.wait_closed()


async def test_connect_refused_is_connection_lost() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionLost):
        await RpcClient.connect("127.0.0.1", port, timeout=2)


def test_uvloop_round_trip() -> None:
    uvloop = pytest.importorskip("uvloop")
    from peer.rpc import RpcServer

    async def main() -> list[Any]:
        server = RpcServer(handlers={"add": lambda a, b: a + b}, limits=TEST_LIMITS)
        await server.start("127.0.0.1", 0)
        try:
            async with await connect(server) as client:
                return await asyncio.gather(*(client.call("add", i, i) for i in range(50)))
        finally:
            await server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [2 * i for i in range(50)]


async def _scripted_server(reply: bytes | None) -> asyncio.Server:
    """Reads one request, then writes ``reply`` (raw bytes) or nothing, and keeps the socket."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        if reply is not None:
            writer.write(reply)
            await writer.drain()
        await reader.read()  # hold the connection until the client goes
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"\xc1\xc1", "unusable data"),
        (b"\x93\x07\x01\x02", "invalid message"),
    ],
)
async def test_client_survives_a_hostile_server(reply: bytes, match: str) -> None:
    server = await _scripted_server(reply)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await RpcClient.connect("127.0.0.1", port, handshake=False)
        with pytest.raises(ConnectionLost, match=match):
            await client.call("ping", timeout=5)
        assert client.closed
        await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_silent_server_times_out_the_handshake() -> None:
    server = await _scripted_server(None)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RpcTimeout, match="handshake"):
            await RpcClient.connect("127.0.0.1", port, timeout=0.2)
    finally:
        server.close()
        await server.wait_closed()


async def test_unknown_msgid_responses_are_ignored() -> None:
    import msgpack

    server = await _scripted_server(msgpack.packb([1, 999, None, "stray"]))
    port = server.sockets[0].getsockname()[1]
    try:
        client = await RpcClient.connect("127.0.0.1", port, handshake=False)
        with pytest.raises(RpcTimeout):
            await client.call("ping", timeout=0.2)
        assert client.late_responses == 1
        await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_msgids_wrap_around_and_skip_ids_in_use(make_server: ServerFactory) -> None:
    from peer.rpc.framer import MAX_MSGID

    gate = asyncio.Event()

    async def wait(i: int) -> int:
        await gate.wait()
        return i

    server = await make_server({"wait": wait})
    async with await connect(server) as client:
        client._msgid = MAX_MSGID - 2
        first = [asyncio.create_task(client.call("wait", i)) for i in range(4)]
        await asyncio.sleep(0.05)
        # ids MAX-1, MAX, 0, 1 are in flight; force the counter back onto them
        client._msgid = MAX_MSGID - 2
        second = asyncio.create_task(client.call("wait", 99))
        await asyncio.sleep(0.05)
        assert client._msgid == 2
        gate.set()
        assert await asyncio.gather(*first) == [0, 1, 2, 3]
        assert await second == 99


async def test_socket_options(make_server: ServerFactory) -> None:
    import socket

    server = await make_server()
    async with await connect(server) as client:
        transport = client._proto.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == round(
                TEST_LIMITS.keepalive_idle or 0
            )


async def test_in_flight_bytes_bound(make_server: ServerFactory) -> None:
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def hold(blob: bytes) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return len(blob)

    limits = TEST_LIMITS.with_(max_in_flight_bytes=25_000)
    server = await make_server({"hold": hold}, limits=limits)
    async with await connect(server) as client:
        tasks = [asyncio.create_task(client.call("hold", b"x" * 10_000)) for _ in range(6)]
        for _ in range(500):
            if running == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert running == 2
        gate.set()
        assert await asyncio.gather(*tasks) == [10_000] * 6
        # a single request larger than the bound still runs on its own
        assert await client.call("hold", b"y" * 40_000) == 40_000
    assert peak == 2
