"""What parallel steps really cost on this cluster, learned from past runs, and when ``auto`` may
pick them. Pure: every method takes ``now``; no clocks, no I/O.

Why. Start-up calibration describes one peer alone. A parallel-steps run has several peers
computing at once on shared CPUs, hands a latent to a remote peer for every fine solve and runs
the coarse solves at the origin; on the 2-core bench machine the calibrated prediction was ~3x
optimistic (0.135 s predicted, ~0.44 s measured) and the speedup moved between 0.96x and 1.66x as
the load changed. So the origin records what its parallel runs measured and predicts from that.

What is measured (``ParallelCostTracker``), per image so that ``count`` scales it:

- ``fine step``, per holder: a fine solve's compute (what the holder reports) over its steps;
- ``hand-off``, per holder: a fine solve's wall time at the origin minus that compute: latent
  both ways, serialisation, the holder's queue (a solve sent while the same job already had one
  at that holder is left out: the planner's schedule already queues it there);
- ``coarse``: the origin's coarse solves, seconds per UNet evaluation;
- ``last step``: the origin's final step;
- ``iterations`` needed, per (segments, tolerance): what past runs used.

Each is an EWMA (weight ``ALPHA`` on the newest) over its last ``HISTORY`` samples younger than
``STALE_S``; a quantity without such a sample falls back to the calibrated model (per holder, per
item). Ordinary share and local runs keep feeding ``peer.core.costs.CostTracker`` as before, so
``local``'s prediction follows the current load too.

The auto rule. Every parallel run also gives its error ratio ``r = actual / predicted``. Ratios
of predictions made from measured costs are what the guard uses; those of predictions made from
calibration alone (the first runs) only while no measured one exists, since the measured costs
have since replaced that calibration. The guard is

    g = max(PRIOR_GUARD if no parallel run was seen yet else 1,
            p75 of the last HISTORY ratios (faded),
            the pinned ratio of the last loss (faded))

and ``auto`` picks parallel only when ``g * predicted_parallel < predicted_local`` (and than
every other mode's prediction); the plan keeps the raw prediction and states the guard. A
*loss* is a parallel run that took longer than the local prediction of its time: its ratio is
pinned, so the next decision needs ``predicted * g >= actual > local``, i.e. the same situation
now yields local (strictly more conservative). A run that beats the local prediction clears the
pin. Recovery: without new parallel runs, a ratio's excess over 1 fades in log space with
half-life ``HALF_LIFE_S`` (``r ** 0.5 ** (age / half-life)``), doubled for each further loss in
a row (up to ``2 ** MAX_DOUBLINGS``), and the measured costs go stale after ``STALE_S``; once the
guarded prediction wins again auto tries parallel, and a fast run keeps it there.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HISTORY = 8  # samples kept per measured quantity and error ratios kept for the guard
ALPHA = 0.4  # EWMA weight of the newest sample (a run or two moves the estimate)
STALE_S = 300.0  # a cost sample older than this is forgotten (back to the calibrated model)
HALF_LIFE_S = 120.0  # an error ratio's excess over 1 halves (in log space) in this time
MAX_DOUBLINGS = 4  # losses in a row lengthen the pin's half-life up to 16x
GUARD_QUANTILE = 0.75
PRIOR_GUARD = 1.25  # before any measured run: parallel must be predicted 25% faster
RATIO_BOUNDS = (0.05, 50.0)  # a ratio outside is a broken measurement, clipped


def _fade(r: float, age_s: float, half_life_s: float) -> float:
    """``r``'s excess over 1 fading with age (log space); ratios <= 1 are kept as they are."""
    if r <= 1.0:
        return r
    return float(r ** (0.5 ** (max(age_s, 0.0) / half_life_s)))


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty list."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class _Series:
    """A measured quantity: its last ``HISTORY`` samples (time, value)."""

    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def add(self, now: float, value: float) -> None:
        self.samples.append((now, value))

    def ewma(self, now: float) -> float | None:
        est: float | None = None
        for t, v in self.samples:
            if now - t > STALE_S:
                continue
            est = v if est is None else (1.0 - ALPHA) * est + ALPHA * v
        return est


def _tol_key(tolerance_db: float) -> float:
    return round(float(tolerance_db), 1)


@dataclass(frozen=True)
class MeasuredParallel:
    """What the planner uses: the tracker's estimates at one instant (per image)."""

    step_s: Mapping[str, float] = field(default_factory=dict)  # holder -> s per fine step
    handoff_s: Mapping[str, float] = field(default_factory=dict)  # holder -> s per fine solve
    coarse_eval_s: float | None = None  # s per coarse UNet evaluation at the origin
    last_s: float | None = None  # s for the last step at the origin
    iterations: Mapping[tuple[int, float], int] = field(default_factory=dict)
    guard: float = 1.0  # auto: parallel's prediction times this must beat local's
    runs: int = 0  # parallel runs seen

    def iterations_for(self, segments: int, tolerance_db: float, exact: bool) -> int | None:
        """Iterations past runs needed at this (segments, tolerance); None: no history."""
        if exact:
            return None
        return self.iterations.get((segments, _tol_key(tolerance_db)))

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "guard": round(self.guard, 4),
            "step_s": {k: round(v, 6) for k, v in sorted(self.step_s.items())},
            "handoff_s": {k: round(v, 6) for k, v in sorted(self.handoff_s.items())},
            "coarse_eval_s": None if self.coarse_eval_s is None else round(self.coarse_eval_s, 6),
            "last_s": None if self.last_s is None else round(self.last_s, 6),
            "iterations": {f"{p}@{t}": k for (p, t), k in sorted(self.iterations.items())},
        }


