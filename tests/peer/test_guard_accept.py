"""The HTTP connection guard counts a connection's header deadline from its accept."""

from __future__ import annotations

import asyncio
from typing import Any

from peer.runtime.http import ConnectionGuard


class Tr(asyncio.BaseTransport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Server:
    """Stands in for aiohttp's ``web.Server``: ``connection_made`` is what a new
    connection's protocol calls on it."""

    def __init__(self) -> None:
        self.made: list[Any] = []

    def connection_made(self, handler: Any, transport: Any) -> None:
        self.made.append(transport)


def test_deadline_counts_from_accept_not_from_the_first_sweep() -> None:
    now = [0.0]
    attached = ConnectionGuard(10.0, lambda: now[0])
    server = Server()
    attached.attach(server)  # type: ignore[arg-type]
    unattached = ConnectionGuard(10.0, lambda: now[0])
    a, b = Tr(), Tr()
    server.connection_made(object(), a)  # accepted at 0 (the server's own hook still runs)
    assert server.made == [a]
    now[0] = 9.9  # first sweeps, 9.9 s after the accept
    assert attached.sweep([a]) == 0 and unattached.sweep([b]) == 0
    now[0] = 10.2
    assert attached.sweep([a]) == 1 and a.closed  # 10.2 s after its accept
    assert unattached.sweep([b]) == 0 and not b.closed  # only 0.3 s after its first sweep
