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

from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from peer.rpc.auth import FrameMac, tag_matches
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

    Three additions serve authentication and early refusal:

    - ``barrier``: a predicate; after an item for which it holds, decoding stops (``held``)
      so that the caller can act on that item (switch on sealing after ``auth.prove``) before
      the next one is decoded; ``resume()`` then decodes the rest of the same data. It must be
      called before the next ``feed`` (the data handed to ``feed`` is still referenced).
    - ``seal(key)``: from the current frame boundary on, every message must be followed by its
      tag (see ``peer.rpc.auth``); a message is returned only once its tag has verified. The
      message's bytes are hashed as they arrive, so a large frame costs no second pass.
    - While a frame is incomplete its msgpack headers are checked as they arrive (a resumable
      walk that skips payloads), so a header that declares a str/bin/ext/array/map beyond the
      limits, or beyond the frame bound, is refused at once rather than after its bytes came.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
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
        self._boundary = 0  # stream offset just after the last complete object
        self.broken: FrameError | None = None
        self.frame_sizes: list[int] = []  # sizes of the frames returned by the last feed
        self.barrier: Callable[[Message | Invalid], bool] | None = None
        self.held = False
        # the data of the last feed: the piece being decoded, its stream offset, what is left
        self._chunk: bytes | bytearray | memoryview = b""
        self._chunk_base = 0
        self._rest: tuple[memoryview, int] | None = None
        # sealing (None: plain frames)
        self._mac: FrameMac | None = None
        self._running: Any = None  # the running MAC (an HMAC object) of the message received
        self._hashed = 0  # stream offset up to which the running MAC has been fed
        self._msg_start = 0  # stream offset where the current sealed message began
        self._awaiting_tag: tuple[Message | Invalid] | None = None
        # header walk of the incomplete frame
        self._scan_frame = -1  # frame start the walk belongs to
        self._scan_pos = 0  # stream offset of the next header to check
        self._scan_stack: list[int] = []  # elements left in each open container
        self._carry = b""  # bytes of a header cut by the end of the data, from _scan_pos

    @property
    def sealed(self) -> bool:
        return self._mac is not None

    @property
    def pending_bytes(self) -> int:
        """Bytes received of the frame not yet complete (0 at a frame boundary)."""
        return self._fed - (self._msg_start if self._mac is not None else self._boundary)

    def set_max_frame(self, nbytes: int) -> None:
        """Bound frames to ``nbytes`` (at most ``limits.max_frame_bytes``) from now on."""
        self._max_frame = min(nbytes, self._limits.max_frame_bytes)

    def seal(self, key: bytes) -> None:
        """Expect every message from the current boundary on to carry its tag (keyed ``key``)."""
        self._mac = FrameMac(key)
        self._running = self._mac.start()
        self._hashed = self._msg_start = self._boundary

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message | Invalid]:
        if self.broken is not None:
            raise self.broken
        self.held = False
        fed = self._fed + len(data)
        if fed - self._boundary <= self._max_frame:  # the common case: it all fits
            self._unpacker.feed(data)
            self._chunk = data
            self._chunk_base = self._fed
            self._fed = fed
            self._rest = None
            return self._drain([], [])
        self._rest = (memoryview(data), 0)
        return self._pieces([], [])

    def resume(self) -> list[Message | Invalid]:
        """After a barrier stopped decoding: decode the rest of the data last fed."""
        if self.broken is not None:
            raise self.broken
        self.held = False
        out: list[Message | Invalid] = []
        sizes: list[int] = []
        out = self._drain(out, sizes)
        if self._rest is not None and not self.held and self.broken is None:
            return self._pieces(out, sizes)
        return out

    def _pieces(self, out: list[Message | Invalid], sizes: list[int]) -> list[Message | Invalid]:
        """Feed what is left of a large chunk a frame's room at a time."""
        assert self._rest is not None
        view, offset = self._rest
        n = len(view)
        while offset < n:
            room = self._boundary + self._max_frame - self._fed
            if room <= 0:
                self._rest = None
                self.frame_sizes = sizes
                return self._fail(
                    FrameTooLarge(f"frame exceeds max_frame_bytes ({self._max_frame} bytes)"), out
                )
            piece = view[offset : offset + room]
            self._unpacker.feed(piece)
            self._chunk = piece
            self._chunk_base = self._fed
            offset += len(piece)
            self._fed += len(piece)
            self._rest = (view, offset)
            out = self._drain(out, sizes)
            if self.broken is not None or self.held:
                break
        if offset >= n and not self.held:
            self._rest = None
        return out

    def _drain(self, out: list[Message | Invalid], sizes: list[int]) -> list[Message | Invalid]:
        unpacker = self._unpacker
        self.frame_sizes = sizes
        barrier = self.barrier
        try:
            if self._mac is None:
                for obj in unpacker:
                    end = unpacker.tell()
                    sizes.append(end - self._boundary)
                    self._boundary = end
                    item = classify(obj)
                    out.append(item)
                    if barrier is not None and barrier(item):
                        self.held = True
                        return out
            else:
                for obj in unpacker:
                    error = self._sealed(obj, unpacker.tell(), out, sizes)
                    if error is not None:
                        return self._fail(error, out)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return self._undecodable(exc, out)
        if self._fed > self._boundary:  # a frame is incomplete
            if self._mac is not None and self._awaiting_tag is None and self._fed > self._hashed:
                self._hash_to(self._fed)
            error = self._walk_headers()
            if error is not None:
                return self._fail(error, out)
        return out

    # -- sealed frames --------------------------------------------------------------------
    def _hash_to(self, end: int) -> None:
        base = self._chunk_base
        self._running.update(self._chunk[self._hashed - base : end - base])
        self._hashed = end

    def _sealed(
        self, obj: object, end: int, out: list[Message | Invalid], sizes: list[int]
    ) -> FrameError | None:
        if self._awaiting_tag is None:  # obj is a message
            self._hash_to(end)
            self._awaiting_tag = (classify(obj),)
            self._boundary = end
            return None
        # obj is the tag of the message before it
        item = self._awaiting_tag[0]
        self._awaiting_tag = None
        assert self._mac is not None
        if not tag_matches(self._running, obj):
            return FrameError(
                "frame tag does not verify (forged, replayed, reordered or spliced frame)",
                code="bad_mac",
            )
        sizes.append(end - self._msg_start)
        self._boundary = self._hashed = self._msg_start = end
        self._running = self._mac.start()
        out.append(item)
        return None

    # -- header walk ----------------------------------------------------------------------
    def _header_bytes(self, pos: int) -> bytes:
        """Up to 9 bytes from stream offset ``pos`` (the carry, then the current chunk)."""
        base = self._chunk_base
        if pos >= base:
            return bytes(self._chunk[pos - base : pos - base + 9])
        head = self._carry[pos - self._scan_pos :]
        return head + bytes(self._chunk[: 9 - len(head)])

    def _walk_headers(self) -> FrameError | None:
        """Check the headers of the incomplete frame that have arrived since the last call."""
        start = self._boundary
        if self._scan_frame != start:
            self._scan_frame = start
            self._scan_pos = start
            self._scan_stack = [1]
            self._carry = b""
        stack = self._scan_stack
        pos = self._scan_pos
        fed = self._fed
        limit = start + self._max_frame
        lim = self._limits
        while stack and pos < fed:
            head = self._header_bytes(pos)
            parsed = _parse_header(head)
            if parsed is None:  # the header is cut off: keep its bytes for the next data
                self._carry = head[: fed - pos]
                break
            kind, hdr, length = parsed
            if kind == _STOP:
                stack.clear()  # not msgpack we can walk: the decoder will say what is wrong
                break
            bound = _KIND_LIMIT[kind](lim)
            if length > bound:
                return FrameTooLarge(
                    f"header declares a {_KIND_NAME[kind]} of {length} (limit {bound})"
                )
            payload = length if kind <= _EXT else 0
            if kind == _MAP:
                length *= 2
            # a container of n elements takes at least n more bytes
            if pos + hdr + (length if kind > _EXT else payload) > limit:
                return FrameTooLarge(
                    f"header declares a {_KIND_NAME[kind]} of {length} that cannot fit in "
                    f"the frame bound ({self._max_frame} bytes)"
                )
            pos += hdr + payload
            stack[-1] -= 1
            if kind > _EXT and length:
                if len(stack) >= _MAX_WALK_DEPTH:
                    stack.clear()
                    break
                stack.append(length)
            while stack and stack[-1] == 0:
                stack.pop()
            self._carry = b""
        self._scan_pos = pos
        return None

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