@dataclass
class ParallelCostTracker:
    """Measured parallel-steps costs and the auto guard (see the module header)."""

    half_life_s: float = HALF_LIFE_S
    prior_guard: float = PRIOR_GUARD
    _step: dict[str, _Series] = field(default_factory=dict)
    _handoff: dict[str, _Series] = field(default_factory=dict)
    _coarse: _Series = field(default_factory=_Series)
    _last: _Series = field(default_factory=_Series)
    _iters: dict[tuple[int, float], deque[tuple[float, int]]] = field(default_factory=dict)
    _ratios: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _cold: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _loss: tuple[float, float] | None = None  # (time, ratio) of the last loss, until a win
    _losses_in_row: int = 0
    runs: int = 0

    # -- observations -------------------------------------------------------------------------

    def observe_fine(
        self,
        peer: str,
        steps: int,
        images: int,
        compute_s: float,
        wall_s: float,
        now: float,
        *,
        queued: bool = False,
    ) -> None:
        """One fine solve of ``steps`` steps over ``images`` images at ``peer``: the holder's
        compute and the wall time from send to result at the origin."""
        if steps <= 0 or images <= 0 or not compute_s > 0 or not math.isfinite(wall_s):
            return
        self._step.setdefault(peer, _Series()).add(now, compute_s / (steps * images))
        if not queued:
            extra = max(wall_s - compute_s, 0.0) / images
            self._handoff.setdefault(peer, _Series()).add(now, extra)

    def observe_coarse(self, evaluations: int, images: int, seconds: float, now: float) -> None:
        """The origin's coarse solves of one run: ``evaluations`` UNet evaluations in all."""
        if evaluations > 0 and images > 0 and seconds > 0:
            self._coarse.add(now, seconds / (evaluations * images))

    def observe_last(self, images: int, seconds: float, now: float) -> None:
        if images > 0 and seconds > 0:
            self._last.add(now, seconds / images)

    def observe_iterations(
        self, segments: int, tolerance_db: float | None, iterations: int, now: float
    ) -> None:
        """Iterations a run to ``tolerance_db`` used (runs to exactness teach nothing here)."""
        if tolerance_db is None or segments < 1 or iterations < 1:
            return
        key = (segments, _tol_key(tolerance_db))
        self._iters.setdefault(key, deque(maxlen=HISTORY)).append((now, iterations))

    def observe_outcome(
        self,
        predicted_s: float,
        actual_s: float,
        local_predicted_s: float | None,
        now: float,
        *,
        measured: bool = True,
    ) -> None:
        """A finished parallel run: its prediction (``measured``: made from measured costs, not
        calibration alone), its wall time and local's prediction then."""
        if not (predicted_s > 0 and actual_s > 0):
            return
        lo, hi = RATIO_BOUNDS
        r = min(max(actual_s / predicted_s, lo), hi)
        (self._ratios if measured else self._cold).append((now, r))
        self.runs += 1
        if local_predicted_s is None or not local_predicted_s > 0:
            return
        if actual_s > local_predicted_s:
            self._loss = (now, r)
            self._losses_in_row += 1
        else:
            self._loss = None
            self._losses_in_row = 0

    # -- estimates ------------------------------------------------------------------------

    def guard(self, now: float) -> float:
        """The factor on parallel's prediction before auto compares it (>= 1)."""
        if self.runs == 0:
            return max(self.prior_guard, 1.0)
        faded = [
            _fade(r, now - t, self.half_life_s) for t, r in self._ratios if now - t <= STALE_S
        ] or [_fade(r, now - t, self.half_life_s) for t, r in self._cold if now - t <= STALE_S]
        g = max(1.0, quantile(faded, GUARD_QUANTILE)) if faded else 1.0
        if self._loss is not None:
            t, r = self._loss
            half = self.half_life_s * 2.0 ** min(self._losses_in_row - 1, MAX_DOUBLINGS)
            g = max(g, _fade(r, now - t, half))
        return g

    def iterations(self, now: float) -> dict[tuple[int, float], int]:
        """Per (segments, tolerance): the p75 of the recent runs' iterations, rounded up."""
        out = {}
        for key, hist in self._iters.items():
            fresh = [float(k) for t, k in hist if now - t <= STALE_S]
            if fresh:
                out[key] = max(1, math.ceil(quantile(fresh, GUARD_QUANTILE) - 1e-9))
        return out

    def snapshot(self, now: float) -> MeasuredParallel:
        def fresh(series: Mapping[str, _Series]) -> dict[str, float]:
            got = {k: s.ewma(now) for k, s in series.items()}
            return {k: v for k, v in got.items() if v is not None}

        return MeasuredParallel(
            step_s=fresh(self._step),
            handoff_s=fresh(self._handoff),
            coarse_eval_s=self._coarse.ewma(now),
            last_s=self._last.ewma(now),
            iterations=self.iterations(now),
            guard=self.guard(now),
            runs=self.runs,
        )
