"""Fuzzing running peers on their three surfaces: HTTP, msgpack-RPC over TCP, gossip over UDP.

``run_fuzz`` drives at least ``cases`` inputs per surface against loopback peers and reports,
per surface, what came back: HTTP statuses (a 5xx is a finding), RPC error codes (``internal``
is the RPC's 5xx: a handler raised something it did not mean to), how many gossip datagrams
the peers received and dropped by cause, plus, for every peer, whether its process exited,
how many tracebacks its log gained, and whether it still answers ``/healthz`` and a real
``/v1/generate`` afterwards.

Inputs are seeded (``random.Random(seed)``) and come in three kinds on every surface: purely
random bytes, well-formed messages with random or hostile values (huge, negative, wrong-typed,
deeply nested, NaN, long strings), and byte-level mutations (flips, insertions, deletions,
truncations, splices) of valid messages. The fuzzer probes validation, not capacity: the valid
requests it sends ask for at most 2 images of 2 steps, and the hostile values it puts in fields
are invalid or tiny, so that 100,000 cases stay a matter of minutes. Capacity and memory under
real load are the soak scenario's job.

Speed: HTTP requests go one at a time on each of ``concurrency`` keep-alive connections (the
server answers a pipelined batch only up to the first request that closes the connection, so
pipelining would lose cases); RPC frames are written in batches of ``RPC_BATCH`` per connection
and their answers read back by msgid; gossip datagrams go in bursts of ``GOSSIP_BURST``, each
followed by a real ping whose ack proves the peer has read the burst (loopback UDP keeps order
per socket pair), so that the socket buffer never silently drops fuzz input.

Only loopback addresses are accepted. Nothing here is imported by the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import socket
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

SURFACES = ("http", "rpc", "gossip")
RPC_BATCH = 32
GOSSIP_BURST = 64
TRACEBACK = b"Traceback (most recent call last)"


class FuzzError(Exception):
    """A target that cannot be fuzzed (not loopback, not answering)."""


@dataclass
class Target:
    """One running peer: its HTTP and RPC/gossip addresses, and where it logs (if known)."""

    name: str
    http: tuple[str, int]
    rpc: tuple[str, int]
    log_path: Path | None = None
    alive: Callable[[], bool] | None = None  # False once the process has exited
    _log_offset: int = 0

    def mark_log(self) -> None:
        if self.log_path is not None and self.log_path.exists():
            self._log_offset = self.log_path.stat().st_size

    def new_tracebacks(self) -> int | None:
        if self.log_path is None:
            return None
        if not self.log_path.exists():
            return 0
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().count(TRACEBACK)


def require_loopback(host: str) -> None:
    try:
        addr = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError) as exc:
        raise FuzzError(f"cannot resolve {host!r}: {exc}") from None
    if not addr.is_loopback:
        raise FuzzError(f"{host} is not a loopback address: the fuzzer only targets this machine")


# -- values ------------------------------------------------------------------------------------

HOSTILE_INTS = (0, -1, 1, 2**31, 2**32, 2**63 - 1, -(2**63), 2**64 - 1, 10**6)
HOSTILE_STRS = ("", "x" * 4096, "\u0000", "\ud7ff\ue000", "../../etc/passwd", "%s%n", "NaN")


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON/msgpack-able value that a validator should refuse or handle."""
    k = rng.randrange(12)
    if k == 0:
        return rng.choice(HOSTILE_INTS)
    if k == 1:
        return rng.randint(-(2**40), 2**40)
    if k == 2:
        return rng.choice((0.5, -0.0, 1e308, -1e-308, 3.5))
    if k == 3:
        return rng.choice(HOSTILE_STRS)
    if k == 4:
        n = rng.randrange(0, 24)
        return "".join(rng.choice(string.printable) for _ in range(n))
    if k == 5:
        return None
    if k == 6:
        return rng.random() < 0.5
    if k == 7 and depth < 4:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if k == 8 and depth < 4:
        return {
            rng.choice(("a", "count", "job", "kind", "")): hostile_value(rng, depth + 1)
            for _ in range(rng.randrange(4))
        }
    if k == 9:
        nest = rng.randrange(1, 300)
        value: Any = 1
        for _ in range(nest):
            value = [value]
        return value
    if k == 10:
        return rng.randbytes(rng.randrange(0, 32))
    return rng.randint(0, 2)  # small: when it lands in a valid request, that stays cheap


