"""Real sockets: the UDP datagram transport and the length-prefixed TCP push-pull stream."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable

from gossip.errors import PushPullError, TransportError
from gossip.transport import OnDatagram, check_datagram
from gossip.view import Addr

_LEN = struct.Struct(">I")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: OnDatagram) -> None:
        self.on_datagram = on_datagram
        self.errors = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.errors += 1  # ICMP port unreachable and the like: datagrams are unreliable


def sendable(addr: object) -> bool:
    """Whether ``addr`` is a (host, port) that ``sendto`` takes without raising a TypeError or
    ValueError (which asyncio's transport answers by closing itself): an IP literal and a port
    0..65535. Peers advertise IP addresses; a name is refused, not looked up."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        return False
    host, port = addr
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        return False
    try:
        ipaddress.ip_address(host)  # a literal: a name would need a (blocking) DNS lookup
    except ValueError:
        return False
    return 0 <= port <= 65535


class UdpTransport:
    """A bound UDP socket (SO_REUSEADDR off; port 0 picks a free port)."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _Protocol, addr: Addr) -> None:
        self._transport = transport
        self._proto = proto
        self._addr = addr
        self.closed = False

    @classmethod
    async def bind(cls, addr: Addr, on_datagram: OnDatagram) -> UdpTransport:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            sock.bind(addr)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind UDP {addr}: {exc}") from exc
        proto = _Protocol(on_datagram)
        transport, _ = await loop.create_datagram_endpoint(lambda: proto, sock=sock)
        host, port = sock.getsockname()[:2]
        return cls(transport, proto, (host, port))

    @property
    def address(self) -> Addr:
        return self._addr

    @property
    def errors(self) -> int:
        return self._proto.errors

    def send(self, addr: Addr, data: bytes) -> None:
        check_datagram(data, self.closed)
        if not sendable(addr):
            # a peer may announce any address; one no socket can take (a NUL byte in the host,
            # a port out of range) must not reach sendto, whose non-OSError failures close the
            # whole transport: the datagram is lost and counted, the driver goes on
            self._proto.errors += 1
            return
        try:
            self._transport.sendto(data, addr)
        except (OSError, ValueError):  # uvloop refuses some addresses with ValueError
            self._proto.errors += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._transport.close()


async def _read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    head = await reader.readexactly(_LEN.size)
    (n,) = _LEN.unpack(head)
    if n > max_bytes:
        raise PushPullError(f"frame of {n} bytes exceeds {max_bytes}")
    return await reader.readexactly(n)


async def tcp_dial(addr: Addr, payload: bytes, max_bytes: int, timeout_s: float) -> bytes:
    """Send one push-pull frame over a fresh TCP connection and read the reply frame."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(addr[0], addr[1])
            writer.write(_LEN.pack(len(payload)) + payload)
            await writer.drain()
            return await _read_frame(reader, max_bytes)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise PushPullError(f"push-pull with {addr} failed: {type(exc).__name__}") from None
    finally:
        if writer is not None:
            writer.close()


class TcpPushPullServer:
    """Serves push-pull frames: one request frame, one reply frame per connection."""

    def __init__(
        self,
        handler: Callable[[bytes], Awaitable[bytes]],
        max_bytes: int,
        timeout_s: float,
        max_connections: int = 32,
    ) -> None:
        self._handler = handler
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._server: asyncio.Server | None = None
        self.errors = 0

    async def start(self, addr: Addr) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, addr[0], addr[1], reuse_address=False
            )
        except OSError as exc:
            raise TransportError(f"cannot bind TCP {addr}: {exc}") from exc

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._slots.locked():
                self.errors += 1
                return
            async with self._slots, asyncio.timeout(self._timeout_s):
                request = await _read_frame(reader, self._max_bytes)
                reply = await self._handler(request)
                writer.write(_LEN.pack(len(reply)) + reply)
                await writer.drain()
        except Exception:
            self.errors += 1  # a bad or slow client costs its own connection, nothing more
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
