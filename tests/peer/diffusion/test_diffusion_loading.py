"""Loading local diffusers model directories; samplers agree with diffusers' schedulers."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from peer.diffusion import Backend, InvalidRequestError, load_backend
from peer.diffusion.samplers import make_sampler


def test_pipeline_layout_loads(tiny: Backend, tiny_dir: Path) -> None:
    assert tiny.sample_size == 16
    assert tiny.num_classes == 10
    assert tiny.device == "cpu"
    assert tiny.model_id.startswith(tiny_dir.name + "@")
    again = load_backend(str(tiny_dir), device="cpu", threads=1)
    assert again.model_id == tiny.model_id


def test_bare_unet_layout_loads(tiny_dir: Path, tmp_path: Path, tiny: Backend) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir / "unet", bare)
    shutil.copy(tiny_dir / "scheduler" / "scheduler_config.json", bare)
    be = load_backend(bare, device="cpu")
    assert np.array_equal(be.generate([2], [3], 4), tiny.generate([2], [3], 4))


def test_unconditional_model(make_tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    be = load_backend(make_tiny_model(tmp_path / "uncond", classes=None), device="cpu")
    assert be.num_classes is None
    imgs = be.generate(None, [1, 2], 4, "ddpm")
    assert imgs.shape == (2, 16, 16)
    assert np.array_equal(imgs[1], be.generate([None], [2], 4, "ddpm")[0])
    with pytest.raises(InvalidRequestError):
        be.generate([3], [1], 4)
    mask = np.zeros((16, 16), bool)
    mask[:8] = True
    out = be.repair(imgs[0], mask, 4, 1)
    assert np.array_equal(out[8:], imgs[0][8:])


def test_missing_label_is_derived_from_the_seed(tiny: Backend) -> None:
    st = tiny.start_chain(None, 1234, 4)
    assert st.label is not None and 0 <= st.label < 10
    assert tiny.start_chain(None, 1234, 4).label == st.label


def test_auto_device_is_cpu_here(tiny_dir: Path) -> None:
    be = load_backend(tiny_dir, device="auto")
    assert be.device == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("steps", [1, 10, 50])
def test_ddpm_sampler_matches_diffusers(tiny_dir: Path, steps: int) -> None:
    from diffusers import DDPMScheduler

    cfg = DDPMScheduler.load_config(str(tiny_dir / "scheduler"))
    sampler = make_sampler("ddpm", cfg, steps)
    ref = DDPMScheduler.from_config(cfg)
    ref.set_timesteps(steps)
    assert sampler.timesteps == [int(t) for t in ref.timesteps]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 16, 16), generator=gen)
    for i, t in enumerate(sampler.timesteps):
        eps = torch.randn((2, 1, 16, 16), generator=gen)
        g_ref = torch.Generator().manual_seed(100 + i)
        noise = torch.randn((2, 1, 16, 16), generator=torch.Generator().manual_seed(100 + i))
        want = ref.step(eps, t, x, generator=g_ref).prev_sample
        got = sampler.step(eps, i, x, noise)
        assert torch.equal(got, want), (i, t)
        x = got


def test_ddim_sampler_timesteps_and_noise_levels(tiny_dir: Path) -> None:
    from diffusers import DDPMScheduler

    cfg = DDPMScheduler.load_config(str(tiny_dir / "scheduler"))
    sampler = make_sampler("ddim", cfg, 20)
    assert len(sampler.timesteps) == 20
    assert sampler.timesteps == sorted(sampler.timesteps, reverse=True)
    assert sampler.prev_timestep(19) == -1
    assert sampler.alpha_bar(-1) == 1.0
    x0 = torch.ones(1, 1, 4, 4)
    assert torch.equal(sampler.add_noise(x0, torch.zeros_like(x0), -1), x0)