def mutate_value(rng: random.Random, value: Any) -> Any:
    """``value`` with one nested element replaced, added or removed."""
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        out = dict(value)
        r = rng.random()
        if r < 0.6:
            out[key] = mutate_value(rng, out[key]) if rng.random() < 0.3 else hostile_value(rng)
        elif r < 0.8:
            del out[key]
        else:
            out[rng.choice(("extra", key + "_", "\x00"))] = hostile_value(rng)
        return out
    if isinstance(value, list) and value:
        out_l = list(value)
        i = rng.randrange(len(out_l))
        r = rng.random()
        if r < 0.6:
            out_l[i] = mutate_value(rng, out_l[i]) if rng.random() < 0.3 else hostile_value(rng)
        elif r < 0.8:
            del out_l[i]
        else:
            out_l.insert(i, hostile_value(rng))
        return out_l
    return hostile_value(rng)


def mutate_bytes(rng: random.Random, data: bytes, donor: bytes = b"") -> bytes:
    """Byte-level mutations: flips, insertions, deletions, truncation, a splice from ``donor``."""
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(6)
        n = len(buf)
        if op == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xDD, 0xDF, 0xCF))
        elif op == 2:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 8))
        elif op == 3 and n:
            i = rng.randrange(n)
            del buf[i : i + rng.randrange(1, 8)]
        elif op == 4 and n:
            del buf[rng.randrange(n) :]
        elif donor:
            i, j = rng.randrange(len(donor)), rng.randrange(n + 1)
            buf[j:j] = donor[i : i + rng.randrange(1, 32)]
    return bytes(buf)


# -- HTTP --------------------------------------------------------------------------------------

HTTP_PATHS = ("/v1/generate", "/v1/repair", "/v1/cluster", "/healthz", "/metrics", "/v1/jobs/x")
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
CTYPES = ("application/json", "text/plain", "application/octet-stream", "", "multipart/form-data")


def _dumps(value: Any) -> bytes:
    """JSON of a fuzz value (bytes, which JSON lacks, as latin-1 text)."""
    return json.dumps(value, default=lambda b: bytes(b).decode("latin-1")).encode()


def valid_generate(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"count": rng.randint(1, 2), "steps": rng.randint(1, 2)}
    body["seed"] = rng.randint(0, 2**31 - 1)
    if rng.random() < 0.5:
        body["label"] = rng.randint(0, 9)
    if rng.random() < 0.5:
        body["mode"] = rng.choice(("auto", "batch", "local"))
    if rng.random() < 0.3:
        body["policy"] = rng.choice(("greedy", "local", "equal", "onnx", "random"))
    return body


def _png16(rng: random.Random) -> str:
    import base64
    import io

    import numpy as np
    from PIL import Image

    arr = np.frombuffer(rng.randbytes(16 * 16), dtype=np.uint8).reshape(16, 16)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@dataclass
class HttpCase:
    raw: bytes  # the whole request as sent
    shut_after: bool = False  # a partial request: half-close after sending it
    valid: bool = False
    alone: bool = False  # on a connection of its own (a HEAD: is a body due after its answer?)


