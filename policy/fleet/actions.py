"""The learned policy's action space and its decoding into a split.

An action is a pair (cap, hedge): hedge ``h`` inflates every candidate's believed wait by
``h x view age`` (own queue: age 0, so never inflated) to guard against other origins herding
onto peers that only look idle; candidates are ranked by their hedged solo finish (the network's
per-candidate score for that hedge), the best ``cap`` are kept (``cap = 0`` keeps all), and the
request is water-filled exactly over them on the hedged waits. Action (all, 0) is greedy-aware.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from policy.fleet.allocate import IntArray, split_units
from policy.fleet.features import CandidateArrays

CAPS: tuple[int, ...] = (1, 2, 3, 4, 0)  # 0 = every candidate
HEDGES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
ACTIONS: tuple[tuple[int, float], ...] = tuple((k, h) for k in CAPS for h in HEDGES)
N_ACTIONS = len(ACTIONS)
GREEDY_AWARE_ACTION = ACTIONS.index((0, 0.0))


def action_mask(n: int) -> NDArray[np.bool_]:
    """Valid actions for ``n`` candidates: caps at or above ``n`` duplicate 'all' and are off."""
    return np.array([k == 0 or k < n for k, _ in ACTIONS], dtype=bool)


def split_output(out: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``(q (A,), score (N, H))`` from the network's ``(N, A + H)`` output."""
    return out[0, :N_ACTIONS], out[:, N_ACTIONS:]


def hedged_wait(arr: CandidateArrays, hedge: float) -> NDArray[np.float64]:
    return arr.wait + arr.own + hedge * arr.age


def decode(
    arr: CandidateArrays,
    units: int,
    action: int,
    score: NDArray[np.float32] | None = None,
) -> tuple[IntArray, IntArray, float]:
    """Turn an action into ``(positions, counts, predicted_makespan)``.

    ``score`` (shape ``(N, len(HEDGES))``, higher is better) orders the candidates; without it
    the hedged solo finish is used, which is what the network's score output equals.
    """
    cap, hedge = ACTIONS[action]
    wait = hedged_wait(arr, hedge)
    n = len(arr)
    if cap == 0 or cap >= n:
        idx = np.arange(n, dtype=np.int64)
    else:
        if score is None:
            key = wait + arr.fixed + units * arr.per_unit
        else:
            key = -score[:, HEDGES.index(hedge)].astype(np.float64)
        idx = np.argsort(key, kind="stable")[:cap].astype(np.int64)
    pos, cnt, span = split_units(wait[idx], arr.fixed[idx], arr.per_unit[idx], units)
    return idx[pos], cnt, span
