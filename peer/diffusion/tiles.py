"""Tiling a canvas larger than the model: plan overlapping windows, blend them back feathered.

Windows are `tile` pixels square (the model's native size). Neighbouring windows overlap by
`2 * halo` pixels: each window's core is `tile - 2 * halo` wide and it sees `halo` pixels of
context on every interior side. The last window in a row or column is pushed back to end at the
canvas edge. Blending weights ramp linearly across each interior overlap (and stay at 1 on canvas
edges), then each pixel is the weighted mean of the windows that cover it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from peer.diffusion.errors import InvalidRequestError


@dataclass(frozen=True, order=True)
class Tile:
    """A window [y0, y1) x [x0, x1) of the canvas, halo included."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def to_wire(self) -> list[int]:
        return [self.y0, self.x0, self.y1, self.x1]

    @classmethod
    def from_wire(cls, data: object) -> Tile:
        if (
            not isinstance(data, list | tuple)
            or len(data) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in data)
        ):
            raise InvalidRequestError(f"a tile is four ints [y0, x0, y1, x1], got {data!r}")
        tile = cls(*data)
        if tile.y0 < 0 or tile.x0 < 0 or tile.y1 <= tile.y0 or tile.x1 <= tile.x0:
            raise InvalidRequestError(f"empty or negative tile {data!r}")
        return tile

    def check_inside(self, height: int, width: int) -> None:
        if self.y0 < 0 or self.x0 < 0 or self.y1 > height or self.x1 > width:
            raise InvalidRequestError(
                f"tile {self.to_wire()} lies outside a {height}x{width} canvas"
            )
        if self.y1 <= self.y0 or self.x1 <= self.x0:
            raise InvalidRequestError(f"empty tile {self.to_wire()}")


def _starts(length: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, tile: int = 16, halo: int = 4) -> list[Tile]:
    """Windows of `tile` x `tile` covering the canvas, overlapping by `2 * halo`."""
    for name, v in (("height", height), ("width", width), ("tile", tile), ("halo", halo)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRequestError(f"{name} must be an int, got {v!r}")
    if tile < 1:
        raise InvalidRequestError(f"tile must be >= 1, got {tile}")
    if halo < 0 or 2 * halo >= tile:
        raise InvalidRequestError(
            f"halo must be in [0, {(tile - 1) // 2}] for tile {tile}, got {halo}"
        )
    if height < tile or width < tile:
        raise InvalidRequestError(f"canvas {height}x{width} is smaller than the tile {tile}")
    stride = tile - 2 * halo
    return [
        Tile(y, x, y + tile, x + tile)
        for y in _starts(height, tile, stride)
        for x in _starts(width, tile, stride)
    ]


def _ramp(
    n: int, lo_interior: bool, hi_interior: bool, overlap_lo: int, overlap_hi: int
) -> np.ndarray:
    w = np.ones(n, dtype=np.float64)
    idx = np.arange(n, dtype=np.float64)
    if lo_interior and overlap_lo > 0:
        w = np.minimum(w, (idx + 0.5) / overlap_lo)
    if hi_interior and overlap_hi > 0:
        w = np.minimum(w, (n - idx - 0.5) / overlap_hi)
    return w


def feather_weights(tile: Tile, tiles: Sequence[Tile], height: int, width: int) -> np.ndarray:
    """Blending weights for `tile`: linear ramps across its overlaps with neighbouring windows."""

    def overlap(axis: int, side: str) -> int:
        best = 0
        for other in tiles:
            if other == tile:
                continue
            if axis == 0:
                if other.x1 <= tile.x0 or other.x0 >= tile.x1:
                    continue
                if side == "lo" and other.y0 < tile.y0 < other.y1:
                    best = max(best, other.y1 - tile.y0)
                if side == "hi" and other.y0 < tile.y1 < other.y1:
                    best = max(best, tile.y1 - other.y0)
            else:
                if other.y1 <= tile.y0 or other.y0 >= tile.y1:
                    continue
                if side == "lo" and other.x0 < tile.x0 < other.x1:
                    best = max(best, other.x1 - tile.x0)
                if side == "hi" and other.x0 < tile.x1 < other.x1:
                    best = max(best, tile.x1 - other.x0)
        return best

    wy = _ramp(tile.height, tile.y0 > 0, tile.y1 < height, overlap(0, "lo"), overlap(0, "hi"))
    wx = _ramp(tile.width, tile.x0 > 0, tile.x1 < width, overlap(1, "lo"), overlap(1, "hi"))
    return np.outer(wy, wx)


def blend_tiles(
    canvas_shape: tuple[int, ...], pieces: Sequence[tuple[Tile, np.ndarray]]
) -> np.ndarray:
    """Feathered blend of repaired windows into a uint8 canvas of `canvas_shape`.

    Every pixel of the canvas must be covered by at least one window.
    """
    if len(canvas_shape) not in (2, 3):
        raise InvalidRequestError(f"canvas shape must be (H, W) or (H, W, C), got {canvas_shape}")
    height, width = int(canvas_shape[0]), int(canvas_shape[1])
    tiles = [t for t, _ in pieces]
    acc = np.zeros(canvas_shape, dtype=np.float64)
    wsum = np.zeros((height, width), dtype=np.float64)
    for tile, img in pieces:
        tile.check_inside(height, width)
        want = (tile.height, tile.width, *canvas_shape[2:])
        if not isinstance(img, np.ndarray) or img.shape != want or img.dtype != np.uint8:
            got = getattr(img, "shape", type(img).__name__)
            raise InvalidRequestError(
                f"tile {tile.to_wire()} needs a uint8 array {want}, got {got}"
            )
        w = feather_weights(tile, tiles, height, width)
        wsum[tile.y0 : tile.y1, tile.x0 : tile.x1] += w
        wc = w if img.ndim == 2 else w[:, :, None]
        acc[tile.y0 : tile.y1, tile.x0 : tile.x1] += wc * img
    if np.any(wsum <= 0):
        raise InvalidRequestError("the tiles do not cover the whole canvas")
    div = wsum if acc.ndim == 2 else wsum[:, :, None]
    return np.clip(np.rint(acc / div), 0, 255).astype(np.uint8)