def http_case(rng: random.Random, pngs: Sequence[str]) -> HttpCase:
    """One HTTP/1.1 request: random, hostile or mutated; about 2% valid and cheap."""
    r = rng.random()
    method, path, ctype = "POST", "/v1/generate", "application/json"
    body: bytes
    valid = False
    if r < 0.02:
        body = json.dumps(valid_generate(rng)).encode()
        valid = True
    elif r < 0.35:
        seed: dict[str, Any] = valid_generate(rng)
        if rng.random() < 0.3:
            path = "/v1/repair"
            seed = {"image": rng.choice(pngs), "mask": rng.choice(pngs), "steps": 1}
        body = _dumps(mutate_value(rng, seed))
    elif r < 0.5:
        base = json.dumps(valid_generate(rng)).encode()
        body = mutate_bytes(rng, base, donor=b'{}[]",:0123456789eE.-+nulltruefalse\\u')
    elif r < 0.6:
        body = rng.choice(
            (
                b'{"count": ' + b"9" * rng.randrange(20, 6000) + b"}",
                b"[" * rng.randrange(500, 120_000),
                b'{"a":' * rng.randrange(500, 50_000) + b"1",
                b'{"count": NaN}',
                b'{"count": -Infinity, "steps": 1e999}',
                b'{"count": 1, "count": 2}',
                b'"just a string"',
                b"\xff\xfe{\x00}\x00",
                b"",
            )
        )
    elif r < 0.7:
        body = rng.randbytes(rng.randrange(0, 512))
    else:
        method = rng.choice(HTTP_METHODS)
        path = rng.choice(HTTP_PATHS)
        if rng.random() < 0.5:
            path = mutate_bytes(rng, path.encode(), donor=b"/%?#.\x00 ").decode("latin-1")
        ctype = rng.choice(CTYPES)
        body = _dumps(hostile_value(rng)) if method != "GET" else b""
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        path = "/" + path.replace(" ", "%20").replace("\r", "").replace("\n", "")
    headers = [("Host", "fuzz"), ("Connection", "keep-alive")]
    if ctype:
        headers.append(("Content-Type", ctype))
    hr = rng.random()
    shut = False
    length = len(body)
    if hr < 0.03:
        length = len(body) + rng.randrange(1, 4096)  # a partial body: then half-close
        shut = True
    elif hr < 0.05:
        headers.append(("X-Fuzz", "v" * rng.randrange(100, 20_000)))
    elif hr < 0.07:
        headers.append((rng.choice(("Expect", "Accept", "Authorization")), "\x01garbage"))
    elif hr < 0.08:
        body = b"x" * (5 * 1024 * 1024)  # past the default 4 MiB limit
        length = len(body)
    elif hr < 0.10:
        headers.append(("Accept", "image/png"))
    elif hr < 0.12:
        headers.append(("Transfer-Encoding", "chunked"))
        chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n"
        body = chunk + (b"0\r\n\r\n" if rng.random() < 0.7 else b"zz\r\n")
        length = -1
        shut = True
    if length >= 0:
        headers.append(("Content-Length", str(length)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    raw = head.encode("latin-1", "replace") + b"\r\n" + body
    if rng.random() < 0.02:  # a mutated request head
        raw = mutate_bytes(rng, raw[: len(head)], donor=b"\r\n: /HTTP1.") + raw[len(head) :]
        shut = True
    return HttpCase(raw, shut, valid, alone=raw.startswith(b"HEAD "))


class _Closed(Exception):
    """The server closed the connection; ``empty``: before any byte of an answer."""

    def __init__(self, what: str, empty: bool = False) -> None:
        super().__init__(what)
        self.empty = empty


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _read_response(
    reader: asyncio.StreamReader, timeout: float, head_only: bool = False
) -> tuple[int, bool, bytes]:
    """(status, close, body) of one HTTP/1.1 response (``head_only``: the answer to a HEAD)."""
    try:
        async with asyncio.timeout(timeout):
            return await _read_response_in(reader, head_only)
    except asyncio.IncompleteReadError as exc:
        raise _Closed(f"closed after {exc.partial[:120]!r}", empty=not exc.partial) from None
    except (asyncio.LimitOverrunError, ValueError, IndexError) as exc:
        raise _Closed(f"{type(exc).__name__}: {exc}") from None


async def _read_response_in(
    reader: asyncio.StreamReader, head_only: bool
) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    close = hdrs.get("connection", "").lower() == "close"
    if head_only or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "content-length" in hdrs:
        body = await reader.readexactly(int(hdrs["content-length"]))
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
        close = True
    return status, close, body


@dataclass
class SurfaceReport:
    surface: str
    cases: int = 0
    bytes_sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0  # HTTP 5xx; RPC errors with code "internal"
    server_error_samples: list[str] = field(default_factory=list)
    no_answer: int = 0  # connection closed or timed out where an answer was due
    no_answer_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def finding(self, what: str) -> None:
        self.server_errors += 1
        if len(self.server_error_samples) < 5:
            self.server_error_samples.append(what[:300])

    def to_json(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "cases_per_s": round(self.cases / self.wall_s, 1) if self.wall_s else None,
            "wall_s": round(self.wall_s, 3),
            "bytes_sent": self.bytes_sent,
            "server_errors": self.server_errors,
            "server_error_samples": self.server_error_samples,
            "no_answer": self.no_answer,
            "no_answer_samples": self.no_answer_samples,
            "outcomes": dict(sorted(self.outcomes.items())),
            **self.extra,
        }


async def fuzz_http(
    targets: Sequence[Target], cases: int, rng: random.Random, concurrency: int, timeout: float
) -> SurfaceReport:
    rep = SurfaceReport("http")
    pngs = [_png16(rng) for _ in range(4)]
    queue = [http_case(rng, pngs) for _ in range(cases)]
    next_i = 0

    async def send(t: Target, case: HttpCase, conn: _Conn | None) -> tuple[_Conn, Any]:
        """Send ``case``; on a reused connection that the server had already closed (no byte
        of an answer came), send it once more on a fresh one."""
        for attempt in (0, 1):
            fresh = conn is None or case.shut_after or case.alone
            if fresh or conn is None:
                if conn is not None:
                    conn[1].close()
                conn = await asyncio.open_connection(*t.http)
            reader, writer = conn
            try:
                writer.write(case.raw)
                await writer.drain()
                if case.shut_after and writer.can_write_eof():
                    writer.write_eof()
                head_only = case.raw.startswith(b"HEAD ")
                return conn, await _read_response(reader, timeout, head_only)
            except (_Closed, ConnectionError) as exc:
                if not fresh and attempt == 0 and (not isinstance(exc, _Closed) or exc.empty):
                    writer.close()
                    conn = None
                    continue
                return conn, exc
            except TimeoutError as exc:
                return conn, exc
        raise AssertionError("unreachable")

    async def worker(t: Target) -> None:
        nonlocal next_i
        conn: _Conn | None = None
        try:
            while next_i < len(queue):
                case = queue[next_i]
                next_i += 1
                rep.cases += 1
                rep.bytes_sent += len(case.raw)
                conn, got = await send(t, case, conn)
                close = True
                if isinstance(got, TimeoutError):
                    rep.outcomes["timeout"] += 1
                    rep.no_answer += 1
                elif isinstance(got, _Closed | ConnectionError):
                    rep.outcomes["closed" if isinstance(got, _Closed) else "reset"] += 1
                    if not case.shut_after:
                        rep.no_answer += 1
                        if len(rep.no_answer_samples) < 5:
                            rep.no_answer_samples.append(f"{got}: {case.raw[:120]!r}")
                else:
                    status, close, body = got
                    rep.outcomes[str(status)] += 1
                    if status >= 500:
                        rep.finding(f"{status} {body[:200]!r} for {case.raw[:200]!r}")
                    if case.valid and status != 200:
                        rep.outcomes[f"valid_refused_{status}"] += 1
                if close or case.shut_after or case.alone:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(targets[i % len(targets)]) for i in range(concurrency)))
    rep.wall_s = time.perf_counter() - t0
    return rep


