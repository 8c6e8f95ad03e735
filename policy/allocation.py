"""Workload allocation: split one task across a chosen set of servers (peers).

Every function here is pure numpy over two vectors of equal length k >= 1:

- ``U[j] > 0``: time for server j to take the *whole* task (send + compute), seconds;
- ``W[j]``: time before server j can start on its piece (queue + link backlog), seconds.

A fraction ``x[j]`` of the task finishes on j at ``x[j] * U[j] + W[j]``; the task's make-span is
the latest of those. Minimising the make-span over the simplex equalises the finish times of the
servers that receive work (CWA). When a server's wait exceeds that common level the unconstrained
solution gives it a negative share; the paper's reference code clips such shares to zero and
renormalises (``cwa_clip``), while ``water_fill`` drops them and re-solves, which is the exact
min–max. ``hecwa`` ignores the waits (shares proportional to 1/U). ``round_units`` turns shares
into whole units (images, tiles, steps) by largest remainder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "AllocationError",
    "cwa_clip",
    "cwa_closed_form",
    "cwa_solve",
    "hecwa",
    "makespan",
    "round_units",
    "water_fill",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = Sequence[float] | FloatArray


class AllocationError(ValueError):
    """Invalid input to an allocation function (empty set, non-positive U, NaN, bad shapes)."""


def _vectors(U: ArrayLike, W: ArrayLike) -> tuple[FloatArray, FloatArray]:
    u = np.asarray(U, dtype=np.float64)
    w = np.asarray(W, dtype=np.float64)
    if u.ndim != 1 or w.ndim != 1:
        raise AllocationError(f"U and W must be 1-D, got shapes {u.shape} and {w.shape}")
    if u.shape != w.shape:
        raise AllocationError(f"U and W differ in length: {u.shape[0]} != {w.shape[0]}")
    if u.shape[0] == 0:
        raise AllocationError("empty server set: at least one server is required")
    if not np.all(np.isfinite(u)) or not np.all(np.isfinite(w)):
        raise AllocationError("U and W must be finite (no NaN or infinity)")
    if np.any(u <= 0.0):
        raise AllocationError(f"U must be strictly positive, got min {float(u.min())!r}")
    return u, w


def makespan(U: ArrayLike, W: ArrayLike, x: ArrayLike) -> float:
    """Latest finish time ``max_j x_j*U_j + W_j`` over *all* given servers (zero shares count)."""
    u, w = _vectors(U, W)
    xs = np.asarray(x, dtype=np.float64)
    if xs.shape != u.shape or not np.all(np.isfinite(xs)):
        raise AllocationError(f"x must be finite with shape {u.shape}, got {xs.shape}")
    return float(np.max(xs * u + w))


def cwa_solve(U: ArrayLike, W: ArrayLike) -> FloatArray:
    """The reference code's k×k linear system, solved with ``numpy.linalg.solve``.

    Rows ``U_j x_j - U_{j+1} x_{j+1} = W_{j+1} - W_j`` for j < k-1, and ``sum x = 1``.
    The result may hold negative shares (servers whose wait exceeds the common finish time).
    """
    u, w = _vectors(U, W)
    k = u.shape[0]
    if k == 1:
        return np.ones(1)
    a = np.zeros((k, k))
    b = np.zeros(k)
    idx = np.arange(k - 1)
    a[idx, idx] = u[:-1]
    a[idx, idx + 1] = -u[1:]
    b[:-1] = w[1:] - w[:-1]
    a[k - 1, :] = 1.0
    b[k - 1] = 1.0
    try:
        x = np.linalg.solve(a, b)
    except np.linalg.LinAlgError as exc:  # cannot happen for U > 0, kept as a typed error
        raise AllocationError(f"CWA system is singular: {exc}") from exc
    return np.asarray(x, dtype=np.float64)


def cwa_closed_form(U: ArrayLike, W: ArrayLike) -> tuple[float, FloatArray]:
    """Closed form of the same system: ``M* = (1 + sum W/U) / sum 1/U``, ``x = (M* - W) / U``."""
    u, w = _vectors(U, W)
    inv = 1.0 / u
    level = float((1.0 + np.sum(w * inv)) / np.sum(inv))
    return level, (level - w) * inv


def cwa_clip(U: ArrayLike, W: ArrayLike) -> FloatArray:
    """The paper code's CWA: solve, set negative shares to 0, renormalise to sum 1."""
    x = cwa_solve(U, W)
    x = np.where(x < 0.0, 0.0, x)
    total = float(np.sum(x))
    if not total > 0.0 or not math.isfinite(total):
        raise AllocationError("CWA produced no positive share")
    return x / total


