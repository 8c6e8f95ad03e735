"""The policy network's input, built one way for the simulator and for the runtime.

Both callers describe the candidates as :class:`CandidateArrays` (the runtime converts its
:class:`~policy.fleet.schema.Candidate` list with :func:`arrays_from_candidates`) and call
:func:`build_features`. Every time-like feature is divided by the request's scale ``T0``, the
best predicted solo finish over the candidates (greedy-aware view), so one network serves
requests of any size; the scale itself and the absolute view age enter as two more features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policy.fleet.schema import Candidate

FloatArray = NDArray[np.float64]

FEATURE_NAMES: tuple[str, ...] = (
    "is_self",
    "wait_over_t0",
    "own_pending_over_t0",
    "view_age_over_t0",
    "fixed_over_t0",
    "work_over_t0",
    "solo_finish_over_t0",
    "aware_wait_over_t0",
    "overhead_ratio",
    "log_units",
    "log_peers",
    "view_age_s",
    "log_t0",
    "deadline_over_t0",
    "mean_aware_wait_over_t0",
    "mean_view_age_s",
    "xfer_over_t0",
)
N_FEATURES = len(FEATURE_NAMES)


@dataclass(frozen=True, slots=True)
class CandidateArrays:
    """Candidates as parallel float arrays (seconds), one entry per peer."""

    is_self: FloatArray
    wait: FloatArray
    age: FloatArray
    fixed: FloatArray
    unit: FloatArray
    xfer: FloatArray
    own: FloatArray

    @property
    def per_unit(self) -> FloatArray:
        return self.unit + self.xfer

    def __len__(self) -> int:
        return int(self.wait.shape[0])


def arrays_from_candidates(cands: Sequence[Candidate]) -> CandidateArrays:
    def col(attr: str) -> FloatArray:
        return np.array([float(getattr(c, attr)) for c in cands], dtype=np.float64)

    return CandidateArrays(
        is_self=np.array([1.0 if c.is_self else 0.0 for c in cands], dtype=np.float64),
        wait=col("wait_s"),
        age=col("view_age_s"),
        fixed=col("fixed_s"),
        unit=col("unit_s"),
        xfer=col("xfer_s_per_unit"),
        own=col("own_pending_s"),
    )


def solo_finish(arr: CandidateArrays, units: int) -> FloatArray:
    """Greedy-aware predicted finish if the whole request went to each candidate alone."""
    return arr.wait + arr.own + arr.fixed + units * arr.per_unit


def request_scale(arr: CandidateArrays, units: int) -> float:
    """``T0``: the best greedy-aware solo finish over the candidates (seconds, > 0)."""
    return max(float(np.min(solo_finish(arr, units))), 1e-6)


def build_features(arr: CandidateArrays, units: int, deadline_s: float) -> NDArray[np.float32]:
    """The network input: shape ``(N, N_FEATURES)``, float32, in candidate order."""
    n = len(arr)
    solo = solo_finish(arr, units)
    t0 = request_scale(arr, units)
    inv = 1.0 / t0
    aware = arr.wait + arr.own
    work = units * arr.per_unit
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    out[:, 0] = arr.is_self
    out[:, 1] = arr.wait * inv
    out[:, 2] = arr.own * inv
    out[:, 3] = arr.age * inv
    out[:, 4] = arr.fixed * inv
    out[:, 5] = work * inv
    out[:, 6] = solo * inv
    out[:, 7] = aware * inv
    out[:, 8] = arr.fixed / np.maximum(work, 1e-9)
    out[:, 9] = math.log1p(units) / 3.0
    out[:, 10] = math.log(n) / 4.0
    out[:, 11] = arr.age
    out[:, 12] = math.log(t0)
    d = deadline_s * inv if math.isfinite(deadline_s) else 10.0
    out[:, 13] = min(d, 10.0) / 10.0
    out[:, 14] = float(np.mean(aware)) * inv
    out[:, 15] = float(np.mean(arr.age))
    out[:, 16] = units * arr.xfer * inv  # moving the whole request over this link: bytes / rate
    np.clip(out, -1e6, 1e6, out=out)
    return out.astype(np.float32)
