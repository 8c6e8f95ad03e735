"""This peer's compute cost model and its upkeep.

Compute per denoising step is affine in the number of images in the batch, ``a + c * images``
seconds. ``calibrate()`` on the backend gives ``(a, c)`` at start; every real run then updates a
scale factor by EWMA (``k <- (1 - alpha) k + alpha * observed / predicted``), so the model keeps
the calibrated shape and follows the peer's current speed (CPU quota, contention).

Published capacity (gossip ``capacity``) is images x steps per second at batch 8:
``8 / (a + 8 c)``. The origin recovers a remote peer's ``(a, c)`` by scaling its own calibrated
shape by the capacity ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CAPACITY_BATCH = 8


@dataclass
class CostTracker:
    a_s: float  # calibrated fixed seconds per step
    c_s: float  # calibrated seconds per step per image
    alpha: float = 0.3
    scale: float = 1.0
    runs: int = 0

    def per_step(self, images: float) -> float:
        return self.scale * (self.a_s + self.c_s * images)

    def predict(self, images: float, steps: int) -> float:
        return steps * self.per_step(images)

    def observe(self, images: float, steps: int, seconds: float) -> None:
        """Fold in one real run: ``steps`` denoising steps over ``images`` images."""
        if steps <= 0 or images <= 0 or seconds <= 0:
            return
        base = steps * (self.a_s + self.c_s * images)
        if base <= 0:
            return
        ratio = min(max(seconds / base, 0.05), 50.0)
        self.scale = (1.0 - self.alpha) * self.scale + self.alpha * ratio
        self.runs += 1

    @property
    def a(self) -> float:
        return self.scale * self.a_s

    @property
    def c(self) -> float:
        return self.scale * self.c_s

    def capacity(self) -> float:
        """Images x steps per second at batch 8."""
        return CAPACITY_BATCH / max(self.per_step(CAPACITY_BATCH), 1e-9)


def remote_cost(own: CostTracker, capacity: float) -> tuple[float, float]:
    """(a, c) of a peer that publishes ``capacity``, assuming this peer's cost shape."""
    if not capacity > 0:
        return own.a, own.c
    k = own.capacity() / capacity
    return own.a * k, own.c * k


BIAS_ALPHA = 0.3  # weight of the newest full-length request in a kind/mode's bias
BIAS_MIN_RUNS = 2  # counted requests of a kind/mode before its bias is applied
BIAS_LIMITS = (0.5, 4.0)  # a kind/mode's factor stays within these
# A request of this many denoising steps or more gets the full ``BIAS_ALPHA``; a shorter one
# ``BIAS_ALPHA * steps / BIAS_REF_STEPS`` (a 1-step warm-up moves a factor 1/20 as much), as its
# fixed overheads weigh more in its make-span than in a real request's.
BIAS_REF_STEPS = 20
# Only a request of at least this many steps (a quarter of ``BIAS_REF_STEPS``) counts towards
# ``BIAS_MIN_RUNS``: warm-ups alone never switch a factor on.
BIAS_COUNT_STEPS = BIAS_REF_STEPS // 4


def bias_key(kind: str, mode: str) -> str:
    """The key of a request kind's mode in ``ModeBias`` (and ``/v1/cluster``'s
    ``prediction_bias``), e.g. ``generate/local``, ``repair/tile``."""
    return f"{kind}/{mode}"


@dataclass
class ModeBias:
    """Per request kind and mode correction of predicted make-spans, learned from the requests
    this origin ran.

    The per-peer costs above follow each peer's speed, but a mode's make-span has parts they do
    not hold (the origin's PNG encoding and HTTP, a share's dispatch, waiting for the slowest
    share, a busy host's scheduling): under load the batch make-span ran 1.1-1.3x its
    prediction on every policy. Each finished request folds ``actual / raw predicted`` into an
    EWMA of its log, per (kind, mode) -- a generate's ``local`` and a repair's ``local`` have
    different overheads, so they learn apart -- with weight
    ``alpha * min(1, steps / BIAS_REF_STEPS)``. ``factor(kind, mode)`` is what the planner
    multiplies that mode's raw prediction by (1 until the pair has ``BIAS_MIN_RUNS`` requests
    of at least ``BIAS_COUNT_STEPS`` steps), so ``mode: auto`` compares corrected predictions
    and every response's ``predicted_s`` is the corrected one.
    """

    alpha: float = BIAS_ALPHA
    _log: dict[str, float] = field(default_factory=dict)
    _runs: dict[str, int] = field(default_factory=dict)

    def observe(
        self, kind: str, mode: str, raw_predicted_s: float, actual_s: float, steps: int
    ) -> None:
        if not (raw_predicted_s > 0 and actual_s > 0 and steps >= 1):
            return
        lo, hi = BIAS_LIMITS
        x = math.log(min(max(actual_s / raw_predicted_s, lo), hi))
        key = bias_key(kind, mode)
        w = self.alpha * min(1.0, steps / BIAS_REF_STEPS)
        prev = self._log.get(key)
        runs = self._runs.get(key, 0)
        counted = steps >= BIAS_COUNT_STEPS
        # warm-ups alone keep a provisional log (shown, never applied); the first counted
        # request replaces it, so a warm-up's overheads do not linger in the factor
        if prev is None or (counted and runs == 0):
            self._log[key] = x
        else:
            self._log[key] = (1.0 - w) * prev + w * x
        self._runs[key] = runs + (1 if counted else 0)

    def factor(self, kind: str, mode: str) -> float:
        key = bias_key(kind, mode)
        if self._runs.get(key, 0) < BIAS_MIN_RUNS:
            return 1.0
        return math.exp(self._log[key])

    def to_json(self) -> dict[str, dict[str, float]]:
        """``{"generate/local": {"factor": f, "runs": counted requests}, ...}``."""
        out: dict[str, dict[str, float]] = {}
        for key in sorted(self._log):
            kind, _, mode = key.partition("/")
            out[key] = {"factor": round(self.factor(kind, mode), 4), "runs": self._runs[key]}
        return out
