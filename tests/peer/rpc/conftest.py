"""Fixtures for the RPC tests: servers on ephemeral loopback ports and a raw socket client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest

from peer.rpc import Limits, RpcServer

# Small bounds so the fault tests are quick; timeouts generous enough for a busy machine
# (the tests of those timeouts shorten them themselves).
TEST_LIMITS = Limits(
    max_frame_bytes=4 * 1024 * 1024,
    max_bin_len=4 * 1024 * 1024,
    max_str_len=64 * 1024,
    max_array_len=10_000,
    max_map_len=1_000,
    max_in_flight=8,
    max_backlog=16,
    frame_timeout=5.0,
    auth_timeout=5.0,
    max_connections=32,
    call_timeout=10.0,
)


async def echo(*args: Any) -> Any:
    return args[0] if len(args) == 1 else list(args)


async def add(a: int, b: int) -> int:
    return a + b


ServerFactory = Callable[..., Awaitable[RpcServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[RpcServer] = []

    async def factory(
        handlers: dict[str, Any] | None = None,
        *,
        limits: Limits = TEST_LIMITS,
        secret: bytes | str | None = None,
        info: Callable[[], dict[str, Any]] | None = None,
    ) -> RpcServer:
        base = {"echo": echo, "add": add}
        base.update(handlers or {})
        server = RpcServer(handlers=base, limits=limits, secret=secret, info=info)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.close()


class RawClient:
    """A third party's msgpack-RPC client: only ``msgpack`` and a socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.unpacker = msgpack.Unpacker(raw=False)

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_obj(self, obj: Any) -> None:
        await self.send(msgpack.packb(obj, use_bin_type=True))

    async def recv(self, timeout: float = 5.0) -> Any:
        """The next message, or None at EOF."""
        async with asyncio.timeout(timeout):
            while True:
                for obj in self.unpacker:
                    return obj
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.unpacker.feed(data)

    async def call(self, msgid: int, method: str, *params: Any) -> Any:
        await self.send_obj([0, msgid, method, list(params)])
        return await self.recv()

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Read until EOF; True if the server closed the connection within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw_clients() -> AsyncIterator[Callable[[int], Awaitable[RawClient]]]:
    clients: list[RawClient] = []

    async def open_client(port: int) -> RawClient:
        client = await RawClient.open(port)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()
