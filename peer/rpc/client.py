"""``RpcClient``: one persistent, multiplexed connection to one server.

Many calls may be in flight at once (at most ``limits.max_in_flight``; further calls wait for
a slot); responses are matched by msgid. ``connect`` checks the protocol version with ``hello``
and, with a secret, runs the HMAC challenge through ``auth.challenge``/``auth.prove``, after
which every frame both ways carries a tag (``peer.rpc.auth``). ``tls`` connects over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from types import EllipsisType
from typing import Any

from peer.rpc import auth
from peer.rpc.connection import ERROR_NOTIFICATION, FrameProtocol
from peer.rpc.errors import (
    AuthError,
    ConnectionLost,
    FrameError,
    RemoteError,
    RpcError,
    RpcTimeout,
    VersionMismatch,
)
from peer.rpc.framer import (
    MAX_MSGID,
    PROTOCOL_VERSION,
    Invalid,
    Message,
    Notification,
    Request,
    Response,
)
from peer.rpc.limits import Limits
from peer.rpc.tls import TlsOption, client_context

log = logging.getLogger(__name__)

# (response, frame size in bytes, frame span) as delivered to a waiting call
_Delivery = tuple[Response, int, tuple[int, float] | None]


class CallInfo:
    """What one call moved: request and response frame sizes and the response's read span."""

    __slots__ = ("request_bytes", "response_bytes", "response_span", "seconds")

    def __init__(
        self,
        request_bytes: int,
        response_bytes: int,
        response_span: tuple[int, float] | None,
        seconds: float,
    ) -> None:
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes
        self.response_span = response_span
        self.seconds = seconds


class _ClientProtocol(FrameProtocol):
    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.pending: dict[int, asyncio.Future[_Delivery]] = {}
        self.failure: RpcError | None = None
        self.remote_error: RemoteError | None = None
        self.late_responses = 0
        # during auth.prove: (the server proof we expect, c2s key, s2c key)
        self.expect_prove: tuple[bytes, bytes, bytes] | None = None

    def message_received(self, msg: Message) -> None:
        if type(msg) is Response:
            if self.expect_prove is not None:  # the answer to auth.prove (the only call)
                expected, c2s, s2c = self.expect_prove
                self.expect_prove = None
                self.framer.barrier = None
                if msg.error is None and auth.verify(expected, msg.result):
                    self.seal(s2c, c2s)  # frames after this one are sealed, both ways
            fut = self.pending.get(msg.msgid)
            if fut is None or fut.done():
                self.late_responses += 1
                return
            fut.set_result((msg, self.frame_size, self.frame_span))
        elif type(msg) is Request:
            # This side serves no methods.
            self.write(
                self.encoder.response(
                    msg.msgid,
                    {"code": "unknown_method", "message": "this side serves no methods"},
                    None,
                )
            )
        elif type(msg) is Notification and msg.method == ERROR_NOTIFICATION:
            self.remote_error = RemoteError.from_wire(msg.params[0] if msg.params else None)
            log.warning("peer %s reported %s", self.peername, self.remote_error)

    def invalid_received(self, item: Invalid) -> None:
        self.failure = ConnectionLost(f"peer sent an invalid message: {item.error.message}")
        self.close_with(item.error)

    def frame_failed(self, error: FrameError) -> None:
        self.failure = ConnectionLost(f"unusable data from peer: {error}")
        self.close_with(error)

    def lost(self, exc: Exception | None) -> None:
        if self.failure is None:
            why = f" (peer reported {self.remote_error})" if self.remote_error is not None else ""
            if exc is not None and not why:
                why = f" ({type(exc).__name__}: {exc})"
            self.failure = ConnectionLost(f"connection to {self.peername} closed{why}")
        message = self.failure.message
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(message))


