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


BIAS_ALPHA = 0.3  # weight of the newest request in a mode's bias
BIAS_MIN_RUNS = 2  # requests of a mode before its bias is applied
BIAS_LIMITS = (0.5, 4.0)  # a mode's factor stays within these


@dataclass
class ModeBias:
    """Per-mode correction of predicted make-spans, learned from the requests this origin ran.

    The per-peer costs above follow each peer's speed, but a mode's make-span has parts they do
    not hold (the origin's PNG encoding and HTTP, a share's dispatch, waiting for the slowest
    share, a busy host's scheduling): under load the batch make-span ran 1.1-1.3x its
    prediction on every policy. Each finished request folds ``actual / raw predicted`` into an
    EWMA of its log, per mode; ``factor(mode)`` is what the planner multiplies that mode's raw
    prediction by (1 until the mode has ``BIAS_MIN_RUNS`` requests), so ``mode: auto`` compares
    corrected predictions and every response's ``predicted_s`` is the corrected one.
    """

    alpha: float = BIAS_ALPHA
    _log: dict[str, float] = field(default_factory=dict)
    _runs: dict[str, int] = field(default_factory=dict)

    def observe(self, mode: str, raw_predicted_s: float, actual_s: float) -> None:
        if not (raw_predicted_s > 0 and actual_s > 0):
            return
        lo, hi = BIAS_LIMITS
        x = math.log(min(max(actual_s / raw_predicted_s, lo), hi))
        prev = self._log.get(mode)
        self._log[mode] = x if prev is None else (1.0 - self.alpha) * prev + self.alpha * x
        self._runs[mode] = self._runs.get(mode, 0) + 1

    def factor(self, mode: str) -> float:
        if self._runs.get(mode, 0) < BIAS_MIN_RUNS:
            return 1.0
        return math.exp(self._log[mode])

    def to_json(self) -> dict[str, dict[str, float]]:
        return {
            m: {"factor": round(self.factor(m), 4), "runs": self._runs[m]}
            for m in sorted(self._log)
        }
