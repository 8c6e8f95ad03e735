"""The executor: one worker thread, bounded queue, cancellation, backlog accounting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from peer.core.errors import Overloaded
from peer.runtime.executor import Executor


async def test_runs_in_one_worker_thread_in_order() -> None:
    ex = Executor(max_queued=8, threads=1)
    await ex.start()
    try:
        seen: list[tuple[int, str]] = []

        def job(i: int) -> int:
            seen.append((i, threading.current_thread().name))
            return i * i

        results = await asyncio.gather(*(ex.run(lambda i=i: job(i), 0.1, "j") for i in range(5)))
        assert [r for r, _ in results] == [0, 1, 4, 9, 16]
        assert [i for i, _ in seen] == list(range(5))
        assert len({name for _, name in seen}) == 1
        assert seen[0][1] != threading.current_thread().name
        assert all(st.compute_s >= 0 and st.queue_s >= 0 for _, st in results)
        assert ex.completed == 5
    finally:
        await ex.close()


async def test_bounded_queue_backlog_and_cancel() -> None:
    ex = Executor(max_queued=2, threads=1)
    await ex.start()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(ex.run(gate.wait, 1.0, "a"))
        await asyncio.sleep(0.05)  # the worker picked it up and blocks on the gate
        second = asyncio.ensure_future(ex.run(lambda: 2, 2.0, "b"))
        third = asyncio.ensure_future(ex.run(lambda: 3, 3.0, "c"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await ex.run(lambda: 4, 1.0, "d")
        assert 5.0 <= ex.queued_s() <= 6.0
        assert ex.active == 3
        assert ex.cancel("b") == 1
        gate.set()
        assert (await first)[0] is True
        with pytest.raises(asyncio.CancelledError):
            await second
        assert (await third)[0] == 3
        assert ex.queued_s() == 0.0
    finally:
        gate.set()
        await ex.close()


async def test_errors_reach_the_caller() -> None:
    ex = Executor()
    await ex.start()
    try:

        def boom() -> None:
            raise ValueError("bad share")

        with pytest.raises(ValueError, match="bad share"):
            await ex.run(boom, 0.1, "x")
        assert (await ex.run(lambda: "still serving", 0.1, "y"))[0] == "still serving"
        assert ex.failed == 1
    finally:
        await ex.close()