# -- RPC ---------------------------------------------------------------------------------------

RPC_METHODS = (
    "ping",
    "hello",
    "info",
    "run_share",
    "cancel",
    "gossip.push_pull",
    "auth.challenge",
    "auth.prove",
    "rpc.nothing",
    "",
)


def valid_share(rng: random.Random, job: str) -> dict[str, Any]:
    n = rng.randint(1, 2)
    return {
        "job": job,
        "share": {
            "kind": "generate",
            "labels": [rng.randint(0, 9) for _ in range(n)],
            "seeds": [rng.randint(0, 2**31 - 1) for _ in range(n)],
            "steps": rng.randint(1, 2),
            "scheduler": rng.choice(("ddim", "ddpm")),
        },
    }


def rpc_frame(rng: random.Random, msgid: int) -> tuple[bytes, bool]:
    """One well-formed msgpack frame and whether the server owes an answer by msgid."""
    r = rng.random()
    if r < 0.03:
        return msgpack.packb([0, msgid, "run_share", [valid_share(rng, f"fuzz-{msgid}")]]), True
    if r < 0.45:
        params = [mutate_value(rng, valid_share(rng, f"fuzz-{msgid}"))]
        if rng.random() < 0.2:
            params = mutate_value(rng, params)
        return msgpack.packb([0, msgid, "run_share", params]), True
    if r < 0.75:
        method = rng.choice(RPC_METHODS)
        params = [hostile_value(rng) for _ in range(rng.randrange(4))]
        return msgpack.packb([0, msgid, method, params]), True
    if r < 0.85:  # a notification: no answer due
        return msgpack.packb([2, rng.choice(RPC_METHODS), [hostile_value(rng)]]), False
    # wrong shapes that are still msgpack: a response, a short array, a map, a scalar
    obj = rng.choice(
        (
            [1, msgid, None, hostile_value(rng)],
            [0, msgid, "ping"],
            [0, -1, "ping", []],
            [0, msgid, 5, []],
            [0, msgid, "ping", {"not": "a list"}],
            [7, msgid],
            {"a": 1},
            hostile_value(rng),
        )
    )
    owed = isinstance(obj, list) and len(obj) in (3, 4) and obj[0] == 0 and obj[1] == msgid
    return msgpack.packb(obj), owed


