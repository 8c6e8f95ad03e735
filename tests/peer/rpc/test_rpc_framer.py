"""The pure framer: decoding split at any byte, shapes, limits, encoding bounds."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.rpc import EncodeError, FrameError, FrameTooLarge, Limits
from peer.rpc.framer import Encoder, Framer, Invalid, Notification, Request, Response, classify

LIMITS = Limits()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=64),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
msgids = st.integers(min_value=0, max_value=2**32 - 1)
methods = st.text(min_size=1, max_size=16)
params = st.lists(values, max_size=4)

messages = st.one_of(
    st.builds(Request, msgids, methods, params),
    st.builds(Response, msgids, values, values),
    st.builds(Notification, methods, params),
)


def encode(encoder: Encoder, msg: Request | Response | Notification) -> bytes:
    if isinstance(msg, Request):
        return encoder.request(msg.msgid, msg.method, msg.params)
    if isinstance(msg, Response):
        return encoder.response(msg.msgid, msg.error, msg.result)
    return encoder.notification(msg.method, msg.params)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(messages, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_decodes_to_the_same_messages(
    msgs: list[Request | Response | Notification], cuts: list[int]
) -> None:
    encoder = Encoder(LIMITS)
    frames = [encode(encoder, m) for m in msgs]
    stream = b"".join(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    framer = Framer(LIMITS)
    out: list[Any] = []
    sizes: list[int] = []
    start = 0
    for point in [*points, len(stream)]:
        out.extend(framer.feed(stream[start:point]))
        sizes.extend(framer.frame_sizes)
        start = point
    assert out == msgs
    assert sizes == [len(f) for f in frames]
    assert framer.pending_bytes == 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(messages, min_size=1, max_size=5))
def test_one_byte_at_a_time(msgs: list[Request | Response | Notification]) -> None:
    encoder = Encoder(LIMITS)
    stream = b"".join(encode(encoder, m) for m in msgs)
    framer = Framer(LIMITS)
    out: list[Any] = []
    for i in range(len(stream)):
        out.extend(framer.feed(stream[i : i + 1]))
        if len(out) < len(msgs):
            assert framer.pending_bytes > 0 or out
    assert out == msgs


@pytest.mark.parametrize(
    ("obj", "msgid"),
    [
        (5, None),
        ([], None),
        (["x", 1, "m", []], None),
        ([3, 1, "m", []], None),
        ([0, 1, "m"], 1),
        ([0, 7, 5, []], 7),
        ([0, 7, "m", {"a": 1}], 7),
        ([0, -1, "m", []], None),
        ([0, 2**32, "m", []], None),
        ([0, True, "m", []], None),
        ([1, 1, None], None),
        ([1, "id", None, None], None),
        ([2, "m"], None),
        ([2, 5, []], None),
        ([2, "m", "notalist"], None),
    ],
)
def test_wrong_shapes_are_invalid_not_fatal(obj: Any, msgid: int | None) -> None:
    framer = Framer(LIMITS)
    good = msgpack.packb([0, 9, "ping", []])
    items = framer.feed(msgpack.packb(obj) + good)
    assert len(items) == 2
    bad = items[0]
    assert isinstance(bad, Invalid)
    assert bad.msgid == msgid
    assert bad.error.code == "bad_request"
    assert items[1] == Request(9, "ping", [])
    again = classify(obj)
    assert isinstance(again, Invalid)
    assert (again.msgid, again.error.message) == (bad.msgid, bad.error.message)


def test_garbage_is_fatal_and_stays_fatal() -> None:
    framer = Framer(LIMITS)
    with pytest.raises(FrameError) as err:
        framer.feed(b"\xc1\xc1\xc1")
    assert err.value.code == "malformed_frame"
    with pytest.raises(FrameError):
        framer.feed(msgpack.packb([0, 1, "ping", []]))


def test_messages_before_a_fault_are_returned_then_the_fault() -> None:
    framer = Framer(LIMITS)
    items = framer.feed(msgpack.packb([0, 1, "ping", []]) + b"\xc1")
    assert items == [Request(1, "ping", [])]
    assert isinstance(framer.broken, FrameError)
    with pytest.raises(FrameError):
        framer.feed(b"")


def test_invalid_utf8_is_malformed() -> None:
    framer = Framer(LIMITS)
    with pytest.raises(FrameError):
        framer.feed(b"\x94\x00\x01\xa2\xff\xfe\x90")


@pytest.mark.parametrize(
    ("field", "obj"),
    [
        ("max_bin_len", [0, 1, "m", [b"x" * 2000]]),
        ("max_str_len", [0, 1, "m", ["x" * 2000]]),
        ("max_array_len", [0, 1, "m", list(range(2000))]),
        ("max_map_len", [0, 1, "m", [{str(i): i for i in range(2000)}]]),
    ],
)
def test_per_type_limits(field: str, obj: Any) -> None:
    limits = Limits().with_(**{field: 1000})
    framer = Framer(limits)
    with pytest.raises(FrameTooLarge) as err:
        framer.feed(msgpack.packb(obj, use_bin_type=True))
    assert err.value.code == "too_large"


def test_declared_huge_array_is_refused_before_allocation() -> None:
    framer = Framer(Limits().with_(max_array_len=100))
    # array32 header claiming 2**32-1 elements, and nothing else
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\xdd\xff\xff\xff\xff")


def test_ext_types_are_refused_by_default() -> None:
    framer = Framer(LIMITS)
    frame = msgpack.packb([0, 1, "m", [msgpack.ExtType(5, b"abcd")]])
    with pytest.raises(FrameTooLarge):
        framer.feed(frame)


def test_frame_bound_holds_for_frames_of_many_small_values() -> None:
    # Each value is within the per-type limits; the whole frame is not.
    limits = Limits(max_frame_bytes=64 * 1024, max_bin_len=8 * 1024, max_str_len=8 * 1024)
    framer = Framer(limits)
    frame = msgpack.packb([0, 1, "m", [b"x" * 4000] * 40])
    with pytest.raises(FrameTooLarge):
        for i in range(0, len(frame), 1000):
            framer.feed(frame[i : i + 1000])


def test_frames_at_the_bound_pass_in_any_chunking() -> None:
    limits = Limits(max_frame_bytes=10_000, max_bin_len=10_000, max_str_len=10_000)
    encoder = Encoder(limits)
    payload = b"y" * (10_000 - 20)
    frame = encoder.request(1, "m", [payload])
    assert len(frame) <= 10_000
    stream = frame * 5
    for chunk in (1, 7, 4096, 10_000, 30_000, len(stream)):
        framer = Framer(limits)
        out = []
        for i in range(0, len(stream), chunk):
            out.extend(framer.feed(stream[i : i + chunk]))
        assert out == [Request(1, "m", [payload])] * 5


def test_encoder_refuses_oversized_and_unencodable() -> None:
    encoder = Encoder(Limits(max_frame_bytes=1000, max_bin_len=1000, max_str_len=1000))
    with pytest.raises(EncodeError) as err:
        encoder.request(1, "m", [b"x" * 2000])
    assert err.value.code == "too_large"
    with pytest.raises(EncodeError):
        encoder.response(1, None, object())
    # the encoder is still usable afterwards
    assert msgpack.unpackb(encoder.notification("n", [1])) == [2, "n", [1]]


def test_limits_validate() -> None:
    with pytest.raises(ValueError):
        Limits(max_frame_bytes=0)
    with pytest.raises(ValueError):
        Limits(max_bin_len=10, max_frame_bytes=5, max_str_len=5)
    with pytest.raises(ValueError):
        Limits(frame_timeout=0)
    assert Limits.small().max_frame_bytes < Limits.default().max_frame_bytes
    assert Limits.bulk().max_frame_bytes > Limits.default().max_frame_bytes


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_arbitrary_bytes_only_ever_raise_frame_errors(chunks: list[bytes]) -> None:
    framer = Framer(Limits(max_frame_bytes=4096, max_bin_len=1024, max_str_len=1024))
    try:
        for chunk in chunks:
            for item in framer.feed(chunk):
                assert isinstance(item, Request | Response | Notification | Invalid)
    except FrameError as exc:  # the only exception allowed out, with a stable code
        assert exc.code in {"malformed_frame", "too_large"}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(values)
def test_any_decoded_object_is_classified(obj: Any) -> None:
    item = classify(msgpack.unpackb(msgpack.packb(obj), raw=False, strict_map_key=False))
    assert isinstance(item, Request | Response | Notification | Invalid)


@pytest.mark.parametrize(
    ("header", "what"),
    [
        (b"\xc6" + (64 << 20).to_bytes(4, "big"), "bin"),
        (b"\xdb" + (2 << 20).to_bytes(4, "big"), "str"),
        (b"\xdd" + (10**7).to_bytes(4, "big"), "array"),
        (b"\xdf" + (10**6).to_bytes(4, "big"), "map"),
        (b"\xc9" + (100).to_bytes(4, "big"), "ext"),  # refused before its type byte
        (b"\xdc" + (60_000).to_bytes(2, "big"), "array"),  # within max_array_len, not the frame
    ],
)
def test_declared_lengths_beyond_the_limits_are_refused_at_the_header(
    header: bytes, what: str
) -> None:
    limits = Limits(max_frame_bytes=50_000, max_bin_len=40_000, max_str_len=40_000)
    prefix = b"\x94\x00\x01\xa4echo\x91"  # [0, 1, "echo", [ ...
    for cut in range(1, len(header)):  # in two pieces, the header cut anywhere
        framer = Framer(limits)
        assert framer.feed(prefix + header[:cut]) == []  # not yet known: nothing refused
        with pytest.raises(FrameTooLarge, match=what):
            framer.feed(header[cut:])  # refused as soon as the header is whole
    with pytest.raises(FrameTooLarge, match=what):
        Framer(limits).feed(prefix + header)
    # an allowed declaration waits for its bytes as before
    framer = Framer(limits)
    assert framer.feed(prefix + b"\xc5" + (30_000).to_bytes(2, "big")) == []
    assert framer.feed(b"z" * 29_999) == []
    assert framer.feed(b"z") == [Request(1, "echo", [b"z" * 30_000])]
