"""The shipped digits16 model: it loads offline, draws the requested digits, and tiles well."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from peer.diffusion import Backend, ChainState, load_backend
from peer.diffusion.card import read_card
from peer.diffusion.checks import tile_vs_untiled
from peer.diffusion.quality import DigitScorer


@pytest.fixture(scope="module")
def shipped() -> Backend:
    return load_backend(device="cpu", threads=1)


@pytest.fixture(scope="module")
def shipped_onnx() -> Backend:
    return load_backend(device="cpu", threads=1, engine="onnx")


def _on(request: pytest.FixtureRequest, engine: str) -> Backend:
    be = request.getfixturevalue("shipped" if engine == "torch" else "shipped_onnx")
    assert be.engine == engine
    return be


def test_shipped_model_loads_with_card(shipped: Backend) -> None:
    assert shipped.model_id.startswith("digits16@")
    assert (shipped.sample_size, shipped.num_classes, shipped.in_channels) == (16, 10, 1)
    assert 1_000_000 < shipped.describe()["parameters"] < 1_200_000
    card = read_card(shipped.model_dir)
    assert card is not None and card["training"]["steps_done"] == card["config"]["steps"]
    # the card records how quality was measured; the quality itself is measured below, not read
    assert card["quality"] and all({"agreement", "n"} <= set(q) for q in card["quality"])


def test_label_agreement_of_shipped_model(shipped: Backend) -> None:
    scorer = DigitScorer.fit(size=16, seed=0)
    labels = np.arange(100) % 10
    seeds = [10_000 + i for i in range(100)]
    images = shipped.generate([int(v) for v in labels], seeds, 20, "ddim")
    result = scorer.agreement(images, labels)
    assert result["agreement"] >= 0.9, result


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_chain_split_on_trained_weights(request: pytest.FixtureRequest, engine: str) -> None:
    shipped = _on(request, engine)
    other = load_backend(device="cpu", threads=1, engine=engine)
    for scheduler in ("ddim", "ddpm"):
        st = shipped.run_steps(shipped.start_chain(8, 3, 30, scheduler), 11)
        resumed = ChainState.from_wire(msgpack.unpackb(msgpack.packb(st.to_wire())))
        a = other.finish_chain(other.run_steps(resumed, 30))
        assert np.array_equal(a, shipped.generate([8], [3], 30, scheduler)[0])


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("side", [32, pytest.param(48, marks=pytest.mark.slow)])
def test_tile_repair_psnr_against_untiled(
    request: pytest.FixtureRequest, side: int, engine: str
) -> None:
    """Scratch-like damage (about 10-14 % of the canvas), halo 4: tiled within 25 dB of untiled."""
    shipped = _on(request, engine)
    report, _ = tile_vs_untiled(shipped, side, halo=4, steps=20, seed=5, mask_kind="scratches")
    assert report["known_region_kept"]
    assert report["psnr_db"] >= 25.0, report


def test_onnx_engine_draws_the_same_digits_as_torch(
    shipped: Backend, shipped_onnx: Backend
) -> None:
    """Last-bit differences in the UNet output do not change the images (20 DDIM steps)."""
    labels, seeds = [0, 3, 5, 8], [7, 8, 9, 10]
    a = shipped.generate(labels, seeds, 20, "ddim")
    b = shipped_onnx.generate(labels, seeds, 20, "ddim")
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
    assert shipped_onnx.model_id == shipped.model_id + "+onnx-cpu"
