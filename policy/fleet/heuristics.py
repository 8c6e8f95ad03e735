"""Heuristic recruiters at the array level: the fallback, the baselines and the test oracle.

Each takes the candidates as :class:`CandidateArrays`, the request's whole ``units`` and a
seeded generator, and returns ``(positions, counts, predicted_makespan)`` where ``positions``
index the candidates, ``counts`` are whole units (> 0) summing to ``units``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from policy.allocation import cwa_clip, round_units
from policy.fleet.allocate import IntArray, split_units
from policy.fleet.features import CandidateArrays

Choice = tuple[IntArray, IntArray, float]
ArrayRecruiter = Callable[[CandidateArrays, int, np.random.Generator], Choice]


def _span(arr: CandidateArrays, wait: np.ndarray, pos: IntArray, cnt: IntArray) -> float:
    return float(np.max(wait[pos] + arr.fixed[pos] + cnt * arr.per_unit[pos]))


def _self_index(arr: CandidateArrays, units: int) -> int:
    """The origin's own candidate, or the best solo candidate when the origin is not listed."""
    own = np.flatnonzero(arr.is_self > 0.5)
    if own.shape[0] > 0:
        return int(own[0])
    solo = arr.wait + arr.own + arr.fixed + units * arr.per_unit
    return int(np.argmin(solo))


def greedy(arr: CandidateArrays, units: int, rng: np.random.Generator) -> Choice:
    """Exact water-filling on the view as it is (own recent dispatches ignored)."""
    pos, cnt, _ = split_units(arr.wait, arr.fixed, arr.per_unit, units)
    return pos, cnt, _span(arr, arr.wait + arr.own, pos, cnt)


def greedy_aware(arr: CandidateArrays, units: int, rng: np.random.Generator) -> Choice:
    """Water-filling on the view plus the work this origin dispatched since the view."""
    return split_units(arr.wait + arr.own, arr.fixed, arr.per_unit, units)


def random_pair(arr: CandidateArrays, units: int, rng: np.random.Generator) -> Choice:
    """The origin plus one peer drawn uniformly (the origin alone if the draw is itself)."""
    me = _self_index(arr, units)
    other = int(rng.integers(len(arr)))
    idx = np.array([me] if other == me else [me, other], dtype=np.int64)
    wait = arr.wait + arr.own
    pos, cnt, span = split_units(wait[idx], arr.fixed[idx], arr.per_unit[idx], units)
    return idx[pos], cnt, span


def equal(arr: CandidateArrays, units: int, rng: np.random.Generator) -> Choice:
    """Equal split over all peers (leftover units to a random subset)."""
    n = len(arr)
    perm = rng.permutation(n)
    counts = np.full(n, units // n, dtype=np.int64)
    counts[perm[: units % n]] += 1
    pos = np.flatnonzero(counts > 0).astype(np.int64)
    cnt = counts[pos]
    return pos, cnt, _span(arr, arr.wait + arr.own, pos, cnt)


def local(arr: CandidateArrays, units: int, rng: np.random.Generator) -> Choice:
    """No collaboration: everything on the origin."""
    me = _self_index(arr, units)
    pos = np.array([me], dtype=np.int64)
    cnt = np.array([units], dtype=np.int64)
    return pos, cnt, _span(arr, arr.wait + arr.own, pos, cnt)


def all_cwa(arr: CandidateArrays, units: int, rng: np.random.Generator) -> Choice:
    """The paper's CWA over every peer (solve, clip negative shares, renormalise)."""
    wait = arr.wait + arr.own
    x = np.ones(1) if len(arr) == 1 else cwa_clip(units * arr.per_unit, wait + arr.fixed)
    counts = np.asarray(round_units(x, units), dtype=np.int64)
    pos = np.flatnonzero(counts > 0).astype(np.int64)
    cnt = counts[pos]
    return pos, cnt, _span(arr, wait, pos, cnt)


HEURISTICS: dict[str, ArrayRecruiter] = {
    "greedy": greedy,
    "greedy-aware": greedy_aware,
    "random": random_pair,
    "equal": equal,
    "local": local,
    "all": all_cwa,
}
