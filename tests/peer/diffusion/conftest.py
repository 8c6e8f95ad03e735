"""Fixtures: a small random-weights model directory and backends loaded from it.

ONNX exports go to a per-session temporary cache (`$AMCOEDGE_CACHE`), never to ~/.cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from peer.diffusion import Backend, load_backend


def save_tiny_model(path: Path, seed: int = 0, classes: int | None = 10) -> Path:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        num_class_embeds=classes,
    )
    unet.save_pretrained(path / "unet", safe_serialization=True)
    DDPMScheduler(1000, beta_schedule="squaredcos_cap_v2").save_pretrained(path / "scheduler")
    return path


ENGINES = ["torch", "onnx"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMCOEDGE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def make_tiny_model() -> Callable[..., Path]:
    return save_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> Backend:
    return load_backend(tiny_dir, device="cpu", threads=1)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_dir: Path) -> Backend:
    return load_backend(tiny_dir, device="cpu", threads=1, engine="onnx")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tiny_be(engine: str, tiny: Backend, tiny_onnx: Backend) -> Backend:
    """The small model on each engine (tests using it run once per engine)."""
    return tiny if engine == "torch" else tiny_onnx