class _Deadlines:
    """Per-call timeouts with one loop timer per connection instead of one per call.

    The timer is armed for the earliest deadline; when it fires it expires what is due and
    re-arms for the next. A call that finishes early leaves the timer as is (it finds nothing
    due and re-arms), so steady traffic costs a dict insert and delete per call.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[int, tuple[float, asyncio.Future[_Delivery], str, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(
        self, msgid: int, now: float, timeout: float, fut: asyncio.Future[_Delivery], method: str
    ) -> None:
        at = now + timeout
        self._due[msgid] = (at, fut, method, timeout)
        if self._timer is None or at < self._timer_at:
            self._arm(at)

    def discard(self, msgid: int) -> None:
        self._due.pop(msgid, None)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._fire)
        self._timer_at = at

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time() + 0.001  # timers may fire up to a clock tick early
        due = self._due
        expired = [msgid for msgid, entry in due.items() if entry[0] <= now]
        for msgid in expired:
            _, fut, method, timeout = due.pop(msgid)
            if not fut.done():
                fut.set_exception(RpcTimeout(f"{method} got no answer within {timeout}s"))
        if due:
            self._arm(min(entry[0] for entry in due.values()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


class RpcClient:
    """A connection to one ``RpcServer`` (or any msgpack-RPC server)."""

    def __init__(self, protocol: _ClientProtocol, address: tuple[str, int]) -> None:
        self._proto = protocol
        self.last_active = protocol.loop.time()  # when the last call ended
        self.address = address
        self.limits = protocol.limits
        self._max_in_flight = protocol.limits.max_in_flight
        self._active = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._deadlines = _Deadlines(protocol.loop)
        self._msgid = 0
        self.server_hello: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        secret: bytes | str | None = None,
        timeout: float | None = 5.0,
        limits: Limits | None = None,
        handshake: bool = True,
        tls: TlsOption = None,
        server_hostname: str | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> RpcClient:
        """Connect, check the version and authenticate, all within ``timeout`` seconds.

        ``handshake=False`` skips ``hello`` and auth (for plain msgpack-RPC servers).
        ``tls``: an ``ssl.SSLContext`` or ``TlsFiles``; ``server_hostname`` is the name checked
        against the server's certificate (default ``host``). ``local_addr``: the (host, port)
        to connect from.
        """
        key = auth.normalize_secret(secret)
        limits = limits if limits is not None else Limits()
        ctx = client_context(tls)
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if ctx is not None:
            extra = {"ssl": ctx, "server_hostname": server_hostname or host}
        if local_addr is not None:
            extra["local_addr"] = local_addr
        try:
            async with asyncio.timeout(timeout):
                _, proto = await loop.create_connection(
                    lambda: _ClientProtocol(limits), host, port, **extra
                )
        except TimeoutError:
            raise ConnectionLost(
                f"connecting to {host}:{port} timed out after {timeout}s"
            ) from None
        except OSError as exc:  # ssl.SSLError included (certificate not trusted, ...)
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from exc
        client = cls(proto, (host, port))
        if handshake:
            try:
                async with asyncio.timeout(timeout):
                    await client._handshake(key)
            except TimeoutError:
                await client.close()
                raise RpcTimeout(
                    f"handshake with {host}:{port} timed out after {timeout}s"
                ) from None
            except BaseException:
                await client.close()
                raise
        return client

    async def _handshake(self, secret: bytes | None) -> None:
        try:
            hello = await self.call("hello", PROTOCOL_VERSION, timeout=None)
        except RemoteError as exc:
            if exc.code == "version_mismatch":
                raise VersionMismatch(exc.message) from None
            if exc.code == "unknown_method":
                raise VersionMismatch("the server has no hello method (not amcoedge)") from None
            raise
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_VERSION:
            raise VersionMismatch(f"server answered hello with {hello!r}")
        self.server_hello = hello
        if hello.get("auth_required") is True and secret is None:
            raise AuthError("the server requires the cluster secret and none is configured")
        if secret is None:
            return
        try:
            nonce = await self.call("auth.challenge", timeout=None)
        except RemoteError as exc:
            if exc.code == "auth_unavailable":
                raise AuthError("a secret is configured but the server has none") from None
            raise
        if not isinstance(nonce, bytes) or len(nonce) != auth.NONCE_BYTES:
            raise AuthError("server sent a malformed challenge")
        mine = auth.new_nonce()
        expected = auth.server_proof(secret, nonce, mine)
        proto = self._proto
        proto.expect_prove = (expected, *auth.session_keys(secret, nonce, mine))
        proto.framer.barrier = _is_response  # seal right after the answer, before what follows
        try:
            theirs = await self.call(
                "auth.prove", mine, auth.client_proof(secret, nonce, mine), timeout=None
            )
        except RemoteError as exc:
            raise AuthError(f"server rejected our proof: {exc.message}") from None
        if not auth.verify(expected, theirs) or proto.out_mac is None:
            raise AuthError("the server's proof does not match: it lacks the cluster secret")

    # -- calls ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return not self._proto.is_open

    @property
    def in_flight(self) -> int:
        return len(self._proto.pending)

    @property
    def late_responses(self) -> int:
        return self._proto.late_responses

    @property
    def sealed(self) -> bool:
        """Whether frames on this connection carry tags (authenticated with a secret)."""
        return self._proto.out_mac is not None

    @property
    def closed_idle(self) -> bool:
        """Whether the server closed this connection as idle: it then ran no request that
        arrived after its decision, so a call that failed with it can be sent again."""
        err = self._proto.remote_error
        return self.closed and err is not None and err.code == "idle_timeout"

    async def call(
        self, method: str, *params: Any, timeout: float | EllipsisType | None = ...
    ) -> Any:
        """Call ``method(*params)`` and return its result.

        Raises ``RemoteError`` for an error answer, ``RpcTimeout`` after ``timeout`` seconds
        (default ``limits.call_timeout``; None waits forever), ``ConnectionLost`` if the
        connection closes first, ``EncodeError`` if the params cannot be sent.
        """
        response = (await self._roundtrip(method, params, timeout))[0]
        if response.error is not None:
            raise RemoteError.from_wire(response.error)
        return response.result

    async def call_measured(
        self,
        method: str,
        params: list[Any] | tuple[Any, ...],
        timeout: float | EllipsisType | None = ...,
    ) -> tuple[Any, CallInfo]:
        """Like ``call`` with params as one sequence; also returns what the call moved."""
        response, sent, size, span, seconds = await self._roundtrip(method, params, timeout)
        if response.error is not None:
            raise RemoteError.from_wire(response.error)
        return response.result, CallInfo(sent, size, span, seconds)

    async def _roundtrip(
        self,
        method: str,
        params: list[Any] | tuple[Any, ...],
        timeout: float | EllipsisType | None,
    ) -> tuple[Response, int, int, tuple[int, float] | None, float]:
        proto = self._proto
        transport = proto.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost(proto.failure.message if proto.failure else "connection closed")
        limit = self.limits.call_timeout if timeout is ... else timeout
        if limit is not None and not limit > 0:
            raise ValueError(f"timeout must be positive or None, got {limit!r}")
        loop = proto.loop
        if self._active >= self._max_in_flight:
            await self._wait_for_slot()
        self._active += 1
        try:
            pending = proto.pending
            msgid = self._msgid + 1 if self._msgid < MAX_MSGID else 0
            if msgid in pending:
                msgid = self._next_msgid()
            self._msgid = msgid
            frame = proto.encoder.request(msgid, method, params)
            sent = len(frame)
            fut: asyncio.Future[_Delivery] = loop.create_future()
            pending[msgid] = fut
            started = loop.time()
            if limit is not None:
                self._deadlines.add(msgid, started, limit, fut, method)
            try:
                if transport.is_closing():
                    raise ConnectionLost(
                        proto.failure.message if proto.failure else "connection closed"
                    )
                proto.write(frame)
                del frame  # do not hold a large frame for the whole call
                if proto.write_paused:
                    await proto.drain()
                response, size, span = await fut
            finally:
                if limit is not None:
                    self._deadlines.discard(msgid)
                del pending[msgid]
        finally:
            self._active -= 1
            if self._slot_waiters:
                self._wake_one()
            self.last_active = now = loop.time()
        return response, sent, size, span, now - started

    async def _wait_for_slot(self) -> None:
        while self._active >= self._max_in_flight:
            fut: asyncio.Future[None] = self._proto.loop.create_future()
            self._slot_waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # pass the wake-up on
                else:
                    with contextlib.suppress(ValueError):
                        self._slot_waiters.remove(fut)
                raise

    def _wake_one(self) -> None:
        while self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def notify(self, method: str, *params: Any) -> None:
        """Send a notification (no answer; the server reports faults as ``rpc.error``)."""
        proto = self._proto
        proto.write(proto.encoder.notification(method, params))
        await proto.drain()

    def _next_msgid(self) -> int:
        pending = self._proto.pending
        msgid = self._msgid
        while True:
            msgid = msgid + 1 if msgid < MAX_MSGID else 0
            if msgid not in pending:
                self._msgid = msgid
                return msgid

    async def close(self) -> None:
        proto = self._proto
        if proto.failure is None:
            proto.failure = ConnectionLost("client closed")
        if proto.transport is not None:
            proto.transport.close()
        await proto.wait_closed()
        self._deadlines.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _is_response(item: object) -> bool:
    return type(item) is Response
