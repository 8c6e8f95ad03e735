"""The executor: the diffusion backend in ONE worker thread, fed by a bounded queue of shares.

Blocking work (torch) never runs on the event loop. Shares run one at a time, in the order their
requests were planned (below), on a dedicated thread whose torch thread count is fixed at start
(split results are bit-identical only between peers with the same thread count). The executor
keeps the predicted seconds of queued and running work, which the peer publishes through gossip
as its backlog.

Each share's prediction comes from the cost model of its kind, and some kinds run long (a busy
host, tile repairs predicted ~3x short), so the backlog is the queued predictions times this
peer's own recent ``actual / predicted`` (an EWMA of its log over completed shares, each
weighted by its predicted seconds up to ``BACKLOG_REF_S`` so that 1-step warm-ups barely move
it), and a running share that has overrun counts what that ratio still gives it.

Order: a share sent when its request was planned queues in arrival order. One sent later, a
chain's next hop or a re-planned share, says how long its request has been under way
(``waited_s``) and takes the place it would have had at planning: behind the work that was
queued here then, ahead of what came after. The plan counted on that place: a chain's second hop
otherwise waited behind every repair that reached its peer during the first hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from peer.core.errors import Overloaded

T = TypeVar("T")

BACKLOG_ALPHA = 0.3  # EWMA weight of one full-weight share in the backlog's actual/predicted
BACKLOG_REF_S = 0.2  # a share predicted this long or longer counts fully
BACKLOG_LIMITS = (0.5, 5.0)  # bounds of the backlog's actual/predicted


@dataclass
class _Item:
    fn: Callable[[], Any]
    predicted_s: float
    job: str
    enqueued: float
    future: asyncio.Future[Any]
    share: str | None = None  # the origin's id of this share (None: not given)
    order: float = 0.0  # its place in the queue: when its request was planned, on our clock


@dataclass(frozen=True)
class RunStats:
    queue_s: float  # time spent waiting in the queue
    compute_s: float  # time spent in the worker thread


@dataclass
class _Running:
    item: _Item
    started: float


@dataclass
class Executor:
    max_queued: int = 128
    threads: int = 1
    _pool: ThreadPoolExecutor | None = None
    _queue: asyncio.PriorityQueue[tuple[float, int, _Item]] | None = None
    _task: asyncio.Task[None] | None = None
    _running: _Running | None = None
    _waiting: list[_Item] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    busy_s: float = 0.0
    on_change: Callable[[], None] | None = None  # called on the loop when the backlog changes
    clock: Callable[[], float] = time.monotonic  # injectable for tests on virtual time
    _log_ratio: float = 0.0  # EWMA of log(actual / predicted) over completed shares
    _seq: int = 0  # ties in ``order`` keep arrival order

    @property
    def backlog_ratio(self) -> float:
        """This peer's recent actual over predicted seconds per share (1 until it has run)."""
        return math.exp(self._log_ratio)

    def _learn_ratio(self, predicted_s: float, actual_s: float) -> None:
        if predicted_s <= 0 or actual_s <= 0:
            return
        lo, hi = BACKLOG_LIMITS
        x = math.log(min(max(actual_s / predicted_s, lo), hi))
        w = BACKLOG_ALPHA * min(1.0, predicted_s / BACKLOG_REF_S)
        self._log_ratio += w * (x - self._log_ratio)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a faulty listener must not stop the executor
                self.on_change = None

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amcoedge-exec")
        await self.call(self._pin_threads)
        self._queue = asyncio.PriorityQueue(self.max_queued)
        self._task = asyncio.create_task(self._worker(), name="amcoedge-executor")

    def _pin_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread directly (start-up work: loading, calibration)."""
        assert self._pool is not None, "executor not started"
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def run(
        self,
        fn: Callable[[], T],
        predicted_s: float,
        job: str,
        share: str | None = None,
        waited_s: float = 0.0,
    ) -> tuple[T, RunStats]:
        """Queue ``fn`` as a share of ``job`` (``share``: its id, which ``cancel`` can name);
        wait for it. ``waited_s``: how long its request has been under way (the share queues
        behind what was here that long ago). Raises ``Overloaded`` when the queue is full."""
        if self._queue is None:
            raise RuntimeError("executor not started")
        loop = asyncio.get_running_loop()
        now = self.clock()
        item = _Item(fn, max(predicted_s, 0.0), job, now, loop.create_future(), share)
        item.order = now - max(waited_s, 0.0)
        self._seq += 1
        try:
            self._queue.put_nowait((item.order, self._seq, item))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.max_queued} shares already queued on this peer") from None
        self._waiting.append(item)
        self._changed()
        result: tuple[T, RunStats] = await item.future
        return result

    def cancel(self, job: str, share: str | None = None) -> int:
        """Drop the job's queued (not yet running) shares: every one, or only the one whose id
        is ``share`` (the job's other shares here keep their place). Returns how many."""
        n = 0
        for item in list(self._waiting):
            if item.job != job or (share is not None and item.share != share):
                continue
            if not item.future.done():
                item.future.cancel()
                n += 1
        return n

    def queued_s(self, now: float | None = None) -> float:
        """Predicted seconds of work queued or running here."""
        now = self.clock() if now is None else now
        ratio = self.backlog_ratio
        total = ratio * sum(i.predicted_s for i in self._waiting if not i.future.done())
        if self._running is not None:
            elapsed = now - self._running.started
            total += max(ratio * self._running.item.predicted_s - elapsed, 0.0)
        return total

    @property
    def active(self) -> int:
        return sum(1 for i in self._waiting if not i.future.done()) + (self._running is not None)

    async def _worker(self) -> None:
        assert self._queue is not None and self._pool is not None
        loop = asyncio.get_running_loop()
        while True:
            *_, item = await self._queue.get()
            with contextlib.suppress(ValueError):
                self._waiting.remove(item)
            if item.future.done():  # cancelled while queued
                continue
            started = self.clock()
            self._running = _Running(item, started)
            self._changed()
            try:
                value = await loop.run_in_executor(self._pool, item.fn)
            except Exception as exc:
                self.failed += 1
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                self.completed += 1
                done = self.clock()
                self._learn_ratio(item.predicted_s, done - started)
                if not item.future.done():
                    item.future.set_result(
                        (value, RunStats(queue_s=started - item.enqueued, compute_s=done - started))
                    )
            finally:
                self.busy_s += self.clock() - started
                self._running = None
                self._changed()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._waiting:
            if not item.future.done():
                item.future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
