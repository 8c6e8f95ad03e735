"""The client's shared deadline timer, on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from peer.rpc import RpcTimeout
from peer.rpc.client import _Deadlines


class VirtualLoop:
    """Just enough of a loop for ``_Deadlines``: ``time``, ``call_at`` and cancellation."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None], list[bool]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[[], None]) -> Any:
        flag = [False]
        self.timers.append((when, fn, flag))

        class Handle:
            def cancel(self) -> None:
                flag[0] = True

        return Handle()

    def advance(self, dt: float) -> None:
        self.now += dt
        while True:
            due = [t for t in self.timers if t[0] <= self.now and not t[2][0]]
            if not due:
                return
            due.sort(key=lambda t: t[0])
            _, fn, _ = due[0]
            self.timers.remove(due[0])
            fn()

    @property
    def armed(self) -> int:
        return sum(1 for t in self.timers if not t[2][0])


async def test_expiry_order_and_single_timer() -> None:
    vloop = VirtualLoop()
    deadlines = _Deadlines(vloop)  # type: ignore[arg-type]
    real = asyncio.get_running_loop()
    futs = {i: real.create_future() for i in range(4)}
    deadlines.add(0, 0.0, 5.0, futs[0], "a")
    deadlines.add(1, 0.0, 1.0, futs[1], "b")  # earlier: re-arms
    deadlines.add(2, 0.0, 3.0, futs[2], "c")  # later: no new timer
    deadlines.add(3, 0.0, 2.0, futs[3], "d")
    assert vloop.armed == 1
    deadlines.discard(3)  # finished early
    vloop.advance(1.5)
    assert futs[1].done() and not futs[0].done() and not futs[2].done()
    with pytest.raises(RpcTimeout, match=r"b got no answer within 1\.0s"):
        futs[1].result()
    assert vloop.armed == 1
    vloop.advance(1.0)  # t = 2.5: the discarded call does not fire
    assert not futs[3].done() and not futs[2].done()
    vloop.advance(1.0)  # t = 3.5
    assert futs[2].done() and not futs[0].done()
    vloop.advance(2.0)  # t = 5.5
    assert futs[0].done()
    assert vloop.armed == 0


async def test_done_futures_are_left_alone_and_close_disarms() -> None:
    vloop = VirtualLoop()
    deadlines = _Deadlines(vloop)  # type: ignore[arg-type]
    fut = asyncio.get_running_loop().create_future()
    fut.set_result("answered")
    deadlines.add(1, 0.0, 1.0, fut, "m")
    vloop.advance(2.0)
    assert fut.result() == "answered"
    other = asyncio.get_running_loop().create_future()
    deadlines.add(2, 2.0, 1.0, other, "n")
    deadlines.close()
    vloop.advance(5.0)
    assert not other.done()
