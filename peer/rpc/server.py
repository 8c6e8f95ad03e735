"""``RpcServer``: an explicit method registry served over msgpack-RPC.

Handlers are ``async def f(*params)``; plain functions work too and run inline on the event
loop (no task: the cheapest path, for quick work only). The return value must be msgpack-able.
A handler raising ``RpcError`` answers with that error's code; any other exception is logged
and answered as ``internal``; params that do not fit the signature get ``invalid_params``.
When a connection drops, the handlers still running for it are cancelled. Built-in methods:

- ``hello(version)``: version check; answers ``{"protocol", "auth_required", "implementation"}``;
- ``ping()`` answers ``"pong"``; ``ping(x)`` echoes ``x``;
- ``info()``: the protocol version, the method names and the runtime's ``info()`` dict;
- ``auth.challenge()`` / ``auth.prove(client_nonce, proof)``: see ``peer.rpc.auth``.

With a secret, only ``hello``, ``ping`` and the two ``auth.*`` methods answer until the
connection has proved it holds the secret (any other method, known or not, answers
``unauthorized``), and from then on every frame both ways carries a tag (``peer.rpc.auth``): a
frame whose tag fails closes the connection. ``tls`` (an ``ssl.SSLContext`` or ``TlsFiles``)
serves over TLS.

Connections are closed when their handshake is not done within ``limits.auth_timeout``, when
idle for ``limits.idle_timeout``, or when a frame stays incomplete for ``limits.frame_timeout``;
at most ``limits.max_connections`` are held, at most ``limits.max_connections_per_source``
from one address. Faults outside any call are sent as ``rpc.error`` notifications; faults that
break the stream close that connection only. Everything is counted in ``stats``; the counters
of closed or refused connections by cause are listed in ``DROP_KEYS``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import Any

from peer.rpc import auth
from peer.rpc.connection import FrameProtocol
from peer.rpc.errors import AuthError, EncodeError, FrameError, MessageError, RpcError
from peer.rpc.framer import PROTOCOL_VERSION, Invalid, Message, Notification, Request
from peer.rpc.limits import Limits
from peer.rpc.tls import TlsOption, server_context

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
BUILTIN_METHODS = frozenset({"hello", "ping", "info", "auth.challenge", "auth.prove"})
PRE_AUTH_METHODS = frozenset({"hello", "ping", "auth.challenge", "auth.prove"})
RESERVED_PREFIXES = ("rpc.", "auth.")

STAT_KEYS = (
    "connections_opened",
    "connections_closed",
    "connections_rejected",
    "calls",
    "calls_ok",
    "call_errors",
    "notifications",
    "unknown_methods",
    "invalid_params",
    "handler_errors",
    "unencodable_results",
    "bad_messages",
    "malformed_frames",
    "oversized_frames",
    "frame_timeouts",
    "busy_rejections",
    "unauthorized_calls",
    "auth_ok",
    "auth_failures",
    "auth_timeouts",
    "idle_timeouts",
    "mac_failures",
    "source_cap_rejections",
    "version_mismatches",
    "dropped_mid_call",
)
# Connections closed or refused, by cause (a subset of STAT_KEYS).
DROP_KEYS = (
    "connections_rejected",  # the server-wide cap (or closing)
    "source_cap_rejections",  # the per-source-address cap
    "auth_timeouts",  # handshake not done within auth_timeout
    "auth_failures",  # wrong proof
    "idle_timeouts",  # nothing for idle_timeout
    "frame_timeouts",  # a frame stayed incomplete for frame_timeout
    "oversized_frames",  # a frame or a declared length beyond the limits
    "malformed_frames",  # bytes that are not msgpack
    "mac_failures",  # a sealed frame whose tag did not verify
)


def _params_mismatch(fn: Handler, params: list[Any]) -> bool:
    """Whether a TypeError came from calling ``fn`` with the wrong params."""
    try:
        inspect.signature(fn).bind(*params)
    except TypeError:
        return True
    except ValueError:  # no signature available
        return False
    return False


class RpcServer:
    """Serves registered handlers on one TCP port; one connection per peer, multiplexed."""

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        limits: Limits | None = None,
        secret: bytes | str | None = None,
        info: Callable[[], Mapping[str, Any]] | None = None,
        tls: TlsOption = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.secret = auth.normalize_secret(secret)
        self.tls = server_context(tls)
        self._info = info
        self.handlers: dict[str, Handler] = {}
        for name, fn in (handlers or {}).items():
            self.add_handler(name, fn)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._per_source: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()  # notification handlers
        self._closing = False

    # -- registry -------------------------------------------------------------------------
    def add_handler(self, name: str, fn: Handler, *, replace: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"method name must be a non-empty string, got {name!r}")
        if name in BUILTIN_METHODS or name.startswith(RESERVED_PREFIXES):
            raise ValueError(f"method name {name!r} is reserved")
        if not callable(fn):
            raise TypeError(f"handler for {name!r} is not callable")
        if name in self.handlers and not replace:
            raise ValueError(f"method {name!r} is already registered")
        self.handlers[name] = fn

    def remove_handler(self, name: str) -> None:
        self.handlers.pop(name, None)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self),
            host,
            port,
            reuse_address=True,
            ssl=self.tls,
            ssl_handshake_timeout=self.limits.auth_timeout if self.tls is not None else None,
        )

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def close(self, grace: float = 1.0) -> None:
        """Stop accepting, tell connected peers, cancel running handlers, close connections."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._connections)
        for conn in conns:
            conn.close_with(RpcError("server is closing", code="shutting_down"))
        for conn in conns:
            await conn.wait_closed(grace)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RpcServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def info(self) -> dict[str, Any]:
        extra = dict(self._info()) if self._info is not None else {}
        extra.update(
            protocol=PROTOCOL_VERSION,
            implementation="amcoedge",
            auth_required=self.secret is not None,
            tls=self.tls is not None,
            methods=sorted(BUILTIN_METHODS | self.handlers.keys()),
        )
        return extra


