"""The learned policy's action space and its decoding into a split.

An action is a pair (cap, hedge). Hedge ``i < len(AGE_HEDGES)`` inflates every candidate's
believed wait by ``AGE_HEDGES[i] x view age`` (own queue: age 0, so never inflated) to guard
against other origins herding onto peers that only look idle; the last hedge, ``LEARNED``, adds
the network's own per-candidate estimate of the extra wait the view misses (which can tell a
fast peer that everyone herds onto from a slow one nobody wants). The network's score for a
hedge is the negated hedged solo finish over the request scale ``T0``; candidates are ranked by
it, the best ``cap`` are kept (``cap = 0`` keeps all), and the request is water-filled exactly
over them on the hedged waits. Action (all, no hedge) is greedy-aware.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from policy.fleet.allocate import IntArray, split_units
from policy.fleet.features import CandidateArrays, request_scale

CAPS: tuple[int, ...] = (1, 2, 3, 4, 0)  # 0 = every candidate
AGE_HEDGES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
LEARNED = len(AGE_HEDGES)  # hedge index of the learned per-candidate correction
N_HEDGES = len(AGE_HEDGES) + 1
ACTIONS: tuple[tuple[int, int], ...] = tuple((k, h) for k in CAPS for h in range(N_HEDGES))
N_ACTIONS = len(ACTIONS)
GREEDY_AWARE_ACTION = ACTIONS.index((0, 0))


def action_mask(n: int) -> NDArray[np.bool_]:
    """Valid actions for ``n`` candidates: caps at or above ``n`` duplicate 'all' and are off."""
    return np.array([k == 0 or k < n for k, _ in ACTIONS], dtype=bool)


def split_output(out: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``(q (A,), score (N, H))`` from the network's ``(N, A + H)`` output."""
    return out[0, :N_ACTIONS], out[:, N_ACTIONS:]


def describe(action: int) -> str:
    cap, h = ACTIONS[action]
    hedge = "learned" if h == LEARNED else f"{AGE_HEDGES[h]:g}xage"
    return f"cap={'all' if cap == 0 else cap},hedge={hedge}"


def decode(
    arr: CandidateArrays, units: int, action: int, score: NDArray[np.float32]
) -> tuple[IntArray, IntArray, float]:
    """Turn an action into ``(positions, counts, predicted_makespan)`` given the scores."""
    cap, h = ACTIONS[action]
    if h == LEARNED:
        t0 = request_scale(arr, units)
        solo = -score[:, h].astype(np.float64) * t0
        wait = np.maximum(solo - arr.fixed - units * arr.per_unit, arr.wait + arr.own)
    else:
        wait = arr.wait + arr.own + AGE_HEDGES[h] * arr.age
    n = len(arr)
    if cap == 0 or cap >= n:
        idx = np.arange(n, dtype=np.int64)
    else:
        key = -score[:, h].astype(np.float64)
        idx = np.argsort(key, kind="stable")[:cap].astype(np.int64)
    pos, cnt, span = split_units(wait[idx], arr.fixed[idx], arr.per_unit[idx], units)
    return idx[pos], cnt, span
