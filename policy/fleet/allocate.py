"""Exact split of one request over a chosen set of peers, with per-share fixed overhead.

A share of ``x`` units on peer j finishes at ``W_j + a_j + x * u_j`` (wait, fixed overhead, per
unit time); a peer that gets nothing costs nothing. The continuous optimum is water-filling with
the thresholds ``W_j + a_j`` (peers join in that order while their threshold is below the level
reached so far), which is :func:`policy.allocation.water_fill` on ``(units * u, W + a)``. Shares
are then rounded to whole units by largest remainder and peers left with zero units are dropped.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from policy.allocation import round_units, water_fill

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def split_units(
    wait: FloatArray, fixed: FloatArray, per_unit: FloatArray, units: int
) -> tuple[IntArray, IntArray, float]:
    """Water-fill ``units`` over the given peers (all arrays of one length).

    Returns ``(positions, counts, makespan)``: the positions (into the given arrays) that get
    work, their whole-unit counts (> 0, summing to ``units``), and the predicted make-span of
    the rounded split.
    """
    n = wait.shape[0]
    if n == 1:
        pos = np.zeros(1, dtype=np.int64)
        cnt = np.array([units], dtype=np.int64)
        return pos, cnt, float(wait[0] + fixed[0] + units * per_unit[0])
    thresholds = wait + fixed
    x, _level = water_fill(units * per_unit, thresholds)
    counts = np.asarray(round_units(x, units), dtype=np.int64)
    pos = np.flatnonzero(counts > 0)
    cnt = counts[pos]
    span = float(np.max(thresholds[pos] + cnt * per_unit[pos]))
    return pos.astype(np.int64), cnt, span
