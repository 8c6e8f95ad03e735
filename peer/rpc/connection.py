"""The asyncio shell shared by both ends of a connection.

An ``asyncio.BufferedProtocol`` that reads into one reusable buffer and feeds it straight into
the pure ``Framer`` (no ``StreamReader``, no bytes object per read), hands complete messages to
``message_received``, writes each frame with one ``transport.write`` and exposes write
backpressure as ``drain()``. It also watches frames that span several reads: their
first-to-last-byte time bounds slow senders (``frame_timeout``) and, for large frames,
measures the peer's sending rate (``frame_span``).

Once a connection is sealed (``seal``, after authentication) every frame written is followed
by its tag (``peer.rpc.auth``): small frames in the same write, large ones in a second write so
that the frame is on its way while its tag is computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections import deque
from typing import Any, cast

from peer.rpc.auth import FrameMac
from peer.rpc.errors import ConnectionLost, FrameError, RpcError
from peer.rpc.framer import Encoder, Framer, Invalid, Message
from peer.rpc.limits import Limits

log = logging.getLogger(__name__)

ERROR_NOTIFICATION = "rpc.error"
# Sealed frames below this size are written together with their tag (one copy, one write).
JOIN_TAG_BELOW = 64 * 1024


def set_socket_buffers(sock: socket.socket, size: int | None) -> None:
    """Ask for kernel send/receive buffers of ``size`` bytes (capped by the OS)."""
    if size is None:
        return
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, size)


def set_keepalive(sock: socket.socket, idle: float | None) -> None:
    """Turn on TCP keepalive: first probe after ``idle`` s, then 3 probes ``idle / 3`` apart."""
    if idle is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, round(idle)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, round(idle / 3)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


READ_BUFFER_BYTES = 256 * 1024
_thread_state = threading.local()


def _read_buffer() -> memoryview:
    """One read buffer per thread, shared by all its connections: a transport fills it and
    hands it to ``buffer_updated`` synchronously, which copies it into the framer at once."""
    buf: memoryview | None = getattr(_thread_state, "buffer", None)
    if buf is None:
        buf = _thread_state.buffer = memoryview(bytearray(READ_BUFFER_BYTES))
    return buf


class FrameProtocol(asyncio.BufferedProtocol):
    """Framing, backpressure and frame timing; subclasses handle messages.

    Reads land in a reusable per-thread buffer (``BufferedProtocol``) and are copied once,
    into the framer's unpacker; no bytes object is allocated per read.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.framer = Framer(limits)
        self.encoder = Encoder(limits)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None
        self.write_paused = False
        self._drain_waiters: deque[asyncio.Future[None]] = deque()
        self._partial_since: float | None = None
        self._partial_bytes = 0
        self._frame_timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._read_buffer = _read_buffer()
        # For the message being handled: (bytes after the first read, seconds) when its frame
        # spanned several reads, else None.
        self.frame_span: tuple[int, float] | None = None
        self.frame_size = 0  # size of the frame of the message being handled
        self.out_mac: FrameMac | None = None  # set once frames we send are sealed

    # -- subclass hooks -------------------------------------------------------------------
    def message_received(self, msg: Message) -> None:
        raise NotImplementedError

    def invalid_received(self, item: Invalid) -> None:
        raise NotImplementedError

    def frame_failed(self, error: FrameError) -> None:
        """The byte stream is broken (undecodable, oversized or too slow)."""
        self.close_with(error)

    def lost(self, exc: Exception | None) -> None:
        """Called once when the connection is gone."""

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.peername = self.transport.get_extra_info("peername")
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_socket_buffers(sock, self.limits.socket_buffer_bytes)
            set_keepalive(sock, self.limits.keepalive_idle)
        self.transport.set_write_buffer_limits(high=self.limits.write_high_water)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        framer = self.framer
        try:
            items = framer.feed(data)
        except FrameError as exc:
            self.frame_failed(exc)
            return
        transport = self.transport
        while True:
            for item, size in zip(items, framer.frame_sizes):  # noqa: B905 (same length)
                self.frame_size = size
                if self._partial_since is not None:
                    self.frame_span = (
                        size - self._partial_bytes,
                        self.loop.time() - self._partial_since,
                    )
                    self._partial_since = None
                    if self._frame_timer is not None:
                        self._frame_timer.cancel()
                        self._frame_timer = None
                else:
                    self.frame_span = None
                if type(item) is Invalid:
                    self.invalid_received(item)
                else:
                    self.message_received(item)  # type: ignore[arg-type]
                if transport is None or transport.is_closing():
                    return
            if not framer.held:
                break
            try:
                items = framer.resume()  # a barrier item was handled: decode the rest
            except FrameError as exc:
                self.frame_failed(exc)
                return
        if framer.broken is not None:
            self.frame_failed(framer.broken)
            return
        if self._partial_since is None and framer.pending_bytes:
            self._partial_since = self.loop.time()
            self._partial_bytes = framer.pending_bytes
            if self.limits.frame_timeout is not None:
                self._frame_timer = self.loop.call_later(
                    self.limits.frame_timeout, self._frame_timed_out
                )

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        while self._drain_waiters:
            fut = self._drain_waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        self.write_paused = False
        while self._drain_waiters:
            fut = self._drain_waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionLost("connection closed while writing"))
        try:
            self.lost(exc)
        finally:
            if not self.closed.done():
                self.closed.set_result(None)

    # -- writing --------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, frame: bytes) -> None:
        """Send one encoded frame (and its tag once sealed)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("connection is closed")
        mac = self.out_mac
        if mac is None:
            transport.write(frame)
        elif len(frame) < JOIN_TAG_BELOW:
            transport.write(frame + mac.tag(frame))
        else:
            transport.write(frame)
            transport.write(mac.tag(frame))

    def seal(self, receive_key: bytes, send_key: bytes) -> None:
        """Authenticate every frame from here on, both ways (see ``peer.rpc.auth``)."""
        self.framer.seal(receive_key)
        self.out_mac = FrameMac(send_key)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below the high-water mark."""
        if not self.is_open:
            raise ConnectionLost("connection is closed")
        if not self.write_paused:
            return
        fut = self.loop.create_future()
        self._drain_waiters.append(fut)
        await fut

    def send_error(self, error: RpcError) -> None:
        """Tell the peer about a fault outside any call, as an ``rpc.error`` notification."""
        if not self.is_open:
            return
        with contextlib.suppress(RpcError):
            self.write(self.encoder.notification(ERROR_NOTIFICATION, [error.to_wire()]))

    def close_with(self, error: RpcError) -> None:
        """Send ``rpc.error`` and close this connection (buffered data is flushed first)."""
        self.send_error(error)
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self, grace: float = 1.0) -> None:
        """Wait for the close to finish; abort if the peer does not take our data in time."""
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), grace)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
            await self.closed

    # -- internals ------------------------------------------------------------------------
    def _frame_timed_out(self) -> None:
        self._frame_timer = None
        log.warning(
            "closing %s: frame incomplete after %ss", self.peername, self.limits.frame_timeout
        )
        self.frame_failed(
            FrameError(
                f"frame incomplete after {self.limits.frame_timeout}s "
                f"({self.framer.pending_bytes} bytes received)",
                code="frame_timeout",
            )
        )
