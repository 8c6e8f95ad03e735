"""Property tests: random and mutated frames against a server connection (no sockets).

A server connection is driven through a fake transport, so each example is quick and exact:
whatever bytes arrive, in whatever chunks, nothing escapes ``data_received``, no handler runs
on a connection that has not authenticated, a tampered sealed stream runs exactly the calls
whose frames came before the first altered byte, and a fresh connection still answers ping.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.rpc import Limits, RpcServer, auth
from peer.rpc.server import _ServerConnection

SECRET = b"fuzz-secret"
LIMITS = Limits(
    max_frame_bytes=64 * 1024,
    max_bin_len=16 * 1024,
    max_str_len=4096,
    max_array_len=256,
    max_map_len=64,
    max_preauth_frame_bytes=2048,
    max_in_flight=4,
    max_backlog=8,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "wrote after close"
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Harness:
    def __init__(self, secret: bytes | None = SECRET) -> None:
        self.calls: list[Any] = []
        self.server = RpcServer({"record": self.calls.append}, limits=LIMITS, secret=secret)

    def connect(self) -> tuple[_ServerConnection, FakeTransport]:
        conn = _ServerConnection(self.server)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    @staticmethod
    def feed(conn: _ServerConnection, transport: FakeTransport, chunks: list[bytes]) -> None:
        for chunk in chunks:
            if transport.closing:
                break
            conn.data_received(chunk)  # must never raise
        if transport.closing:
            conn.connection_lost(None)

    def answers_ping(self) -> bool:
        conn, transport = self.connect()
        conn.data_received(msgpack.packb([0, 7, "ping", []]))
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(bytes(transport.out))
        replies = list(unpacker)
        conn.connection_lost(None)
        return replies == [[1, 7, None, "pong"]]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [data]


def run(coro: Any) -> Any:
    with asyncio.Runner() as runner:
        return runner.run(coro)


msgids = st.integers(min_value=0, max_value=2**32 - 1)
methods = st.sampled_from(
    ["record", "ping", "info", "hello", "auth.challenge", "auth.prove", "rpc.error", "nosuch"]
)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.binary(max_size=40)),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)
messages = st.one_of(
    st.tuples(st.just(0), msgids, methods, st.lists(values, max_size=3)).map(list),
    st.tuples(st.just(2), methods, st.lists(values, max_size=3)).map(list),
    st.tuples(st.just(1), msgids, values, values).map(list),
    values,
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one of: a byte flipped, a range deleted, bytes inserted, a cut-off tail."""
    if not data:
        return draw(st.binary(min_size=1, max_size=32))
    kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
    pos = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        bit = draw(st.integers(0, 7))
        return data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1 :]
    if kind == "delete":
        return data[:pos] + data[pos + draw(st.integers(1, 16)) :]
    if kind == "insert":
        return data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
    return data[:pos]


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(messages, max_size=6).map(lambda ms: b"".join(msgpack.packb(m) for m in ms)),
        st.lists(messages, min_size=1, max_size=6)
        .map(lambda ms: b"".join(msgpack.packb(m) for m in ms))
        .flatmap(mutated),
    ),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_unauthenticated_bytes_never_run_a_handler(data: bytes, cuts: list[int]) -> None:
    async def scenario() -> None:
        h = Harness()
        conn, transport = h.connect()
        h.feed(conn, transport, split(data, cuts))
        assert h.calls == []
        assert not conn.authed
        assert h.answers_ping()
        if not transport.closing:
            conn.connection_lost(None)
        assert h.server.connections == 0

    run(scenario())


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=6))
def test_open_server_survives_any_bytes(data: bytes, cuts: list[int]) -> None:
    async def scenario() -> None:
        h = Harness(secret=None)
        conn, transport = h.connect()
        h.feed(conn, transport, split(data, cuts))
        assert h.answers_ping()
        if not transport.closing:
            conn.connection_lost(None)

    run(scenario())


def authenticate(conn: _ServerConnection, transport: FakeTransport) -> tuple[bytes, bytes]:
    """The handshake through the fake transport; the (c2s, s2c) session keys."""
    unpacker = msgpack.Unpacker(raw=False)
    conn.data_received(msgpack.packb([0, 1, "auth.challenge", []]))
    unpacker.feed(bytes(transport.out))
    nonce = next(unpacker)[3]
    mine = b"c" * 32
    start = len(transport.out)
    conn.data_received(
        msgpack.packb([0, 2, "auth.prove", [mine, auth.client_proof(SECRET, nonce, mine)]])
    )
    unpacker.feed(bytes(transport.out[start:]))
    assert next(unpacker)[:3] == [1, 2, None]
    assert conn.authed and conn.framer.sealed
    return auth.session_keys(SECRET, nonce, mine)


@FUZZ
@given(
    st.integers(min_value=1, max_value=5),
    st.data(),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_tampered_sealed_stream_runs_only_the_untouched_prefix(
    n: int, data: st.DataObject, cuts: list[int]
) -> None:
    async def scenario() -> None:
        h = Harness()
        conn, transport = h.connect()
        c2s, _ = authenticate(conn, transport)
        mac = auth.FrameMac(c2s)
        frames = []
        for i in range(n):
            frame = msgpack.packb([0, 100 + i, "record", [i]])
            frames.append(frame + mac.tag(frame))
        stream = b"".join(frames)
        bad = data.draw(mutated(stream))
        first_diff = next(
            (k for k, (a, b) in enumerate(zip(stream, bad, strict=False)) if a != b),
            min(len(stream), len(bad)),
        )
        ends = [sum(len(f) for f in frames[: i + 1]) for i in range(n)]
        expected = [i for i in range(n) if ends[i] <= first_diff]
        h.feed(conn, transport, split(bad, cuts))
        assert h.calls == expected
        s = h.server.stats
        if transport.closing:  # closed for the altered frame, and counted
            assert s["mac_failures"] + s["malformed_frames"] + s["oversized_frames"] == 1
        elif len(expected) < n and len(bad) >= len(stream):
            # nothing refused yet: the alteration left a frame incomplete (frame_timeout's job)
            assert conn.framer.pending_bytes > 0
        assert h.answers_ping()
        if not transport.closing:
            conn.connection_lost(None)

    run(scenario())


@FUZZ
@given(st.lists(st.sampled_from(["replay", "swap", "drop"]), min_size=1, max_size=3))
def test_replayed_swapped_or_dropped_frames_are_refused(ops: list[str]) -> None:
    async def scenario() -> None:
        h = Harness()
        conn, transport = h.connect()
        c2s, _ = authenticate(conn, transport)
        mac = auth.FrameMac(c2s)
        frames = []
        for i in range(4):
            frame = msgpack.packb([0, i, "record", [i]])
            frames.append(frame + mac.tag(frame))
        order = list(range(4))
        for op in ops:
            if op == "replay":
                order.insert(1, order[0])
            elif op == "swap":
                order[0], order[1] = order[1], order[0]
            else:
                order.pop(0)
        h.feed(conn, transport, [b"".join(frames[i] for i in order)])
        prefix = 0
        while prefix < len(order) and order[prefix] == prefix:
            prefix += 1
        assert h.calls == list(range(prefix))
        assert transport.closing == (order != list(range(4))[: len(order)])
        assert h.answers_ping()

    run(scenario())
