"""Repair keeps the known region; tile planning covers the canvas; blending is feathered."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.diffusion import Backend, Tile, blend_tiles, plan_tiles
from peer.diffusion.checks import centre_mask, digit_canvas
from peer.diffusion.tiles import feather_weights


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_repair_keeps_known_region(tiny: Backend, scheduler: str) -> None:
    img = digit_canvas(1)
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:12, 2:9] = True
    out = tiny.repair(img, mask, 8, 5, label=3, scheduler=scheduler)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], img[~mask])
    assert not np.array_equal(out[mask], img[mask])


def test_repair_with_empty_mask_returns_input(tiny: Backend) -> None:
    img = digit_canvas(1)
    out = tiny.repair(img, np.zeros((16, 16), dtype=bool), 5, 1, label=0)
    assert np.array_equal(out, img)


def test_repair_without_label_averages_classes(tiny: Backend) -> None:
    img = digit_canvas(1)
    mask = centre_mask(16)
    a = tiny.repair(img, mask, 5, 2)
    b = tiny.repair(img, mask, 5, 2)
    assert np.array_equal(a, b)
    assert np.array_equal(a[~mask], img[~mask])
    assert not np.array_equal(a, tiny.repair(img, mask, 5, 2, label=4))


def test_repair_is_seeded(tiny: Backend) -> None:
    img = digit_canvas(1)
    mask = centre_mask(16)
    assert not np.array_equal(tiny.repair(img, mask, 5, 1, 3), tiny.repair(img, mask, 5, 2, 3))


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(16, 80),
    w=st.integers(16, 80),
    tile=st.sampled_from([8, 16, 24]),
    halo=st.integers(0, 5),
)
def test_plan_tiles_covers_canvas(h: int, w: int, tile: int, halo: int) -> None:
    if h < tile or w < tile or 2 * halo >= tile:
        return
    tiles = plan_tiles(h, w, tile, halo)
    cover = np.zeros((h, w), dtype=int)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w
        assert (t.height, t.width) == (tile, tile)
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert cover.min() >= 1
    assert len(set(tiles)) == len(tiles)
    # a constant canvas blends back to itself, and weights are positive everywhere
    pieces = [(t, np.full((tile, tile), 77, np.uint8)) for t in tiles]
    assert np.all(blend_tiles((h, w), pieces) == 77)


def test_plan_tiles_layout() -> None:
    assert plan_tiles(16, 16, 16, 4) == [Tile(0, 0, 16, 16)]
    ys = sorted({t.y0 for t in plan_tiles(32, 32, 16, 4)})
    assert ys == [0, 8, 16]
    ys48 = sorted({t.y0 for t in plan_tiles(48, 40, 16, 4)})
    assert ys48 == [0, 8, 16, 24, 32]
    assert sorted({t.x0 for t in plan_tiles(48, 40, 16, 4)}) == [0, 8, 16, 24]


def test_feathered_blend_is_a_linear_crossfade() -> None:
    tiles = [Tile(0, 0, 16, 16), Tile(0, 8, 16, 24)]
    left = np.full((16, 16), 0, np.uint8)
    right = np.full((16, 16), 200, np.uint8)
    out = blend_tiles((16, 24), [(tiles[0], left), (tiles[1], right)])
    assert np.all(out[:, :8] == 0) and np.all(out[:, 16:] == 200)
    row = out[0, 8:16].astype(int)
    assert np.all(np.diff(row) > 0)  # a ramp across the overlap
    w0 = feather_weights(tiles[0], tiles, 16, 24)
    w1 = feather_weights(tiles[1], tiles, 16, 24)
    assert np.allclose(w0[:, 8:] + w1[:, :8], 1.0)


def test_tile_wire_round_trip() -> None:
    t = Tile(8, 16, 24, 32)
    assert Tile.from_wire(t.to_wire()) == t
