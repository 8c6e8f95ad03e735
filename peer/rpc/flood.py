"""An idle-connection flood against an RPC port, and whether peers are still served.

``idle_flood`` opens ``connections`` TCP connections to ``(host, port)`` from one source
address, each sending one ``ping`` and then nothing (idle, as a peer's unused pooled
connection would be), then connects an ``RpcClient`` from another source address and calls
``ping``. It then waits for the server to close the flood's connections and reports when it
did. Loopback makes the second source easy: all of 127.0.0.0/8 is local on Linux, so
``127.0.0.2`` reaches a server bound to ``127.0.0.1`` or ``0.0.0.0``.

Used by the tests (with timeouts under a second) and by ``amcoedge bench rpc-flood``
against a running peer. Times are measured with the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import msgpack

from peer.rpc.client import RpcClient
from peer.rpc.errors import RpcError
from peer.rpc.limits import Limits

_PING = msgpack.packb([0, 1, "ping", []])


@dataclass
class FloodReport:
    connections: int  # flood connections attempted
    source: str
    probe_source: str
    connected: int = 0  # TCP connects that succeeded
    connect_errors: int = 0  # TCP connects that failed (e.g. the listen backlog overflowed)
    answered: int = 0  # flood connections whose ping was answered (the server held them)
    # most flood connections held at once (answered, not yet closed), as seen by the client;
    # the server held at least these at that moment. A server that closes idle connections
    # admits more than its per-source cap over a slow flood, never more at once.
    peak_held: int = 0
    refused: int = 0  # flood connections closed at once with a ``busy`` error
    refusal_codes: dict[str, int] = field(default_factory=dict)
    probe_ok: bool = False
    probe_seconds: float | None = None  # connect + handshake + ping from probe_source
    probe_error: str | None = None
    closed_by_server: int = 0  # held connections the server closed within wait_s
    still_open: int = 0  # held connections still open after wait_s
    close_codes: dict[str, int] = field(default_factory=dict)
    last_close_s: float | None = None  # seconds from the ping answer to the latest close

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FloodConn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.transport: asyncio.Transport | None = None
        self.answered_at: float | None = None
        self.error_code: str | None = None
        self.closed = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_PING)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        for msg in self.unpacker:
            if not isinstance(msg, list) or not msg:
                continue
            if msg[0] == 1 and self.answered_at is None:
                self.answered_at = self.loop.time()
            elif msg[0] == 2 and len(msg) == 3 and msg[1] == "rpc.error":
                err = msg[2][0] if msg[2] else None
                code = err.get("code") if isinstance(err, dict) else None
                self.error_code = str(code)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(self.loop.time())


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft open-file limit to ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def idle_flood(
    host: str,
    port: int,
    connections: int = 1000,
    *,
    source: str = "127.0.0.1",
    probe_source: str = "127.0.0.2",
    secret: bytes | str | None = None,
    wait_s: float = 5.0,
    settle_s: float = 2.0,
    limits: Limits | None = None,
    batch: int = 100,
) -> FloodReport:
    """Flood ``(host, port)`` with idle connections, probe from another address, wait ``wait_s``
    for the server to close what it held (``settle_s`` bounds waiting for each answer)."""
    loop = asyncio.get_running_loop()
    raise_fd_limit(2 * connections + 256)
    report = FloodReport(connections=connections, source=source, probe_source=probe_source)
    conns: list[_FloodConn] = []

    async def open_one() -> None:
        try:
            _, proto = await loop.create_connection(
                lambda: _FloodConn(loop), host, port, local_addr=(source, 0)
            )
        except OSError:
            report.connect_errors += 1
            return
        conns.append(proto)

    try:
        for start in range(0, connections, batch):
            await asyncio.gather(
                *(open_one() for _ in range(start, min(connections, start + batch)))
            )
        report.connected = len(conns)
        # wait until each connection is answered or closed (or settle_s passes)
        deadline = loop.time() + settle_s
        while loop.time() < deadline and any(
            c.answered_at is None and not c.closed.done() for c in conns
        ):
            await asyncio.sleep(0.01)
        held = [c for c in conns if c.answered_at is not None]
        report.answered = len(held)
        for c in conns:
            if c.answered_at is None and c.closed.done():
                report.refused += 1
                code = c.error_code or "closed"
                report.refusal_codes[code] = report.refusal_codes.get(code, 0) + 1
        t0 = loop.time()
        try:
            client = await RpcClient.connect(
                host, port, secret=secret, limits=limits, local_addr=(probe_source, 0)
            )
            try:
                report.probe_ok = await client.call("ping") == "pong"
            finally:
                await client.close()
            report.probe_seconds = round(loop.time() - t0, 4)
        except RpcError as exc:
            report.probe_error = str(exc)
        # wait for the server to close the held ones
        pending = [c.closed for c in held if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=wait_s)
        latest: float | None = None
        for c in held:
            if c.closed.done():
                report.closed_by_server += 1
                code = c.error_code or "closed"
                report.close_codes[code] = report.close_codes.get(code, 0) + 1
                assert c.answered_at is not None
                gap = c.closed.result() - c.answered_at
                latest = gap if latest is None else max(latest, gap)
            else:
                report.still_open += 1
        report.last_close_s = round(latest, 3) if latest is not None else None
        events = sorted(
            [(c.answered_at, 1) for c in held if c.answered_at is not None]
            + [(c.closed.result(), -1) for c in held if c.closed.done()],
            key=lambda e: (e[0], e[1]),  # a close at the same instant counts first
        )
        level = 0
        for _, step in events:
            level += step
            report.peak_held = max(report.peak_held, level)
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
    return report