class _ServerConnection(FrameProtocol):
    def __init__(self, server: RpcServer) -> None:
        super().__init__(server.limits)
        self.server = server
        self.stats = server.stats
        self.authed = server.secret is None
        self.source = ""
        self._nonce: bytes | None = None
        self._seal_keys: tuple[bytes, bytes] | None = None
        self._close_after_reply = False
        self._in_flight = 0
        self._in_flight_bytes = 0  # request frame bytes held by running handlers
        self._backlog: deque[tuple[int, str, Handler, list[Any], int]] = deque()
        self._reading_paused = False
        # running handlers: key -> (task, the handler's awaitable)
        self._tasks: dict[int, tuple[asyncio.Task[None], Any]] = {}
        self._task_seq = 0
        self._auth_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_active = self.loop.time()
        if not self.authed:
            self.framer.set_max_frame(server.limits.max_preauth_frame_bytes)
            self.framer.barrier = _is_prove
        self._builtins: dict[str, Handler] = {
            "hello": self._hello,
            "ping": self._ping,
            "info": self._info,
            "auth.challenge": self._challenge,
            "auth.prove": self._prove,
        }

    # -- connection events ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self.server
        limits = self.limits
        peer = self.peername
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        if server._closing or len(server._connections) >= limits.max_connections:
            self.stats["connections_rejected"] += 1
            self.close_with(RpcError("too many connections", code="busy"))
            return
        held = server._per_source.get(self.source, 0)
        if held >= limits.max_connections_per_source:
            self.stats["source_cap_rejections"] += 1
            self.close_with(
                RpcError(f"too many connections from {self.source} ({held})", code="busy")
            )
            return
        server._per_source[self.source] = held + 1
        server._connections.add(self)
        self.stats["connections_opened"] += 1
        if limits.auth_timeout is not None:
            self._auth_timer = self.loop.call_later(limits.auth_timeout, self._auth_timed_out)
        if limits.idle_timeout is not None:
            self._idle_timer = self.loop.call_later(limits.idle_timeout, self._idle_check)

    def lost(self, exc: Exception | None) -> None:
        if self not in self.server._connections:
            return
        self.server._connections.discard(self)
        per_source = self.server._per_source
        left = per_source.get(self.source, 1) - 1
        if left > 0:
            per_source[self.source] = left
        else:
            per_source.pop(self.source, None)
        self.stats["connections_closed"] += 1
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._backlog.clear()
        if self._tasks:
            self.stats["dropped_mid_call"] += len(self._tasks)
            for task, awaitable in self._tasks.values():
                task.cancel()
                if (
                    inspect.iscoroutine(awaitable)
                    and inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED
                ):
                    awaitable.close()  # never started: close it rather than leave it unawaited

    def frame_failed(self, error: FrameError) -> None:
        key = {
            "too_large": "oversized_frames",
            "frame_timeout": "frame_timeouts",
            "bad_mac": "mac_failures",
        }
        self.stats[key.get(error.code, "malformed_frames")] += 1
        log.info("closing %s: %s", self.peername, error)
        self.close_with(error)

    def invalid_received(self, item: Invalid) -> None:
        self._last_active = self.loop.time()
        self.stats["bad_messages"] += 1
        if item.msgid is not None:
            self._reply_error(item.msgid, item.error)
        else:
            self.send_error(item.error)

    def message_received(self, msg: Message) -> None:
        self._last_active = self.loop.time()
        if type(msg) is Request:
            self._request(msg)
            if self._seal_keys is not None:  # auth.prove succeeded and its answer is sent
                self.seal(*self._seal_keys)
                self._seal_keys = None
        elif type(msg) is Notification:
            self._notification(msg)
        else:
            self.stats["bad_messages"] += 1
            self.send_error(MessageError("unexpected response: this server sends no requests"))

    # -- calls ----------------------------------------------------------------------------
    def _lookup(self, method: str) -> Handler | None:
        fn = self._builtins.get(method)
        return fn if fn is not None else self.server.handlers.get(method)

    def _request(self, msg: Request) -> None:
        stats = self.stats
        stats["calls"] += 1
        method = msg.method
        if not self.authed and method not in PRE_AUTH_METHODS:
            stats["unauthorized_calls"] += 1
            self._reply_error(msg.msgid, _unauthorized(method))
            return
        if self._auth_timer is not None and self.authed:  # no secret: the first request
            self._auth_timer.cancel()
            self._auth_timer = None
        fn = self._builtins.get(method)
        if fn is None:
            fn = self.server.handlers.get(method)
        if fn is None:
            stats["unknown_methods"] += 1
            self._reply_error(msg.msgid, RpcError(f"no method {method!r}", code="unknown_method"))
            return
        size = self.frame_size
        if self._backlog or (self._in_flight and not self._has_room(size)):
            if len(self._backlog) >= self.limits.max_backlog:
                stats["busy_rejections"] += 1
                self._reply_error(msg.msgid, RpcError("too many queued calls", code="busy"))
                return
            self._backlog.append((msg.msgid, method, fn, msg.params, size))
            if not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        self._start(msg.msgid, method, fn, msg.params, size)

    def _has_room(self, size: int) -> bool:
        if self._in_flight == 0:
            return True  # one call always runs, whatever its size
        return (
            self._in_flight < self.limits.max_in_flight
            and self._in_flight_bytes + size <= self.limits.max_in_flight_bytes
        )

    def _start(self, msgid: int, method: str, fn: Handler, params: list[Any], size: int) -> None:
        try:
            res = fn(*params)
        except Exception as exc:
            self._reply_error(msgid, self._map_exception(method, fn, params, exc))
            return
        if type(res) is CoroutineType or inspect.isawaitable(res):
            self._in_flight += 1
            self._in_flight_bytes += size
            self._task_seq += 1
            key = self._task_seq
            task = self.loop.create_task(self._finish(key, msgid, method, res, size))
            self._tasks[key] = (task, res)
        else:
            self._reply(msgid, res)

    async def _finish(self, key: int, msgid: int, method: str, awaitable: Any, size: int) -> None:
        try:
            try:
                result = await awaitable
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # cancelled by us: connection lost or server closing
                self._reply_error(msgid, RpcError(f"{method} was cancelled", code="cancelled"))
            except Exception as exc:
                self._reply_error(msgid, self._map_exception(method, None, [], exc))
            else:
                self._reply(msgid, result)
            if self.write_paused and self.is_open:
                await self.drain()
        except RpcError:
            pass  # the connection went away while we waited to write
        finally:
            self._tasks.pop(key, None)
            self._in_flight -= 1
            self._in_flight_bytes -= size
            self._last_active = self.loop.time()
            if self._backlog or self._reading_paused:
                self._pump_backlog()

    def _pump_backlog(self) -> None:
        backlog = self._backlog
        while backlog and self.is_open and self._has_room(backlog[0][4]):
            self._start(*backlog.popleft())
        if not backlog and self._reading_paused and self.is_open and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _map_exception(
        self, method: str, fn: Handler | None, params: list[Any], exc: Exception
    ) -> RpcError:
        if isinstance(exc, RpcError):
            return exc
        if isinstance(exc, TypeError) and fn is not None and _params_mismatch(fn, params):
            self.stats["invalid_params"] += 1
            return RpcError(f"{method}: {exc}", code="invalid_params")
        self.stats["handler_errors"] += 1
        log.error("handler %r raised", method, exc_info=exc)
        return RpcError(f"{method} failed: {type(exc).__name__}: {exc}", code="internal")

    def _reply(self, msgid: int, result: Any) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            frame = self.encoder.response(msgid, None, result)
        except EncodeError as exc:
            self.stats["unencodable_results"] += 1
            code = "too_large" if exc.code == "too_large" else "internal"
            self._reply_error(msgid, RpcError(f"result cannot be sent: {exc.message}", code=code))
            return
        self.stats["calls_ok"] += 1
        self.write(frame)

    def _reply_error(self, msgid: int, error: RpcError) -> None:
        if not self.is_open:
            return
        self.stats["call_errors"] += 1
        try:
            frame = self.encoder.response(msgid, error.to_wire(), None)
        except EncodeError:
            frame = self.encoder.response(
                msgid, {"code": error.code, "message": "(unencodable message)"}, None
            )
        self.write(frame)
        if self._close_after_reply and self.transport is not None:
            self.transport.close()

    def _notification(self, msg: Notification) -> None:
        self.stats["notifications"] += 1
        if not self.authed:
            self.stats["unauthorized_calls"] += 1
            self.send_error(_unauthorized(msg.method))
            return
        fn = self._lookup(msg.method)
        if fn is None or msg.method in BUILTIN_METHODS:
            self.stats["unknown_methods"] += 1
            self.send_error(
                RpcError(f"no notification method {msg.method!r}", code="unknown_method")
            )
            return
        try:
            res = fn(*msg.params)
        except Exception as exc:
            self.send_error(self._map_exception(msg.method, fn, msg.params, exc))
            return
        if inspect.isawaitable(res):
            # Not tied to this connection: a notification runs to completion even if the
            # sender goes away (only closing the server cancels it).
            task = self.loop.create_task(self._finish_notification(msg.method, res))
            self.server._background.add(task)
            task.add_done_callback(self.server._background.discard)

    async def _finish_notification(self, method: str, awaitable: Any) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.send_error(self._map_exception(method, None, [], exc))

    # -- built-in methods -----------------------------------------------------------------
    def _hello(self, version: object) -> dict[str, Any]:
        if version != PROTOCOL_VERSION or type(version) is not int:
            self.stats["version_mismatches"] += 1
            raise RpcError(
                f"this server speaks protocol {PROTOCOL_VERSION}, the client {version!r}",
                code="version_mismatch",
            )
        return {
            "protocol": PROTOCOL_VERSION,
            "auth_required": self.server.secret is not None,
            "implementation": "amcoedge",
        }

    def _ping(self, *args: Any) -> Any:
        if len(args) > 1:
            raise RpcError("ping takes at most one argument", code="invalid_params")
        return args[0] if args else "pong"

    def _info(self) -> dict[str, Any]:
        return self.server.info()

    def _challenge(self) -> bytes:
        if self.server.secret is None:
            raise RpcError("this server has no secret", code="auth_unavailable")
        if self.authed:
            raise RpcError("this connection is already authenticated", code="bad_request")
        self._nonce = auth.new_nonce()
        return self._nonce

    def _prove(self, client_nonce: object, proof: object) -> bytes:
        secret = self.server.secret
        if secret is None:
            raise RpcError("this server has no secret", code="auth_unavailable")
        if self.authed:
            raise RpcError("this connection is already authenticated", code="bad_request")
        nonce, self._nonce = self._nonce, None
        if nonce is None:
            raise AuthError("call auth.challenge first")
        if not isinstance(client_nonce, bytes) or not 16 <= len(client_nonce) <= 64:
            self._fail_auth()
            raise AuthError("client nonce must be 16 to 64 bytes")
        if not auth.verify(auth.client_proof(secret, nonce, client_nonce), proof):
            self._fail_auth()
            raise AuthError("proof does not match the cluster secret")
        self.authed = True
        self.stats["auth_ok"] += 1
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.framer.barrier = None
        self.framer.set_max_frame(self.limits.max_frame_bytes)
        # sealed from the next frame on, both ways (message_received does it after the answer)
        self._seal_keys = auth.session_keys(secret, nonce, client_nonce)
        return auth.server_proof(secret, nonce, client_nonce)

    def _fail_auth(self) -> None:
        self.stats["auth_failures"] += 1
        log.warning("authentication failed from %s", self.peername)
        self._close_after_reply = True

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.is_open:
            self.stats["auth_timeouts"] += 1
            what = "not authenticated" if self.server.secret is not None else "no request"
            self.close_with(
                RpcError(f"{what} within {self.limits.auth_timeout}s", code="auth_timeout")
            )

    def _idle_check(self) -> None:
        """Close the connection once it has been idle for ``idle_timeout`` (re-arms itself)."""
        self._idle_timer = None
        timeout = self.limits.idle_timeout
        if timeout is None or not self.is_open:
            return
        now = self.loop.time()
        if self._in_flight or self._backlog or self.framer.pending_bytes:
            due = now + timeout  # busy: look again later
        else:
            due = self._last_active + timeout
            if due <= now + 0.001:  # timers may fire up to a clock tick early
                self.stats["idle_timeouts"] += 1
                self.close_with(RpcError(f"idle for {timeout}s", code="idle_timeout"))
                return
        self._idle_timer = self.loop.call_at(due, self._idle_check)


def _is_prove(item: object) -> bool:
    return type(item) is Request and item.method == "auth.prove"


def _unauthorized(method: str) -> RpcError:
    return RpcError(
        f"{method!r} needs an authenticated connection (only ping and the handshake answer "
        "before auth.prove)",
        code="unauthorized",
    )
