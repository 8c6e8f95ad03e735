"""Calibration, the cost model, and PNG helpers."""

from __future__ import annotations

import numpy as np
import pytest

from peer.diffusion import Backend, CostModel, InvalidRequestError, decode_png, encode_png
from peer.diffusion.cost import MIN_SLOPE_FRACTION, fit_affine
from peer.diffusion.images import image_grid, psnr


def test_fit_affine_recovers_line() -> None:
    a, c = fit_affine([(1, 0.012), (2, 0.014), (4, 0.018), (8, 0.026)])
    assert a == pytest.approx(0.010)
    assert c == pytest.approx(0.002)
    with pytest.raises(InvalidRequestError):
        fit_affine([(2, 0.1), (2, 0.2)])


def test_cost_model_predicts_and_round_trips() -> None:
    cm = CostModel(0.01, 0.002)
    assert cm.predict(4, 20) == pytest.approx(20 * 0.018)
    assert cm.predict(0, 20) == 0.0
    assert CostModel.from_wire(cm.to_wire()) == cm
    with pytest.raises(InvalidRequestError):
        cm.predict(-1, 3)
    with pytest.raises(InvalidRequestError):
        CostModel.from_wire({"a_s": -1.0, "c_s": 0.0})
    with pytest.raises(InvalidRequestError):
        CostModel.from_wire({"a_s": "x"})


def test_calibrate_fits_positive_costs(tiny: Backend) -> None:
    cm = tiny.calibrate(batch_sizes=(1, 2, 4), repeats=2, warmup=1)
    assert cm.a_s >= 0.0
    assert cm.c_s > 0.0  # fit_affine floors the per-image slope: a peer never costs nothing
    assert cm.pixels == 256
    assert cm.predict(8, 10) > cm.predict(1, 10)
    assert cm.predict(8, 10) == pytest.approx(10 * (cm.a_s + 8 * cm.c_s))


def test_png_round_trip() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_png(data), img)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(rgb)), rgb)
    with pytest.raises(InvalidRequestError):
        encode_png(img.astype(np.float32))
    with pytest.raises(InvalidRequestError):
        decode_png(b"not a png")


def test_grid_and_psnr() -> None:
    a = np.zeros((4, 4), np.uint8)
    g = image_grid([a, a + 255, a], cols=2)
    assert g.shape == (11, 11)
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * np.log10(16))


def test_fit_affine_slope_stays_positive_under_noise() -> None:
    # padded forwards (1 image costs as much as 2) plus noise can give a flat or negative slope
    a, c = fit_affine([(1, 0.020), (2, 0.020), (4, 0.019), (8, 0.019)])
    assert c > 0 and a >= 0
    assert c >= MIN_SLOPE_FRACTION * 0.019 / 8