# Header kinds for the walk: payload-carrying first, then containers.
_SCALAR, _STR, _BIN, _EXT, _ARRAY, _MAP, _STOP = range(7)
_KIND_NAME = {
    _SCALAR: "scalar",
    _STR: "str",
    _BIN: "bin",
    _EXT: "ext",
    _ARRAY: "array",
    _MAP: "map",
}
_KIND_LIMIT: dict[int, Callable[[Limits], int]] = {
    _SCALAR: lambda lim: 8,
    _STR: lambda lim: lim.max_str_len,
    _BIN: lambda lim: lim.max_bin_len,
    _EXT: lambda lim: lim.max_ext_len,
    _ARRAY: lambda lim: lim.max_array_len,
    _MAP: lambda lim: lim.max_map_len,
}
_MAX_WALK_DEPTH = 512
# first byte -> (kind, header bytes, bytes of the big-endian length after the first byte)
# or (kind, header bytes, fixed length) for fixed-size values
_FIXED_SCALARS = {
    0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
    0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,
}  # fmt: skip
_SIZED = {  # first byte -> (kind, length bytes, extra header bytes after the length)
    0xC4: (_BIN, 1, 0), 0xC5: (_BIN, 2, 0), 0xC6: (_BIN, 4, 0),
    0xC7: (_EXT, 1, 1), 0xC8: (_EXT, 2, 1), 0xC9: (_EXT, 4, 1),
    0xD9: (_STR, 1, 0), 0xDA: (_STR, 2, 0), 0xDB: (_STR, 4, 0),
    0xDC: (_ARRAY, 2, 0), 0xDD: (_ARRAY, 4, 0), 0xDE: (_MAP, 2, 0), 0xDF: (_MAP, 4, 0),
}  # fmt: skip


