"""The per-step cost model of a backend: `a + c * images` seconds per denoising step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peer.diffusion.errors import InvalidRequestError


@dataclass(frozen=True)
class CostModel:
    a_s: float  # fixed seconds per step (per forward, whatever the batch)
    c_s: float  # extra seconds per step per image
    pixels: int = 256  # image pixels (H * W) the fit was measured at

    def predict(self, images: int, steps: int) -> float:
        """Seconds to run `steps` steps of a batch of `images` images."""
        if images < 0 or steps < 0:
            raise InvalidRequestError(f"images and steps must be >= 0, got {images}, {steps}")
        if images == 0 or steps == 0:
            return 0.0
        return steps * (self.a_s + self.c_s * images)

    def to_wire(self) -> dict[str, Any]:
        return {"a_s": self.a_s, "c_s": self.c_s, "pixels": self.pixels}

    @classmethod
    def from_wire(cls, data: object) -> CostModel:
        if not isinstance(data, dict):
            raise InvalidRequestError("a cost model is a dict")
        try:
            a, c, px = float(data["a_s"]), float(data["c_s"]), int(data.get("pixels", 256))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequestError(f"invalid cost model {data!r}") from exc
        if not (a >= 0.0 and c >= 0.0 and px > 0):
            raise InvalidRequestError(f"invalid cost model {data!r}")
        return cls(a, c, px)


MIN_SLOPE_FRACTION = 0.02


def fit_affine(samples: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares fit of seconds = a + c * images, with a >= 0 and c > 0.

    Timing noise (and forwards padded to an even batch) can make the fitted slope zero or
    negative; every image still costs compute, and a zero slope would tell a planner that a
    peer takes any number of images for free. The slope is therefore floored at
    ``MIN_SLOPE_FRACTION`` of the per-image time measured at the largest batch.
    """
    if len({n for n, _ in samples}) < 2:
        raise InvalidRequestError("an affine fit needs at least two distinct batch sizes")
    n = len(samples)
    mx = sum(x for x, _ in samples) / n
    my = sum(y for _, y in samples) / n
    sxx = sum((x - mx) ** 2 for x, _ in samples)
    sxy = sum((x - mx) * (y - my) for x, y in samples)
    b_max, t_max = max(samples)
    c = max(sxy / sxx, MIN_SLOPE_FRACTION * t_max / b_max)
    a = max(0.0, my - c * mx)
    return a, c
