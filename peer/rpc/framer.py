"""A pure msgpack-RPC framer: bytes in, typed messages out; messages in, bytes out.

The wire is the public msgpack-RPC spec with nothing added: a plain stream of msgpack arrays,

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

with no length prefix. Decoding feeds a ``msgpack.Unpacker`` incrementally (like aiohttp's
``feed_data`` parsers) and bounds everything before it is allocated: the bytes of one frame
(``max_frame_bytes``, also the unpacker's buffer bound) and each value's length (bin, str, array,
map, ext). No sockets, clocks or asyncio live here.

Faults are typed. ``FrameError``/``FrameTooLarge`` are fatal (the stream cannot be resynchronised)
and are raised; a well-formed msgpack object of the wrong shape is not fatal and is yielded as an
``Invalid`` item carrying a ``MessageError`` and, where it can be recovered, the request's msgid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack

from peer.rpc.errors import EncodeError, FrameError, FrameTooLarge, MessageError
from peer.rpc.limits import Limits

PROTOCOL_VERSION = 1

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2
MAX_MSGID = 2**32 - 1


class Request(NamedTuple):
    msgid: int
    method: str
    params: list[Any]


class Response(NamedTuple):
    msgid: int
    error: Any
    result: Any


class Notification(NamedTuple):
    method: str
    params: list[Any]


class Invalid(NamedTuple):
    """A well-formed msgpack object that is not a valid message."""

    error: MessageError
    msgid: int | None  # set when the object is a request whose msgid could be read


Message = Request | Response | Notification


def _valid_msgid(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_MSGID


def classify(obj: object) -> Message | Invalid:
    """Check one decoded object against the spec's three message shapes."""
    if type(obj) is not list or not obj:
        return Invalid(MessageError("a message must be a non-empty array"), None)
    kind = obj[0]
    if type(kind) is not int:
        return Invalid(MessageError("message type must be an integer"), None)
    n = len(obj)
    if kind == REQUEST:
        msgid = obj[1] if n > 1 and _valid_msgid(obj[1]) else None
        if n != 4:
            return Invalid(MessageError(f"a request has 4 elements, got {n}"), msgid)
        if msgid is None:
            return Invalid(MessageError("msgid must be an integer in [0, 2**32)"), None)
        method, params = obj[2], obj[3]
        if type(method) is not str:
            return Invalid(MessageError("method must be a string"), msgid)
        if type(params) is not list:
            return Invalid(MessageError("params must be an array"), msgid)
        return Request(msgid, method, params)
    if kind == RESPONSE:
        if n != 4:
            return Invalid(MessageError(f"a response has 4 elements, got {n}"), None)
        if not _valid_msgid(obj[1]):
            return Invalid(MessageError("msgid must be an integer in [0, 2**32)"), None)
        return Response(obj[1], obj[2], obj[3])
    if kind == NOTIFICATION:
        if n != 3:
            return Invalid(MessageError(f"a notification has 3 elements, got {n}"), None)
        method, params = obj[1], obj[2]
        if type(method) is not str:
            return Invalid(MessageError("method must be a string"), None)
        if type(params) is not list:
            return Invalid(MessageError("params must be an array"), None)
        return Notification(method, params)
    return Invalid(MessageError(f"unknown message type {kind}"), None)


class Framer:
    """Incremental decoder for one direction of one connection.

    ``feed(data)`` returns an iterator that must be consumed fully; it yields every message
    completed by ``data``. After a ``FrameError`` the framer is broken and raises it again.
    """

    def __init__(self, limits: Limits) -> None:
        self._max_frame = limits.max_frame_bytes
        self._unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_buffer_size=limits.max_frame_bytes,
            max_bin_len=limits.max_bin_len,
            max_str_len=limits.max_str_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=limits.max_ext_len,
        )
        self._fed = 0  # total bytes fed
        self._boundary = 0  # stream offset just after the last complete frame
        self._broken: FrameError | None = None
        self.last_frame_size = 0  # size in bytes of the frame last yielded

    @property
    def pending_bytes(self) -> int:
        """Bytes received of the frame not yet complete (0 at a frame boundary)."""
        return self._fed - self._boundary

    @property
    def broken(self) -> FrameError | None:
        return self._broken

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Message | Invalid]:
        if self._broken is not None:
            raise self._broken
        view = memoryview(data)
        while len(view):
            room = self._boundary + self._max_frame - self._fed
            if room <= 0:
                self._fail(
                    FrameTooLarge(f"frame exceeds max_frame_bytes ({self._max_frame} bytes)")
                )
            piece = view[:room] if room < len(view) else view
            view = view[len(piece) :]
            self._unpacker.feed(piece)
            self._fed += len(piece)
            yield from self._decode()

    def _decode(self) -> Iterator[Message | Invalid]:
        unpacker = self._unpacker
        try:
            for obj in unpacker:
                end = unpacker.tell()
                self.last_frame_size = end - self._boundary
                self._boundary = end
                yield classify(obj)
        except FrameError:
            raise
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            text = str(exc) or "invalid msgpack"
            if "exceeds max" in text:
                self._fail(FrameTooLarge(f"value too large: {text}"))
            self._fail(FrameError(f"undecodable bytes: {type(exc).__name__}: {text}"[:300]))

    def _fail(self, error: FrameError) -> None:
        self._broken = error
        raise error


class Encoder:
    """Packs messages for one connection and enforces the frame size bound."""

    def __init__(self, limits: Limits) -> None:
        self._max_frame = limits.max_frame_bytes
        self._packer = msgpack.Packer(use_bin_type=True)

    def _pack(self, obj: list[Any]) -> bytes:
        try:
            frame = self._packer.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise EncodeError(f"cannot encode: {type(exc).__name__}: {exc}") from exc
        if len(frame) > self._max_frame:
            raise EncodeError(
                f"frame of {len(frame)} bytes exceeds max_frame_bytes ({self._max_frame})",
                code="too_large",
            )
        return frame

    def request(self, msgid: int, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
        return self._pack([REQUEST, msgid, method, params])

    def response(self, msgid: int, error: Any, result: Any) -> bytes:
        return self._pack([RESPONSE, msgid, error, result])

    def notification(self, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
        return self._pack([NOTIFICATION, method, params])