def _parse_header(head: bytes) -> tuple[int, int, int] | None:
    """(kind, header bytes, declared length) of the msgpack value starting ``head``; None if
    ``head`` is too short to tell; kind ``_STOP`` for a byte that starts no value."""
    if not head:
        return None
    b = head[0]
    if b <= 0x7F or b >= 0xE0:
        return _SCALAR, 1, 0
    if b <= 0x8F:
        return _MAP, 1, b & 0x0F
    if b <= 0x9F:
        return _ARRAY, 1, b & 0x0F
    if b <= 0xBF:
        return _STR, 1, b & 0x1F
    fixed = _FIXED_SCALARS.get(b)
    if fixed is not None:
        return _SCALAR, fixed, 0
    if 0xD4 <= b <= 0xD8:  # fixext 1, 2, 4, 8, 16: a type byte, then the data
        return _EXT, 2, 1 << (b - 0xD4)
    sized = _SIZED.get(b)
    if sized is None:
        return _STOP, 1, 0  # 0xc1 (never used)
    kind, nlen, extra = sized
    hdr = 1 + nlen + extra
    if len(head) < 1 + nlen:
        return None
    return kind, hdr, int.from_bytes(head[1 : 1 + nlen], "big")


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
            frame: bytes = self._packer.pack([REQUEST, msgid, method, params])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unencodable(exc) from exc
        if len(frame) > self._max_frame:
            raise self._too_large(frame)
        return frame

    def response(self, msgid: int, error: Any, result: Any) -> bytes:
        try:
            frame: bytes = self._packer.pack([RESPONSE, msgid, error, result])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unencodable(exc) from exc
        if len(frame) > self._max_frame:
            raise self._too_large(frame)
        return frame

    def notification(self, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
        try:
            frame: bytes = self._packer.pack([NOTIFICATION, method, params])
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unencodable(exc) from exc
        if len(frame) > self._max_frame:
            raise self._too_large(frame)
        return frame
