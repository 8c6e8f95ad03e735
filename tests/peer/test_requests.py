"""Request bodies: any bytes give a dict or a BadRequest with a stable code, never another
exception (huge integers, deep nesting, NaN/Infinity, duplicate keys, non-objects, bad UTF-8,
hostile PNG bytes)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from peer.core.config import Limits
from peer.core.errors import BadRequest
from peer.core.requests import (
    MAX_INT_DIGITS,
    decode_png,
    parse_generate,
    parse_json,
    parse_repair,
    parse_wait,
)


def code_of(body: bytes) -> str:
    with pytest.raises(BadRequest) as info:
        parse_json(body)
    assert info.value.status == 400 and info.value.message
    return info.value.code


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"count": ' + b"9" * 5001 + b"}", "number_too_large"),  # past Python's 4,300 digits
        (b'{"seed": -' + b"1" * (MAX_INT_DIGITS + 1) + b"}", "number_too_large"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too_deep"),
        (b"[" * 100_000, "too_deep"),  # unterminated and deep
        (b'{"count": NaN}', "invalid_number"),
        (b'{"count": Infinity}', "invalid_number"),
        (b'{"count": -Infinity}', "invalid_number"),
        (b'{"count": 1e999}', "invalid_number"),
        (b'{"count": 1, "count": 64}', "duplicate_key"),
        (b'{"x": {"y": 1, "y": 2}}', "duplicate_key"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"3", "not_an_object"),
        (b"null", "not_an_object"),
        (b"", "invalid_json"),
        (b"   ", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b'{"a": 1}{"b": 2}', "invalid_json"),
        (b"\xff\xfe{\x00}\x00", "invalid_json"),  # UTF-16: not accepted
        (b'\xef\xbb\xbf{"count": 1}', "invalid_json"),  # a BOM
        (b'{"count": 1\xc3}', "invalid_json"),
        (b'{"a": "\\x"}', "invalid_json"),
        (b"{'count': 1}", "invalid_json"),
    ],
)
def test_malformed_json_is_a_clear_400(body: bytes, code: str) -> None:
    assert code_of(body) == code


def test_numbers_within_bounds_are_parsed_as_before() -> None:
    big = int("9" * MAX_INT_DIGITS)
    assert parse_json(b'{"a": ' + str(big).encode() + b', "b": -0.5, "c": 1e308}') == {
        "a": big,
        "b": -0.5,
        "c": 1e308,
    }
    nested = b"[" * 60 + b"]" * 60  # deep but within the limit: parsed, then refused as a type
    with pytest.raises(BadRequest) as info:
        parse_generate(parse_json(b'{"count": ' + nested + b"}"), Limits())
    assert info.value.code == "invalid_type"
    with pytest.raises(BadRequest) as info:
        parse_generate(parse_json(b'{"count": ' + b"9" * MAX_INT_DIGITS + b"}"), Limits())
    assert info.value.code == "out_of_range"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, val in ops:
        i = pos % (len(buf) + 1)
        if kind == 0 and buf:
            buf[i % len(buf)] = val
        elif kind == 1:
            buf[i:i] = bytes([val])
        elif buf:
            del buf[i % len(buf)]
    return bytes(buf)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.tuples(
            st.dictionaries(
                st.sampled_from(["count", "label", "steps", "seed", "mode", "policy", "wait"]),
                JSON,
                max_size=5,
            ).map(lambda v: json.dumps(v).encode()),
            st.lists(
                st.tuples(st.integers(0, 2), st.integers(0, 200), st.integers(0, 255)),
                max_size=4,
            ),
        ).map(lambda t: mutate(*t)),
    )
)
def test_any_body_is_an_object_or_a_bad_request(body: bytes) -> None:
    try:
        value = parse_json(body)
    except BadRequest as exc:
        assert 400 <= exc.status < 500 and exc.code
        return
    assert isinstance(value, dict)
    try:
        parse_generate(value, Limits())
        parse_wait(value)
    except BadRequest as exc:
        assert 400 <= exc.status < 500


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_bombs_and_truncations_are_bad_png_or_out_of_range() -> None:
    limits = Limits()
    # A header declaring 100,000 x 100,000 pixels (a decompression bomb by declaration).
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    bomb = b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    good = png_bytes(np.full((32, 32), 7))
    cases = [bomb, good[:40], good[:50], good[:8] + b"\x00" * 40, b"\x89PNG\r\n\x1a\n"]
    for raw in cases:
        with pytest.raises(BadRequest) as info:
            decode_png(base64.b64encode(raw).decode(), "image", limits)
        assert info.value.code in ("bad_png", "out_of_range")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 400), st.integers(0, 255)), max_size=6))
def test_mutated_pngs_decode_or_are_bad_png(ops: list[tuple[int, int, int]]) -> None:
    img = png_bytes(np.arange(32 * 32).reshape(32, 32) % 251)
    raw = mutate(img, ops)
    body: dict[str, Any] = {
        "image": base64.b64encode(raw).decode(),
        "mask": base64.b64encode(img).decode(),
    }
    try:
        req = parse_repair(body, Limits())
    except BadRequest as exc:
        assert exc.code in ("bad_png", "out_of_range", "size_mismatch")
    else:
        assert req.image.dtype == np.uint8 and req.image.shape == req.mask.shape


def test_nesting_depth_ignores_brackets_in_strings_and_refuses_deep_bodies() -> None:
    from peer.core.requests import MAX_JSON_DEPTH, nesting_depth

    assert nesting_depth('{"a": [1, {"b": "[[[\\"["}]}') == 3
    assert nesting_depth("") == 0 and nesting_depth('"[["') == 0
    ok = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    assert parse_json(b'{"x": ' + ok + b"}")  # the object's brace counts too: 64 levels fit
    with pytest.raises(BadRequest) as info:
        parse_json(b'{"x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}")
    assert info.value.code == "too_deep"
