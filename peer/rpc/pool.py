"""``RpcPool``: one client per peer address, connected lazily and reconnected after a loss.

After a call whose response frame was large, the pool reports the peer's sending rate to
``on_transfer(addr, nbytes, seconds)``: ``nbytes`` are the bytes of that frame that arrived
after its first read and ``seconds`` the time from that first read to the last byte. This times
the wire, not the remote handler, so it suits bandwidth estimates (peer -> us direction).

Servers close connections idle for their ``limits.idle_timeout``. The pool retires a connection
of its own that has been idle for ``idle_timeout_s`` (default: half its ``limits.idle_timeout``)
before reusing it, and sends a call again, once, on a fresh connection when the server closed
the old one as idle (a server runs no request that arrives after that decision).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import EllipsisType
from typing import Any

from peer.rpc.client import CallInfo, RpcClient
from peer.rpc.errors import ConnectionLost
from peer.rpc.limits import Limits
from peer.rpc.tls import TlsOption, client_context

log = logging.getLogger(__name__)

Address = tuple[str, int]
TransferCallback = Callable[[Address, int, float], None]


class RpcPool:
    def __init__(
        self,
        secret: bytes | str | None = None,
        limits: Limits | None = None,
        on_transfer: TransferCallback | None = None,
        *,
        connect_timeout: float = 5.0,
        transfer_min_bytes: int = 64 * 1024,
        tls: TlsOption = None,
        server_hostname: str | None = None,
        idle_timeout_s: float | EllipsisType | None = ...,
    ) -> None:
        self.secret = secret
        self.limits = limits if limits is not None else Limits()
        self.tls = client_context(tls)
        self.server_hostname = server_hostname
        if idle_timeout_s is ...:
            idle = self.limits.idle_timeout
            idle_timeout_s = idle / 2 if idle is not None else None
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be positive or None, got {idle_timeout_s!r}")
        self.idle_timeout_s: float | None = idle_timeout_s
        self.on_transfer = on_transfer
        self.connect_timeout = connect_timeout
        self.transfer_min_bytes = transfer_min_bytes
        self._clients: dict[Address, RpcClient] = {}
        self._locks: dict[Address, asyncio.Lock] = {}
        self._closed = False

    async def client(self, addr: Address) -> RpcClient:
        """The open client for ``addr``, connecting (once, shared by concurrent callers)."""
        addr = (addr[0], int(addr[1]))
        client = self._clients.get(addr)
        if client is not None and not client.closed:
            if not self._stale(client):
                return client
            self._clients.pop(addr, None)
            await client.close()
        if self._closed:
            raise ConnectionLost("pool is closed")
        lock = self._locks.setdefault(addr, asyncio.Lock())
        async with lock:
            client = self._clients.get(addr)
            if client is not None and not client.closed and not self._stale(client):
                return client
            client = await RpcClient.connect(
                addr[0],
                addr[1],
                secret=self.secret,
                timeout=self.connect_timeout,
                limits=self.limits,
                tls=self.tls,
                server_hostname=self.server_hostname,
            )
            if self._closed:
                await client.close()
                raise ConnectionLost("pool is closed")
            self._clients[addr] = client
            return client

    async def call(
        self,
        addr: Address,
        method: str,
        *params: Any,
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        """Call ``method`` on the peer at ``addr`` (see ``RpcClient.call`` for errors)."""
        result, _ = await self.call_measured(addr, method, *params, timeout=timeout)
        return result

    async def call_measured(
        self,
        addr: Address,
        method: str,
        *params: Any,
        timeout: float | EllipsisType | None = ...,
    ) -> tuple[Any, CallInfo]:
        """``call``, and what it moved: request and response bytes, and its wall seconds."""
        client = await self.client(addr)
        try:
            result, info = await client.call_measured(method, params, timeout)
        except ConnectionLost:
            if not client.closed_idle:
                raise
            # closed as idle by the server before it read this call: send it once more
            client = await self.client(addr)
            result, info = await client.call_measured(method, params, timeout)
        span = info.response_span
        if self.on_transfer is not None and span is not None:
            nbytes, seconds = span
            if nbytes >= self.transfer_min_bytes and seconds > 0:
                try:
                    self.on_transfer(client.address, nbytes, seconds)
                except Exception:
                    log.exception("on_transfer callback failed")
        return result, info

    async def notify(self, addr: Address, method: str, *params: Any) -> None:
        client = await self.client(addr)
        await client.notify(method, *params)

    async def drop(self, addr: Address) -> None:
        """Close the connection to ``addr`` (the next call reconnects)."""
        client = self._clients.pop((addr[0], int(addr[1])), None)
        if client is not None:
            await client.close()

    def _stale(self, client: RpcClient) -> bool:
        """Idle long enough that the server may be about to close it."""
        idle = self.idle_timeout_s
        return (
            idle is not None
            and client.in_flight == 0
            and client._proto.loop.time() - client.last_active >= idle
        )

    @property
    def addresses(self) -> list[Address]:
        return [a for a, c in self._clients.items() if not c.closed]

    async def close(self) -> None:
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