def rpc_raw(rng: random.Random, seed_frame: bytes) -> bytes:
    """A frame the framer may refuse outright (then the connection is closed)."""
    r = rng.random()
    if r < 0.5:
        return mutate_bytes(rng, seed_frame, donor=b"\xc1\xdc\xdd\xde\xdf\xc4\xc5\xc6\xd9\xdb")
    if r < 0.7:
        return rng.randbytes(rng.randrange(1, 256))
    if r < 0.85:  # headers declaring huge lengths
        return rng.choice(
            (b"\xdd\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xc6\xff\xff\xff\xf0")
        )
    return b"\x91" * rng.randrange(100, 5000) + b"\x00"  # deep nesting


async def fuzz_rpc(
    targets: Sequence[Target], cases: int, rng: random.Random, concurrency: int, timeout: float
) -> SurfaceReport:
    rep = SurfaceReport("rpc")
    codes: Counter[str] = Counter()
    batches: list[tuple[list[tuple[int, bytes, bool]], bytes | None]] = []
    msgid = 0
    made = 0
    while made < cases:
        frames = []
        for _ in range(min(RPC_BATCH, cases - made)):
            msgid += 1
            frame, owed = rpc_frame(rng, msgid)
            frames.append((msgid, frame, owed))
            made += 1
        raw = None
        if made < cases and rng.random() < 0.5:
            raw = rpc_raw(rng, frames[-1][1])
            made += 1
        batches.append((frames, raw))
    next_b = 0

    async def worker(t: Target) -> None:
        nonlocal next_b
        while next_b < len(batches):
            frames, raw = batches[next_b]
            next_b += 1
            owed = {m for m, _, o in frames if o}
            payload = b"".join(f for _, f, _ in frames) + (raw or b"")
            rep.cases += len(frames) + (raw is not None)
            rep.bytes_sent += len(payload)
            try:
                reader, writer = await asyncio.open_connection(*t.rpc)
            except OSError:
                rep.outcomes["connect_failed"] += 1
                rep.no_answer += len(owed)
                continue
            try:
                writer.write(payload)
                await writer.drain()
                unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
                async with asyncio.timeout(timeout):
                    while owed:
                        data = await reader.read(65536)
                        if not data:
                            break
                        unpacker.feed(data)
                        for obj in unpacker:
                            if isinstance(obj, list) and len(obj) == 4 and obj[0] == 1:
                                owed.discard(obj[1])
                                err = obj[2]
                                code = err.get("code", "?") if isinstance(err, dict) else "ok"
                                codes[str(code) if err is not None else "ok"] += 1
                                if code == "internal":
                                    rep.finding(f"{err!r}")
                            else:
                                codes["notification"] += 1
            except TimeoutError:
                rep.outcomes["timeout"] += 1
            except (ConnectionError, msgpack.UnpackException, ValueError) as exc:
                rep.outcomes[type(exc).__name__] += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if owed:
                # a raw tail that kills the connection may cut off answers still being computed
                rep.outcomes["unanswered_after_close" if raw else "unanswered"] += len(owed)
                if raw is None:
                    rep.no_answer += len(owed)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(targets[i % len(targets)]) for i in range(concurrency)))
    rep.wall_s = time.perf_counter() - t0
    rep.outcomes.update({f"answer_{k}": v for k, v in codes.items()})
    return rep


# -- gossip ------------------------------------------------------------------------------------


