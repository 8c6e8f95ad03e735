"""The RPC error tree.

Every error carries a stable string ``code`` and a human ``message``; on the wire an error
travels in the response's error slot as ``{"code": code, "message": message}``.

- ``RemoteError``: the other side answered with an error (any code, see ``CODES``).
- ``RpcTimeout``, ``ConnectionLost``: the call did not complete; the peer may be down or slow.
- ``AuthError``, ``VersionMismatch``: the connection could not be set up.
- ``FrameError`` (and ``FrameTooLarge``): the byte stream is unusable; that connection closes.
- ``MessageError``: well-formed msgpack in the wrong shape; the stream stays usable.
- ``TensorError``: a tensor dict that does not describe a valid array.
- ``EncodeError``: a value that cannot be sent (not msgpack-able, or too large).

Handlers raise ``RpcError(message, code="...")`` (or any subclass) to answer with that code;
any other exception from a handler is answered as ``internal``.
"""

from __future__ import annotations

from typing import Any

# Stable codes used in error slots and ``rpc.error`` notifications.
CODES = {
    "bad_request": "the message has the wrong shape or types",
    "invalid_params": "the params do not match the method's signature",
    "unknown_method": "no such method",
    "internal": "the handler raised an unexpected exception",
    "unauthorized": "the connection has not authenticated: only ping and the handshake answer",
    "auth_failed": "the HMAC proof did not match",
    "auth_unavailable": "authentication was asked of a server without a secret",
    "auth_timeout": "the connection did not finish its handshake in time",
    "idle_timeout": "the connection was idle too long and is closed (reconnect to go on)",
    "bad_mac": "a frame's tag did not verify (forged, replayed, reordered or spliced)",
    "version_mismatch": "the peers speak different protocol versions",
    "too_large": "a frame or value exceeds the configured limits",
    "malformed_frame": "the bytes are not valid msgpack",
    "frame_timeout": "a frame stayed incomplete for too long",
    "busy": "too many calls queued on this connection, or too many connections (in all or "
    "from this address)",
    "cancelled": "the handler was cancelled",
    "shutting_down": "the server is closing",
}


class RpcError(Exception):
    """Base of all RPC errors. ``code`` is stable; ``message`` is for humans."""

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class RemoteError(RpcError):
    """The remote side answered a call with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))

    @classmethod
    def from_wire(cls, error: object) -> RemoteError:
        """Build from an error slot: ours is ``{"code", "message"}``; others may send anything."""
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            if isinstance(code, str) and isinstance(message, str):
                return cls(code, message)
        if isinstance(error, str):
            return cls("remote_error", error)
        return cls("remote_error", repr(error)[:500])


class RpcTimeout(RpcError, TimeoutError):
    """A call got no answer within its timeout."""

    code = "timeout"


class ConnectionLost(RpcError, ConnectionError):
    """The connection closed (or could not be opened) before the call completed."""

    code = "connection_lost"


class AuthError(RpcError):
    """HMAC authentication failed or could not be carried out."""

    code = "auth_failed"


class VersionMismatch(RpcError):
    """The two sides speak different protocol versions."""

    code = "version_mismatch"


class FrameError(RpcError):
    """The byte stream cannot be decoded any further; the connection must close."""

    code = "malformed_frame"


class FrameTooLarge(FrameError):
    """A frame, or a value inside it, exceeds the configured limits."""

    code = "too_large"


class MessageError(RpcError):
    """A decoded msgpack object is not a valid msgpack-RPC message."""

    code = "bad_request"


class EncodeError(RpcError):
    """A value cannot be encoded for sending (not msgpack-able or too large)."""

    code = "bad_request"


class TensorError(RpcError, ValueError):
    """A tensor dict does not describe a valid array."""

    code = "bad_tensor"
