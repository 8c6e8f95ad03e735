"""Peers that share one machine's cores: CFS-like sharing capped by each peer's CPU quota.

A peer that computes asks for ``demand`` cores (its quota, at most its threads). When the busy
peers of a host ask for more than the host's ``cores``, the cores are water-filled among them as
the kernel's fair scheduler does for equal-weight threads: every busy peer gets an equal share,
a peer whose demand is below that share keeps only its demand and the rest is shared again. A
peer's *pace* is what it gets over what it asks for (1: uncontended); a share that needs ``w``
seconds at full pace takes ``w / pace`` while the pace holds.

:class:`SharedHost` runs that exactly as an event simulation: each peer serves its shares
first come first served, every busy peer progresses at its pace, and the paces change whenever
a peer starts or stops computing. ``project`` plays the queued work out with no further
arrivals, which is what a planner can know at a decision. Times in seconds; time is passed in.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def paces(demand: Sequence[float], cores: float) -> list[float]:
    """Each busy peer's pace (granted / demanded cores) when ``demand`` share ``cores``."""
    n = len(demand)
    if n == 0:
        return []
    if sum(demand) <= cores:
        return [1.0] * n
    grant = [0.0] * n
    left = list(range(n))
    free = cores
    while left:
        fair = free / len(left)
        small = [i for i in left if demand[i] <= fair]
        if not small:
            for i in left:
                grant[i] = fair
            break
        for i in small:
            grant[i] = demand[i]
            free -= demand[i]
        left = [i for i in left if demand[i] > fair]
    return [g / d if d > 0 else 1.0 for g, d in zip(grant, demand, strict=True)]


@dataclass(slots=True)
class Job:
    """One share on one peer: ``left`` full-pace seconds still to compute."""

    request: int
    peer: int
    arrive: float
    left: float
    back: float = 0.0  # seconds from its end to the origin's having the result
    nominal: float = 0.0  # what the peer's calibration predicts for it (for the cost EWMA)
    key: int = -1  # set by SharedHost.add
    start: float = math.nan  # when it reached the head of its peer's queue
    finish: float = math.nan


@dataclass(slots=True)
class SharedHost:
    """Every peer of one host, their queues and the cores they share."""

    cores: float
    demand: list[float]
    now: float = 0.0
    queues: list[deque[Job]] = field(default_factory=list)
    pending: list[tuple[float, int, Job]] = field(default_factory=list)  # (arrive, seq, job)
    busy_s: list[float] = field(default_factory=list)  # wall seconds each peer computed
    done: list[Job] = field(default_factory=list)  # finished since the owner last took them
    _seq: int = 0

    def __post_init__(self) -> None:
        n = len(self.demand)
        self.queues = self.queues or [deque() for _ in range(n)]
        self.busy_s = self.busy_s or [0.0] * n

    def add(self, job: Job) -> Job:
        """Queue ``job`` on its peer from ``job.arrive`` (not before ``now``)."""
        job.arrive = max(job.arrive, self.now)
        job.key = self._seq
        heapq.heappush(self.pending, (job.arrive, self._seq, job))
        self._seq += 1
        return job

    def set_demand(self, peer: int, cores: float, at: float) -> None:
        """From ``at``, ``peer`` asks for ``cores`` (a quota change). Its queued shares keep
        their core-seconds: full-pace seconds scale by the old demand over the new."""
        self.run_until(at)
        old = self.demand[peer]
        if cores > 0 and old > 0:
            for job in self.jobs():
                if job.peer == peer:
                    job.left *= old / cores
        self.demand[peer] = cores

    def run_until(self, t: float) -> None:
        """Advance to ``t`` (``math.inf``: until every queued share has finished)."""
        while True:
            while self.pending and self.pending[0][0] <= self.now:
                job = heapq.heappop(self.pending)[2]
                q = self.queues[job.peer]
                if not q:
                    job.start = self.now
                q.append(job)
            busy = [k for k, q in enumerate(self.queues) if q]
            nxt_arrival = self.pending[0][0] if self.pending else math.inf
            if not busy:
                if not self.pending or nxt_arrival > t:
                    self.now = max(self.now, t) if t < math.inf else self.now
                    return
                self.now = nxt_arrival
                continue
            pace = paces([self.demand[k] for k in busy], self.cores)
            done_in = min(self.queues[k][0].left / p for k, p in zip(busy, pace, strict=True))
            step = min(done_in, nxt_arrival - self.now, t - self.now)
            if step < 0:
                return
            for k, p in zip(busy, pace, strict=True):
                self.queues[k][0].left -= p * step
                self.busy_s[k] += step
            self.now += step
            for k in busy:
                q = self.queues[k]
                if q[0].left <= 1e-12:
                    q[0].finish = self.now
                    self.done.append(q.popleft())
                    if q:
                        q[0].start = self.now
            if self.now >= t:
                return

    def project(self) -> tuple[dict[int, tuple[float, float]], list[float]]:
        """Play the queued work out with no further arrivals, on a copy.

        Returns each unfinished share's projected (start, finish) by ``key``, and when each
        peer's queue empties (``now`` for an idle peer)."""
        twin = self.clone()
        jobs = twin.jobs()
        twin.run_until(math.inf)
        ends = [self.now] * len(self.demand)
        for j in jobs:
            ends[j.peer] = max(ends[j.peer], j.finish)
        return {j.key: (j.start, j.finish) for j in jobs}, ends

    def clone(self) -> SharedHost:
        """An independent copy of the unfinished work (finished shares are not carried)."""

        def dup(j: Job) -> Job:
            return Job(j.request, j.peer, j.arrive, j.left, j.back, j.nominal, j.key, j.start)

        return SharedHost(
            self.cores,
            list(self.demand),
            self.now,
            [deque(dup(j) for j in q) for q in self.queues],
            [(a, k, dup(j)) for a, k, j in self.pending],  # same order: still a heap
            list(self.busy_s),
            [],
            self._seq,
        )

    def jobs(self) -> list[Job]:
        """Every share not yet finished, queued or pending."""
        out = [j for q in self.queues for j in q]
        return out + [p[2] for p in self.pending]