def gossip_seeds(rng: random.Random, target: str) -> list[bytes]:
    """Valid plain datagram bodies (msgpack streams) about made-up peers."""
    from gossip import wire

    fake = [f"fz{i}" for i in range(4)]
    addr = ("127.0.0.1", 9)
    prim = [
        wire.encode_primary(wire.Ping(1, target, fake[0], addr)),
        wire.encode_primary(wire.Ack(2, fake[1])),
        wire.encode_primary(wire.Nack(3, fake[1])),
        wire.encode_primary(wire.PingReq(4, fake[2], addr, fake[0], addr)),
        wire.encode_primary(wire.Gossip(fake[3])),
    ]
    casts = [
        wire.encode_broadcast(wire.Suspect(fake[0], 1, fake[1])),
        wire.encode_broadcast(wire.Dead(fake[1], 2, fake[2])),
        wire.encode_broadcast(wire.Left(fake[2], 3)),
    ]
    out = []
    for p in prim:
        out.append(p + b"".join(rng.sample(casts, rng.randrange(len(casts) + 1))))
    return out


def gossip_case(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    from gossip.wire import MAGIC_PLAIN

    r = rng.random()
    seed = rng.choice(seeds)
    if r < 0.4:
        return MAGIC_PLAIN + mutate_bytes(rng, seed, donor=b"".join(seeds))
    if r < 0.7:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(seed)
        objs = [mutate_value(rng, o) if rng.random() < 0.6 else o for o in unpacker]
        body = b"".join(msgpack.packb(o) for o in objs)
        return MAGIC_PLAIN + body
    if r < 0.8:
        # (asyncio does not send an empty datagram: every case carries at least one byte)
        return rng.choice((MAGIC_PLAIN, b"\xa8", b"\xa9")) + rng.randbytes(rng.randrange(64))
    if r < 0.9:
        return rng.randbytes(rng.randrange(1, 1400))
    return MAGIC_PLAIN + seed[: rng.randrange(len(seed))]


class _AckWaiter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


async def fuzz_gossip(
    targets: Sequence[Target], cases: int, rng: random.Random, names: Sequence[str]
) -> SurfaceReport:
    from gossip import wire

    rep = SurfaceReport("gossip")
    loop = asyncio.get_running_loop()
    acked = unacked = 0
    t0 = time.perf_counter()
    per = [cases // len(targets) + (i < cases % len(targets)) for i in range(len(targets))]
    for t, name, n in zip(targets, names, per, strict=True):
        seeds = gossip_seeds(rng, name)
        transport, proto = await loop.create_datagram_endpoint(
            _AckWaiter, local_addr=("127.0.0.1", 0), remote_addr=t.rpc
        )
        here = transport.get_extra_info("sockname")
        try:
            sent = 0
            seq = 1_000_000
            while sent < n:
                for _ in range(min(GOSSIP_BURST, n - sent)):
                    data = gossip_case(rng, seeds)
                    transport.sendto(data)
                    rep.bytes_sent += len(data)
                    sent += 1
                seq += 1
                ping = wire.MAGIC_PLAIN + wire.encode_primary(
                    wire.Ping(seq, name, "fz-pacer", (here[0], here[1]))
                )
                transport.sendto(ping)
                while not proto.got.empty():
                    proto.got.get_nowait()
                try:
                    async with asyncio.timeout(1.0):
                        await proto.got.get()
                    acked += 1
                except TimeoutError:
                    unacked += 1
        finally:
            transport.close()
    rep.cases = sum(per)
    rep.wall_s = time.perf_counter() - t0
    rep.extra["bursts_acked"] = acked
    rep.extra["bursts_unacked"] = unacked
    return rep


# -- checks ------------------------------------------------------------------------------------


async def http_json(
    t: Target, method: str, path: str, body: Any = None, timeout: float = 60.0
) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(*t.http)
    try:
        writer.write(head.encode() + raw)
        await writer.drain()
        status, _close, data = await _read_response(reader, timeout)
    finally:
        writer.close()
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data.decode("utf-8", "replace")


async def metrics_samples(t: Target) -> dict[str, float]:
    status, text = await http_json(t, "GET", "/metrics", timeout=10.0)
    out: dict[str, float] = {}
    if status == 200 and isinstance(text, str):
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
    return out


async def gossip_answers(t: Target, name: str, tries: int = 3) -> bool:
    """Does the peer's gossip loop still ack a ping (``/healthz`` does not show a dead one)?"""
    from gossip import wire

    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _AckWaiter, local_addr=("127.0.0.1", 0), remote_addr=t.rpc
    )
    here = transport.get_extra_info("sockname")
    try:
        for seq in range(tries):
            ping = wire.Ping(2_000_000 + seq, name, "fz-check", (here[0], here[1]))
            transport.sendto(wire.MAGIC_PLAIN + wire.encode_primary(ping))
            try:
                async with asyncio.timeout(1.0):
                    await proto.got.get()
                return True
            except TimeoutError:
                continue
        return False
    finally:
        transport.close()


async def peer_check(t: Target, name: str) -> dict[str, Any]:
    """Is the process up, does it answer /healthz, a gossip ping and a real generate request?"""
    out: dict[str, Any] = {
        "process_alive": t.alive() if t.alive is not None else None,
        "new_tracebacks": t.new_tracebacks(),
    }
    try:
        out["gossip_ping"] = await gossip_answers(t, name)
        status, body = await http_json(t, "GET", "/healthz", timeout=10.0)
        out["healthz"] = status
        req = {"count": 2, "steps": 2, "seed": 7}
        status, body = await http_json(t, "POST", "/v1/generate", req, timeout=120.0)
        images = (body.get("result") or {}).get("images") if isinstance(body, dict) else None
        out["generate"] = status
        out["generate_images"] = len(images or [])
        if status != 200:
            out["generate_error"] = body.get("error") if isinstance(body, dict) else str(body)
    except (OSError, TimeoutError, _Closed, ValueError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _drops(samples: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith("amcoedge_drops_total")}


async def fuzz_surface(
    surface: str,
    targets: Sequence[Target],
    cases: int,
    seed: int,
    concurrency: int = 16,
    timeout: float = 30.0,
) -> dict[str, Any]:
    rng = random.Random(f"{seed}:{surface}")
    names = []
    for t in targets:
        status, body = await http_json(t, "GET", "/healthz", timeout=10.0)
        if status != 200 or not isinstance(body, dict):
            raise FuzzError(f"{t.name} does not answer /healthz ({status})")
        names.append(str(body.get("name", t.name)))
        t.mark_log()
    before = [await metrics_samples(t) for t in targets]
    if surface == "http":
        rep = await fuzz_http(targets, cases, rng, concurrency, timeout)
    elif surface == "rpc":
        rep = await fuzz_rpc(targets, cases, rng, concurrency, timeout)
    elif surface == "gossip":
        rep = await fuzz_gossip(targets, cases, rng, names)
    else:
        raise FuzzError(f"unknown surface {surface!r}; one of {SURFACES}")
    after = [await metrics_samples(t) for t in targets]
    out = rep.to_json()
    if surface == "gossip":
        key = 'amcoedge_gossip_events_total{event="datagrams_in"}'
        out["datagrams_received"] = sum(
            a.get(key, 0) - b.get(key, 0) for a, b in zip(after, before, strict=True)
        )
    drops: Counter[str] = Counter()
    for a, b in zip(after, before, strict=True):
        for k, v in _drops(a).items():
            if v - b.get(k, 0):
                drops[k.removeprefix("amcoedge_drops_total")] += int(v - b.get(k, 0))
    out["drops"] = dict(sorted(drops.items()))
    peers = {t.name: await peer_check(t, n) for t, n in zip(targets, names, strict=True)}
    out["peers"] = peers
    out["crashes"] = sum(1 for p in peers.values() if p["process_alive"] is False)
    out["tracebacks"] = sum(p["new_tracebacks"] or 0 for p in peers.values())
    out["healthy_after"] = all(
        p.get("healthz") == 200
        and p.get("gossip_ping") is True
        and p.get("generate") == 200
        and p.get("generate_images") == 2
        for p in peers.values()
    )
    out["clean"] = (
        out["crashes"] == 0
        and out["tracebacks"] == 0
        and rep.server_errors == 0
        and out["healthy_after"]
    )
    return out


async def run_fuzz(
    targets: Sequence[Target],
    cases: int,
    surfaces: Sequence[str] = SURFACES,
    seed: int = 0,
    concurrency: int = 16,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Fuzz each surface in turn; the report per surface, and ``clean`` overall."""
    if cases < 1:
        raise FuzzError("cases must be at least 1")
    for t in targets:
        require_loopback(t.http[0])
        require_loopback(t.rpc[0])
    report: dict[str, Any] = {
        "cases_per_surface": cases,
        "seed": seed,
        "peers": [t.name for t in targets],
        "surfaces": {},
    }
    for s in surfaces:
        report["surfaces"][s] = await fuzz_surface(s, targets, cases, seed, concurrency, timeout)
    report["clean"] = all(v["clean"] for v in report["surfaces"].values())
    return report
