"""A pure msgpack-RPC framer: bytes in, typed messages out; messages in, bytes out.

The wire is the public msgpack-RPC spec with nothing added: a plain stream of msgpack arrays,

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

with no length prefix. Decoding feeds a ``msgpack.Unpacker`` incrementally (like aiohttp's
``feed_data`` parsers) and bounds everything before it is allocated: the bytes of one frame
(``max_frame_bytes``, also the unpacker's buffer bound) and each value's length (bin, str, array,
map, ext). Array and map lengths are checked at their headers; str, bin and ext lengths once
their bytes have arrived, so until then the frame bound caps what a peer can make us hold.
No sockets, clocks or asyncio live here.

Faults are typed. ``FrameError``/``FrameTooLarge`` are fatal (the stream cannot be resynchronised)
and are raised; a well-formed msgpack object of the wrong shape is not fatal and is yielded as an
``Invalid`` item carrying a ``MessageError`` and, where it can be recovered, the request's msgid.
"""

from __future__ import annotations

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
    if type(obj) is list and len(obj) == 4:
        kind, msgid, a, b = obj
        if type(kind) is int and type(msgid) is int and 0 <= msgid <= MAX_MSGID:
            if kind == RESPONSE:
                return Response(msgid, a, b)
            if kind == REQUEST and type(a) is str and type(b) is list:
                return Request(msgid, a, b)
    return _classify_slow(obj)


def _classify_slow(obj: object) -> Message | Invalid:
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

    ``feed(data)`` returns the messages completed by ``data``, in order. A fatal fault raises
    ``FrameError`` at once if nothing was decoded before it; otherwise the messages decoded
    before the fault are returned, ``broken`` holds the fault and the next ``feed`` raises it.
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
            # 1 MiB start (msgpack default): smaller starts re-grow and move data more often
            read_size=min(1024 * 1024, limits.max_frame_bytes),
        )
        self._fed = 0  # total bytes fed
        self._boundary = 0  # stream offset just after the last complete frame
        self.broken: FrameError | None = None
        self.frame_sizes: list[int] = []  # sizes of the frames returned by the last feed

    @property
    def pending_bytes(self) -> int:
        """Bytes received of the frame not yet complete (0 at a frame boundary)."""
        return self._fed - self._boundary

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message | Invalid]:
        if self.broken is not None:
            raise self.broken
        n = len(data)
        fed = self._fed + n
        if fed - self._boundary <= self._max_frame:  # the common case: it all fits
            unpacker = self._unpacker
            unpacker.feed(data)
            self._fed = fed
            out: list[Message | Invalid] = []
            sizes: list[int] = []
            self.frame_sizes = sizes
            boundary = self._boundary
            try:
                for obj in unpacker:
                    end = unpacker.tell()
                    sizes.append(end - boundary)
                    boundary = self._boundary = end
                    out.append(classify(obj))
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                return self._undecodable(exc, out)
            return out
        out = []
        self.frame_sizes = []
        view = memoryview(data)
        offset = 0
        while offset < n:
            room = self._boundary + self._max_frame - self._fed
            if room <= 0:
                return self._fail(
                    FrameTooLarge(f"frame exceeds max_frame_bytes ({self._max_frame} bytes)"), out
                )
            piece = view[offset : offset + room]
            self._unpacker.feed(piece)
            offset += len(piece)
            self._fed += len(piece)
            sizes = self.frame_sizes
            out = self._decode(out)
            self.frame_sizes = sizes + self.frame_sizes
            if self.broken is not None:
                break
        return out

    def _decode(self, out: list[Message | Invalid]) -> list[Message | Invalid]:
        unpacker = self._unpacker
        sizes: list[int] = []
        self.frame_sizes = sizes
        try:
            for obj in unpacker:
                end = unpacker.tell()
                sizes.append(end - self._boundary)
                self._boundary = end
                out.append(classify(obj))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return self._undecodable(exc, out)
        return out

    def _undecodable(self, exc: Exception, out: list[Message | Invalid]) -> list[Message | Invalid]:
        text = str(exc) or "invalid msgpack"
        if "exceeds max" in text:
            return self._fail(FrameTooLarge(f"value too large: {text}"), out)
        return self._fail(FrameError(f"undecodable bytes: {type(exc).__name__}: {text}"[:300]), out)

    def _fail(self, error: FrameError, out: list[Message | Invalid]) -> list[Message | Invalid]:
        self.broken = error
        if not out:
            raise error
        return out


class Encoder:
    """Packs messages for one connection and enforces the frame size bound."""

    def __init__(self, limits: Limits) -> None:
        self._max_frame = limits.max_frame_bytes
        self._packer = msgpack.Packer(use_bin_type=True)

    def _unencodable(self, exc: Exception) -> EncodeError:
        self._packer.reset()
        return EncodeError(f"cannot encode: {type(exc).__name__}: {exc}")

    def _too_large(self, frame: bytes) -> EncodeError:
        return EncodeError(
            f"frame of {len(frame)} bytes exceeds max_frame_bytes ({self._max_frame})",
            code="too_large",
        )

    def request(self, msgid: int, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
        try:
            frame = self._packer.pack([REQUEST, msgid, method, params])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unencodable(exc) from exc
        if len(frame) > self._max_frame:
            raise self._too_large(frame)
        return frame

    def response(self, msgid: int, error: Any, result: Any) -> bytes:
        try:
            frame = self._packer.pack([RESPONSE, msgid, error, result])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unencodable(exc) from exc
        if len(frame) > self._max_frame:
            raise self._too_large(frame)
        return frame

    def notification(self, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
        try:
            frame = self._packer.pack([NOTIFICATION, method, params])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unencodable(exc) from exc
        if len(frame) > self._max_frame:
            raise self._too_large(frame)
        return frame
