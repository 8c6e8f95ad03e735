"""The paper's MEC environment as a pure, seeded core (paper-model.md §1 and §6).

Time is the slot index; nothing here reads a clock. One episode:

- ``draw_arrivals(rng)`` gives the task sizes D[t, b, n] (0 where no task arrived);
- ``reset(D)`` clears queues; then for every slot t, tasks are offloaded one at a time in the
  order b = 0..B-1, n = 0..N-1 with ``offload(t, b, n, subset)``, and ``end_slot(t)`` drains
  the queues: Q(t+1) = max(Q(t) + P(t) - f*slot, 0).

Within a slot P (work assigned earlier in the slot, per ES) and L (transmission backlog, per
source BS, seconds) grow with every decision; Q stays at its start-of-slot value. The per-method
quirks (capped waits, link charges, the Δ cap) come from ``EnvRules``; ``SimParams.clean`` makes
every method use the AMCoEdge rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy.paper.config import EnvRules, SimError, SimParams

__all__ = ["EpisodeStats", "PaperEnv", "draw_densities"]

F64 = npt.NDArray[np.float64]
DROPPED_MAKESPAN = 10.0  # seconds, the make-span recorded for a task assigned nowhere


def draw_densities(params: SimParams, rng: np.random.Generator) -> F64:
    """rho_n in Gcycles/Mbit, one per task position, fixed for the run (quirk 1)."""
    c = rng.uniform(params.density_min, params.density_max, size=params.tasks)
    return np.asarray(1024.0 / 1_000_000.0 * c, dtype=np.float64)


@dataclass(frozen=True)
class EpisodeStats:
    makespan: float  # mean recorded (deadline-capped) make-span over arrived tasks
    failure_rate: float
    tasks: int


class PaperEnv:
    """Sequential per-task environment; hot path in plain Python floats (B = 5)."""

    def __init__(self, params: SimParams, rules: EnvRules, rho: F64) -> None:
        if rho.shape != (params.tasks,):
            raise SimError(f"rho must have shape ({params.tasks},), got {rho.shape}")
        self.params = params
        self.rules = rules
        self.rho = [float(v) for v in rho]
        self.f = [float(v) for v in params.capacities]
        self.r = [float(v) for v in params.rates]
        self.B = params.n_es
        self.N = params.tasks
        self.T = params.slots
        self.tau = float(params.deadline)
        self.delta = float(params.slot)
        self._cap_link_multi = rules.link_cap == "multi"
        self._water = rules.allocation == "water"
        self.D: F64 = np.zeros((self.T, self.B, self.N))
        self.Q: F64 = np.zeros((self.T, self.B))
        self.q: list[float] = [0.0] * self.B  # Q(t) of the current slot
        self.P: list[float] = [0.0] * self.B
        self.L: list[float] = [0.0] * self.B
        self._sum_ms = 0.0
        self._n_tasks = 0
        self._n_fail = 0
        self._version = 0  # bumped whenever P, L or the queues change
        self._cache_key: tuple[int, int, int, float] | None = None
        self._cache: tuple[list[float], list[float]] = ([], [])

    # ---- episode -------------------------------------------------------------------------
    def draw_arrivals(self, rng: np.random.Generator) -> F64:
        p = self.params
        size = (self.T, self.B, self.N)
        d = rng.uniform(p.size_min, p.size_max, size=size)
        return np.asarray(d * (rng.uniform(0.0, 1.0, size=size) < p.arrival_prob))

    def reset(self, arrivals: F64) -> None:
        if arrivals.shape != (self.T, self.B, self.N):
            raise SimError(f"arrivals must have shape {(self.T, self.B, self.N)}")
        self.D = arrivals
        self._version += 1
        self.Q = np.zeros((self.T, self.B))
        self.q = [0.0] * self.B
        self.P = [0.0] * self.B
        self.L = [0.0] * self.B
        self._sum_ms = 0.0
        self._n_tasks = 0
        self._n_fail = 0

    def end_slot(self, t: int) -> None:
        """Q(t+1) = max(Q(t) + P(t) - f*slot, 0); P and L restart at zero."""
        self._version += 1
        nxt = [max(self.q[j] + self.P[j] - self.f[j] * self.delta, 0.0) for j in range(self.B)]
        self.Q[t + 1] = nxt
        self.q = nxt
        self.P = [0.0] * self.B
        self.L = [0.0] * self.B

    def stats(self) -> EpisodeStats:
        n = self._n_tasks
        if n == 0:
            return EpisodeStats(0.0, 0.0, 0)
        return EpisodeStats(self._sum_ms / n, self._n_fail / n, n)

    # ---- one task ------------------------------------------------------------------------
    def task_vectors(self, b: int, n: int, size: float) -> tuple[list[float], list[float]]:
        """U_j and W_j of every ES for this task in the current intra-slot state.

        The last answer is kept until the state changes (any offload, end of slot or reset), so
        a method that reads the vectors to decide does not make ``offload`` compute them again.
        """
        key = (self._version, b, n, size)
        if key == self._cache_key:
            return self._cache
        rho = self.rho[n]
        r, f, q, P, lb = self.r, self.f, self.q, self.P, self.L[b]
        local_link = self.rules.local_pays_transfer
        U = [0.0] * self.B
        W = [0.0] * self.B
        for j in range(self.B):
            comp = size * rho / f[j]
            wait = (q[j] + P[j]) / f[j]
            if j != b or local_link:
                U[j] = size / r[j] + comp
                W[j] = lb + wait
            else:
                U[j] = comp
                W[j] = wait
        if self.rules.cap_wait:
            tau = self.tau
            W = [w if w < tau else tau for w in W]
        self._cache_key = key
        self._cache = (U, W)
        return U, W

    def offload(self, b: int, n: int, subset: Sequence[int], size: float) -> tuple[float, bool]:
        """Allocate one task to ``subset`` (ES indices); returns (raw make-span, failed).

        An empty subset drops the task (Optimal's 10 s incumbent, see methods.Optimal): no work
        is assigned and the task counts as failed with make-span 10 s.
        """
        if not subset:
            dropped_fail = self.tau < DROPPED_MAKESPAN
            self._n_tasks += 1
            self._n_fail += int(dropped_fail)
            self._sum_ms += min(DROPPED_MAKESPAN, self.tau)
            return DROPPED_MAKESPAN, dropped_fail
        U, W = self.task_vectors(b, n, size)
        self._version += 1  # this offload changes P (and L): the cached vectors go stale
        work = size * self.rho[n]
        k = len(subset)
        rules = self.rules
        if k == 1:
            j = subset[0]
            x: list[float] = [1.0]
            ms = U[j] + W[j]
            if j != b or rules.link_charges_local or rules.local_pays_transfer:
                self.L[b] += size / self.r[j]  # single ES: never capped (quirk 4)
            self.P[j] += work
        else:
            us = [U[j] for j in subset]
            ws = [W[j] for j in subset]
            x, ms, used = _split(us, ws, self._water)
            link = 0.0
            for i, j in enumerate(subset):
                self.P[j] += x[i] * work
                if j != b or rules.link_charges_local or rules.local_pays_transfer:
                    link += x[i] * size / self.r[j]
            lb = self.L[b] + link
            if self._cap_link_multi and lb > self.delta:
                lb = self.delta
            self.L[b] = lb
            del used
        failed = ms > self.tau
        self._n_tasks += 1
        if failed:
            self._n_fail += 1
            self._sum_ms += self.tau
        else:
            self._sum_ms += ms
        return ms, failed

    def reward(self, ms: float, failed: bool) -> float:
        return -self.rules.penalty * self.tau if failed else -ms


def _split(us: list[float], ws: list[float], water: bool) -> tuple[list[float], float, int]:
    """CWA on a small set in plain floats: (shares, make-span, number of ESs with work)."""
    if water:
        order = sorted(range(len(us)), key=lambda i: ws[i])
        s_inv = 0.0
        s_wi = 0.0
        level = 0.0
        used = 0
        for i in order:
            if used and ws[i] >= level:
                break
            s_inv += 1.0 / us[i]
            s_wi += ws[i] / us[i]
            level = (1.0 + s_wi) / s_inv
            used += 1
        x = [max(level - w, 0.0) / u for u, w in zip(us, ws, strict=True)]
        tot = sum(x)
        return [v / tot for v in x], level, used
    s_inv = 0.0
    s_wi = 0.0
    for u, w in zip(us, ws, strict=True):
        s_inv += 1.0 / u
        s_wi += w / u
    level = (1.0 + s_wi) / s_inv
    x = [(level - w) / u for u, w in zip(us, ws, strict=True)]
    if min(x) < 0.0:  # clip and renormalise (quirk 3); the make-span still sees every W
        x = [v if v > 0.0 else 0.0 for v in x]
        tot = sum(x)
        x = [v / tot for v in x]
        ms = max(v * u + w for v, u, w in zip(x, us, ws, strict=True))
    else:
        ms = level
    used = sum(1 for v in x if v > 0.0)
    return x, ms, used
