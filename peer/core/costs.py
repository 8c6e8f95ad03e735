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

from dataclasses import dataclass

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
