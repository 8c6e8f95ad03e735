"""Bad input on every surface raises a typed DiffusionError, and the backend keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import pytest

from peer.diffusion import (
    Backend,
    ChainState,
    ChainStateError,
    DiffusionError,
    InvalidRequestError,
    ModelLoadError,
    Tile,
    blend_tiles,
    load_backend,
    plan_tiles,
)


def _img() -> np.ndarray:
    return np.zeros((16, 16), dtype=np.uint8)


@pytest.mark.parametrize(
    "call",
    [
        lambda be: be.repair(_img(), np.zeros((15, 16), bool), 5, 1, label=1),
        lambda be: be.repair(_img(), np.zeros((16, 16), np.uint8), 5, 1, label=1),
        lambda be: be.repair(_img().astype(np.float32), np.zeros((16, 16), bool), 5, 1),
        lambda be: be.repair(np.zeros((18, 18), np.uint8), np.ones((18, 18), bool), 5, 1),
        lambda be: be.repair(_img(), np.ones((16, 16), bool), 5, 1, label=10),
        lambda be: be.repair(_img(), np.ones((16, 16), bool), 0, 1, label=1),
        lambda be: be.repair(_img(), np.ones((16, 16), bool), 5, -1, label=1),
        lambda be: be.generate([10], [1], 5),
        lambda be: be.generate([-1], [1], 5),
        lambda be: be.generate([True], [1], 5),
        lambda be: be.generate([1, 2], [1], 5),
        lambda be: be.generate([], [], 5),
        lambda be: be.generate([1], [1], 0),
        lambda be: be.generate([1], [1], 1001),
        lambda be: be.generate([1], [1], 5, scheduler="euler"),
        lambda be: be.generate([1], ["x"], 5),
        lambda be: be.start_chain(3, 1, 5, "nope"),
        lambda be: be.repair_tile(_img(), np.ones((16, 16), bool), Tile(8, 8, 24, 24), 5, 1),
        lambda be: be.calibrate(batch_sizes=(2,)),
    ],
)
def test_bad_requests_raise_invalid_request(tiny: Backend, call: object) -> None:
    with pytest.raises(InvalidRequestError):
        call(tiny)  # type: ignore[operator]
    assert tiny.generate([1], [1], 2).shape == (1, 16, 16)  # still serving


def test_chain_errors(tiny: Backend, make_tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    st = tiny.start_chain(3, 1, 6, "ddim")
    with pytest.raises(ChainStateError):
        tiny.finish_chain(st)
    with pytest.raises(InvalidRequestError):
        tiny.run_steps(st, 7)
    half = tiny.run_steps(st, 3)
    with pytest.raises(InvalidRequestError):
        tiny.run_steps(half, 2)  # cannot run backwards
    assert tiny.run_steps(half, 3) == half
    other = load_backend(make_tiny_model(tmp_path / "other", seed=1), device="cpu")
    with pytest.raises(ChainStateError, match="model"):
        other.run_steps(half, 6)
    with pytest.raises(ChainStateError):
        tiny.run_chains([half, st], 6)
    with pytest.raises(ChainStateError):
        tiny.run_steps("not a state", 6)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("latent"),
        lambda d: d.update(latent=d["latent"][:-4]),
        lambda d: d.update(latent=b"\x00\x00\xc0\x7f" * 256),  # NaNs
        lambda d: d.update(shape=[1, 1, 16]),
        lambda d: d.update(shape=[2, 1, 16, 8]),
        lambda d: d.update(step=7),
        lambda d: d.update(step=-1),
        lambda d: d.update(total=0),
        lambda d: d.update(v=2),
        lambda d: d.update(dtype="float16"),
        lambda d: d.update(rng_state=b"short"),
        lambda d: d.update(label="3"),
        lambda d: d.update(label=-5),
        lambda d: d.update(seed=True),
        lambda d: d.update(seed=-3),
    ],
)
def test_from_wire_rejects_bad_states(tiny: Backend, mutate: object) -> None:
    d = msgpack.unpackb(msgpack.packb(tiny.start_chain(3, 1, 6, "ddpm").to_wire()))
    mutate(d)  # type: ignore[operator]
    with pytest.raises(ChainStateError):
        ChainState.from_wire(d)


def test_from_wire_rejects_non_dict() -> None:
    with pytest.raises(ChainStateError):
        ChainState.from_wire([1, 2, 3])


def test_wire_scheduler_unknown_to_backend(tiny: Backend) -> None:
    d = tiny.start_chain(3, 1, 6, "ddpm").to_wire()
    d["scheduler"] = "dpm"
    st = ChainState.from_wire(d)
    with pytest.raises(ChainStateError):
        tiny.run_steps(st, 2)


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend(tmp_path / "absent", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError):
        load_backend(tmp_path / "empty", device="cpu")


def test_corrupt_safetensors(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError):
        load_backend(bad, device="cpu")
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError):
        load_backend(bad, device="cpu")


def test_missing_scheduler_config(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "nosched"
    shutil.copytree(tiny_dir, bad)
    shutil.rmtree(bad / "scheduler")
    with pytest.raises(ModelLoadError, match="scheduler"):
        load_backend(bad, device="cpu")


def test_bad_backend_arguments(tiny_dir: Path) -> None:
    with pytest.raises(InvalidRequestError):
        load_backend(tiny_dir, device="tpu")
    with pytest.raises(InvalidRequestError):
        load_backend(tiny_dir, device="cpu", threads=0)


def test_tiling_errors() -> None:
    with pytest.raises(InvalidRequestError):
        plan_tiles(8, 32, 16, 4)
    with pytest.raises(InvalidRequestError):
        plan_tiles(32, 32, 16, 8)
    with pytest.raises(InvalidRequestError):
        plan_tiles(32, 32, 0, 0)
    with pytest.raises(InvalidRequestError):
        blend_tiles((32, 32), [(Tile(0, 0, 16, 16), np.zeros((16, 16), np.uint8))])
    with pytest.raises(InvalidRequestError):
        blend_tiles((32, 32), [(Tile(0, 0, 16, 16), np.zeros((8, 8), np.uint8))])
    with pytest.raises(InvalidRequestError):
        Tile.from_wire([0, 0, 16])
    with pytest.raises(InvalidRequestError):
        Tile.from_wire([4, 0, 2, 16])


def test_every_error_is_a_diffusion_error() -> None:
    for cls in (InvalidRequestError, ModelLoadError, ChainStateError):
        assert issubclass(cls, DiffusionError)
