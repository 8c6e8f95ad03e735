"""The transport seam: how a driver moves datagrams, and an in-memory network behind it.

A datagram transport is bound to one address and calls `on_datagram(data, src_addr)` for each
datagram that arrives; `send` never blocks and never raises for an unreachable peer (datagrams
are unreliable by contract), but raises TransportError for a datagram over the size limit or
after `close`. Three implementations pass one conformance suite (tests/gossip): the real UDP
socket (`gossip.udp`), the asyncio in-memory network here, and the simulator's network
(`gossip.sim`). Push-pull streams are a separate seam: an async dialer
`(addr, payload) -> reply` plus a server that calls `GossipNode.handle_push_pull`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from gossip.errors import PushPullError, TransportError
from gossip.view import Addr

OnDatagram = Callable[[bytes, Addr], None]
Dialer = Callable[[Addr, bytes], Awaitable[bytes]]

MAX_DATAGRAM = 65507


class DatagramTransport(Protocol):
    @property
    def address(self) -> Addr: ...

    def send(self, addr: Addr, data: bytes) -> None: ...

    def close(self) -> None: ...


def check_datagram(data: bytes, closed: bool) -> None:
    if closed:
        raise TransportError("transport is closed")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TransportError("datagram must be bytes")
    if len(data) > MAX_DATAGRAM:
        raise TransportError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")


class MemoryNetwork:
    """An asyncio in-memory network: datagrams delivered on the next loop iteration.

    It also serves push-pull streams between nodes bound on it (`dialer`).
    """

    def __init__(self) -> None:
        self._endpoints: dict[Addr, MemoryTransport] = {}
        self._stream_handlers: dict[Addr, Callable[[bytes], Awaitable[bytes]]] = {}
        self._next_port = 40000

    def bind(self, addr: Addr, on_datagram: OnDatagram) -> MemoryTransport:
        host, port = addr
        if port == 0:
            while (host, self._next_port) in self._endpoints:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        if (host, port) in self._endpoints:
            raise TransportError(f"address {(host, port)} already in use")
        t = MemoryTransport(self, (host, port), on_datagram)
        self._endpoints[(host, port)] = t
        return t

    def _deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        t = self._endpoints.get(dst)
        if t is not None and not t.closed:
            t.on_datagram(data, src)

    def _unbind(self, addr: Addr) -> None:
        self._endpoints.pop(addr, None)
        self._stream_handlers.pop(addr, None)

    def serve_streams(self, addr: Addr, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        self._stream_handlers[addr] = handler

    async def dialer(self, addr: Addr, payload: bytes) -> bytes:
        await asyncio.sleep(0)
        handler = self._stream_handlers.get(addr)
        if handler is None:
            raise PushPullError(f"connection refused by {addr}")
        return await handler(bytes(payload))


class MemoryTransport:
    def __init__(self, net: MemoryNetwork, addr: Addr, on_datagram: OnDatagram) -> None:
        self._net = net
        self._addr = addr
        self.on_datagram = on_datagram
        self.closed = False

    @property
    def address(self) -> Addr:
        return self._addr

    def send(self, addr: Addr, data: bytes) -> None:
        check_datagram(data, self.closed)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._net._deliver, self._addr, addr, bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._net._unbind(self._addr)
