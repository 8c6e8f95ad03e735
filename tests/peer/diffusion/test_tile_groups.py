"""Bounded working set: repairs and generations run in groups of at most `max_forward_rows`
forward rows, and their outputs are bit-identical to one batch of everything."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from peer.diffusion import Backend
from peer.diffusion.tiles import plan_tiles


@pytest.fixture
def rows_seen(tiny_be: Backend) -> Iterator[list[int]]:
    """Rows of every UNet forward the backend runs (the denoiser wrapped, then restored)."""
    seen: list[int] = []
    inner = tiny_be._denoiser

    class Counting:
        name = inner.name
        provider = inner.provider

        def __call__(self, rows: torch.Tensor, t: int, cls: torch.Tensor | None) -> torch.Tensor:
            seen.append(int(rows.shape[0]))
            return inner(rows, t, cls)

    tiny_be._denoiser = Counting()
    before = tiny_be.max_forward_rows
    try:
        yield seen
    finally:
        tiny_be._denoiser = inner
        tiny_be.max_forward_rows = before


def _canvas(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    mask = np.zeros((40, 32), dtype=bool)
    mask[6:34, 4:27] = True
    return img, mask


@pytest.mark.parametrize(("label", "scheduler"), [(None, "ddim"), (3, "ddpm")])
def test_grouped_repair_equals_one_batch(
    tiny_be: Backend, rows_seen: list[int], label: int | None, scheduler: str
) -> None:
    img, mask = _canvas(1)
    tiles = plan_tiles(40, 32, 16, 4)
    masked = sum(bool(mask[t.y0 : t.y1, t.x0 : t.x1].any()) for t in tiles)
    per_window = 10 if label is None else 1

    tiny_be.max_forward_rows = 10_000
    whole = tiny_be.repair_canvas(img, mask, 2, 7, label=label, scheduler=scheduler)
    assert max(rows_seen) >= masked * per_window  # one batch of every masked window

    for cap in (1, 25 if label is None else 5):
        rows_seen.clear()
        tiny_be.max_forward_rows = cap
        grouped = tiny_be.repair_canvas(img, mask, 2, 7, label=label, scheduler=scheduler)
        group = max(1, cap // per_window)
        assert max(rows_seen) <= max(cap, per_window), (cap, rows_seen)
        assert len(rows_seen) == 2 * -(-masked // group)  # steps x groups
        np.testing.assert_array_equal(grouped, whole)


def test_grouped_tiles_equal_one_batch(tiny_be: Backend, rows_seen: list[int]) -> None:
    img, mask = _canvas(2)
    tiles = plan_tiles(40, 32, 16, 4)
    tiny_be.max_forward_rows = 10_000
    whole = tiny_be.repair_tiles(img, mask, tiles, 2, 5, label=None)
    tiny_be.max_forward_rows = 30
    grouped = tiny_be.repair_tiles(img, mask, tiles, 2, 5, label=None)
    assert max(rows_seen[-2:]) <= 30
    assert len(grouped) == len(whole) == len(tiles)
    for a, b in zip(grouped, whole, strict=True):
        np.testing.assert_array_equal(a, b)


def test_grouped_generation_equals_one_batch(tiny_be: Backend, rows_seen: list[int]) -> None:
    seeds = list(range(11, 18))
    tiny_be.max_forward_rows = 10_000
    whole = tiny_be.generate([1, 2, None, 4, 5, 6, 7], seeds, 3, scheduler="ddpm")
    rows_seen.clear()
    tiny_be.max_forward_rows = 3
    grouped = tiny_be.generate([1, 2, None, 4, 5, 6, 7], seeds, 3, scheduler="ddpm")
    assert max(rows_seen) <= 3 and len(rows_seen) == 3 * 3  # 3 groups x 3 steps
    np.testing.assert_array_equal(grouped, whole)