def water_fill(U: ArrayLike, W: ArrayLike) -> tuple[FloatArray, float]:
    """Exact min–max split: the level M and shares ``x_j = max(M - W_j, 0) / U_j``.

    Servers are taken in order of increasing wait; a server joins while its wait is below the
    level reached by those before it (adding it then lowers the level). Servers whose wait is at
    or above the final level get zero share. The returned make-span is the common finish time of
    the servers that receive work, which equals the minimum over the simplex of
    ``max_{j: x_j > 0} x_j U_j + W_j``.
    """
    u, w = _vectors(U, W)
    order = np.argsort(w, kind="stable")
    inv = 1.0 / u[order]
    ws = w[order]
    cum_inv = np.cumsum(inv)
    cum_wi = np.cumsum(ws * inv)
    levels = (1.0 + cum_wi) / cum_inv
    # prefix k (1-based) is admissible when the next wait is not below the level of the first k
    active = 1
    k = u.shape[0]
    while active < k and ws[active] < levels[active - 1]:
        active += 1
    level = float(levels[active - 1])
    x = np.zeros(k)
    x[order[:active]] = (level - ws[:active]) * inv[:active]
    x = np.maximum(x, 0.0)
    x /= float(np.sum(x))
    return x, level


def hecwa(U: ArrayLike, W: ArrayLike | None = None) -> FloatArray:
    """High-efficiency CWA: ``x_j ∝ prod_{i != j} U_i``, i.e. ``x_j ∝ 1/U_j`` (waits ignored).

    ``W`` is accepted for a uniform signature and validated when given, but not used.
    """
    u, _ = _vectors(U, np.zeros_like(np.asarray(U, dtype=np.float64)) if W is None else W)
    inv = 1.0 / u
    return inv / float(np.sum(inv))


def round_units(shares: ArrayLike, units: int) -> list[int]:
    """Largest-remainder rounding of ``shares`` (normalised) to whole ``units``.

    The result sums to ``units``. Ties in the fractional remainder go to the larger share,
    then to the lower index, so the result is deterministic.
    """
    if isinstance(units, bool) or not isinstance(units, int | np.integer):
        raise AllocationError(f"units must be an integer, got {type(units).__name__}")
    if units < 0:
        raise AllocationError(f"units must be >= 0, got {units}")
    s = np.asarray(shares, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise AllocationError("shares must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(s)):
        raise AllocationError("shares must be finite (no NaN or infinity)")
    if np.any(s < 0.0):
        raise AllocationError("shares must be non-negative")
    total = float(np.sum(s))
    if not total > 0.0:
        raise AllocationError("shares must have a positive sum")
    quota = s / total * int(units)
    base = np.floor(quota).astype(np.int64)
    # guard against float drift making the floors exceed the total
    while int(base.sum()) > units:
        j = int(np.argmax(base))
        base[j] -= 1
    left = int(units) - int(base.sum())
    if left > 0:
        rem = quota - base
        order = sorted(range(s.shape[0]), key=lambda j: (-rem[j], -s[j], j))
        for j in order[:left]:
            base[j] += 1
    return [int(v) for v in base]
