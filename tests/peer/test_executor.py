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
    now = [100.0]
    ex = Executor(max_queued=2, threads=1, clock=lambda: now[0])
    await ex.start()
    gate, started = threading.Event(), threading.Event()

    def blocked() -> bool:
        started.set()
        return gate.wait()

    try:
        first = asyncio.ensure_future(ex.run(blocked, 1.0, "a"))
        assert await asyncio.to_thread(started.wait, 10.0)  # the worker is running it
        second = asyncio.ensure_future(ex.run(lambda: 2, 2.0, "b"))
        third = asyncio.ensure_future(ex.run(lambda: 3, 3.0, "c"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await ex.run(lambda: 4, 1.0, "d")
        assert ex.queued_s() == pytest.approx(6.0)  # 1 running (not yet aged) + 2 + 3 queued
        now[0] += 0.25
        assert ex.queued_s() == pytest.approx(5.75)  # the running share ages on the clock
        now[0] += 5.0
        assert ex.queued_s() == pytest.approx(5.0)  # overdue: counted as 0, not negative
        assert ex.active == 3
        assert ex.cancel("b") == 1
        gate.set()
        assert (await first)[0] is True
        with pytest.raises(asyncio.CancelledError):
            await second
        done, stats = await third
        assert done == 3
        assert stats.queue_s == pytest.approx(5.25)  # enqueued at 100.0, started at 105.25
        assert ex.queued_s() == 0.0
    finally:
        gate.set()
        await ex.close()


async def test_a_later_hop_queues_where_its_request_was_planned() -> None:
    """A share that says its request has been under way ``waited_s`` runs behind the work queued
    here that long ago and ahead of what came later; the rest keep arrival order."""
    now = [100.0]
    ex = Executor(max_queued=8, threads=1, clock=lambda: now[0])
    await ex.start()
    gate, started = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocked() -> None:
        started.set()
        gate.wait()

    try:
        first = asyncio.ensure_future(ex.run(blocked, 1.0, "busy"))
        assert await asyncio.to_thread(started.wait, 10.0)
        runs = [asyncio.ensure_future(ex.run(lambda: ran.append("a"), 1.0, "a"))]  # at 100
        await asyncio.sleep(0)
        now[0] = 101.0
        runs.append(asyncio.ensure_future(ex.run(lambda: ran.append("b"), 1.0, "b")))
        await asyncio.sleep(0)
        now[0] = 102.0  # planned at 100.5, its second hop arrives now
        hop = ex.run(lambda: ran.append("hop"), 1.0, "c", waited_s=1.5)
        runs.append(asyncio.ensure_future(hop))
        await asyncio.sleep(0)
        runs.append(asyncio.ensure_future(ex.run(lambda: ran.append("d"), 1.0, "d")))
        await asyncio.sleep(0)
        gate.set()
        await first
        await asyncio.gather(*runs)
        assert ran == ["a", "hop", "b", "d"]
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


async def test_cancelling_one_share_leaves_the_jobs_other_share_here_running() -> None:
    ex = Executor(max_queued=8, threads=1)
    await ex.start()
    gate, started = threading.Event(), threading.Event()

    def blocked() -> str:
        started.set()
        gate.wait(30.0)
        return "other job"

    try:
        busy = asyncio.ensure_future(ex.run(blocked, 1.0, "other"))
        assert await asyncio.to_thread(started.wait, 10.0)
        # two shares of job "j" queued behind it on this holder
        first = asyncio.ensure_future(ex.run(lambda: "first", 1.0, "j", "s1"))
        second = asyncio.ensure_future(ex.run(lambda: "second", 1.0, "j", "s2"))
        await asyncio.sleep(0)
        assert ex.cancel("j", "s9") == 0  # no such share: nothing dropped
        assert ex.cancel("other", "s1") == 0  # the id belongs to job "j"
        assert ex.cancel("j", "s1") == 1
        assert ex.cancel("j", "s1") == 0  # already dropped
        gate.set()
        assert (await busy)[0] == "other job"
        with pytest.raises(asyncio.CancelledError):
            await first
        value, _ = await second  # ran to completion
        assert value == "second"
        assert ex.completed == 2
    finally:
        gate.set()
        await ex.close()


async def test_a_job_wide_cancel_still_drops_every_share_of_the_job() -> None:
    ex = Executor(max_queued=8, threads=1)
    await ex.start()
    gate, started = threading.Event(), threading.Event()

    def blocked() -> None:
        started.set()
        gate.wait(30.0)

    try:
        busy = asyncio.ensure_future(ex.run(blocked, 1.0, "other"))
        assert await asyncio.to_thread(started.wait, 10.0)
        shares = [asyncio.ensure_future(ex.run(lambda: 1, 1.0, "j", f"s{i}")) for i in (1, 2)]
        plain = asyncio.ensure_future(ex.run(lambda: 1, 1.0, "j"))  # sent without an id
        await asyncio.sleep(0)
        assert ex.cancel("j") == 3
        gate.set()
        await busy
        for f in (*shares, plain):
            with pytest.raises(asyncio.CancelledError):
                await f
    finally:
        gate.set()
        await ex.close()


async def test_the_backlog_follows_how_long_shares_really_take_here() -> None:
    now = [0.0]
    ex = Executor(max_queued=8, threads=1, clock=lambda: now[0])
    await ex.start()

    def takes(seconds: float) -> None:
        now[0] += seconds  # the share runs this long on the virtual clock

    try:
        assert ex.backlog_ratio == 1.0
        for _ in range(12):  # shares predicted 1 s that take 2 s
            await ex.run(lambda: takes(2.0), 1.0, "slow")
        assert ex.backlog_ratio == pytest.approx(2.0, rel=0.02)
        warm = ex.backlog_ratio
        for _ in range(5):  # 1-step warm-ups (predicted 10 ms) that take 50 ms barely move it
            await ex.run(lambda: takes(0.05), 0.01, "warm-up")
        assert ex.backlog_ratio == pytest.approx(warm, rel=0.25)
        gate, started = threading.Event(), threading.Event()

        def blocked() -> None:
            started.set()
            gate.wait()

        running = asyncio.ensure_future(ex.run(blocked, 1.0, "a"))
        assert await asyncio.to_thread(started.wait, 10.0)
        queued = asyncio.ensure_future(ex.run(lambda: None, 1.0, "b"))
        await asyncio.sleep(0)
        r = ex.backlog_ratio
        assert ex.queued_s() == pytest.approx(2 * r)  # both at this peer's ratio
        now[0] += 1.5  # past its 1 s prediction, not past what this peer takes
        assert ex.queued_s() == pytest.approx(2 * r - 1.5)
        gate.set()
        await running
        await queued
    finally:
        await ex.close()
