"""Training the embedded model: a class-conditional DDPM on the bundled digits at 16x16.

The recipe is fixed by `TrainConfig`; a run is reproducible for a given seed, step count and
torch thread count. `--minutes` only caps wall time for quick experiments; the shipped model
uses a fixed step count. The output directory is a diffusers pipeline layout
(`model_index.json`, `unet/`, `scheduler/`) plus `model_card.md` and `model_card.json`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from peer.diffusion.data import load_digits_tensor
from peer.diffusion.errors import TrainingError


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; every field is recorded in the model card."""

    steps: int = 1500  # optimiser steps; fixed so that a run is reproducible
    batch_size: int = 128  # 128 of 1797 digits per step
    lr: float = 2e-3  # AdamW, constant after warm-up
    warmup_steps: int = 50  # linear learning-rate warm-up
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # EMA of the weights, with the usual (1+t)/(10+t) warm-up
    seed: int = 0
    threads: int = 1  # torch threads; part of what makes a run reproducible
    sample_size: int = 16
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_class_embeds: int = 10
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"


DIGITS16 = TrainConfig()


def build_unet(cfg: TrainConfig) -> Any:
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=cfg.block_out_channels,
        down_block_types=cfg.down_block_types,
        up_block_types=cfg.up_block_types,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        num_class_embeds=cfg.num_class_embeds,
    )


def build_scheduler(cfg: TrainConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule
    )


@dataclass
class TrainResult:
    steps_done: int
    seconds: float
    final_loss: float  # mean loss over the last 100 steps
    loss_curve: list[tuple[int, float]]  # (step, mean loss over the preceding window)


def train(
    cfg: TrainConfig,
    out_dir: Path,
    minutes: float | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train with `cfg` and save the EMA weights to `out_dir`. Blocking."""
    if cfg.steps < 1:
        raise TrainingError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.batch_size < 1:
        raise TrainingError(f"batch_size must be >= 1, got {cfg.batch_size}")
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = load_digits_tensor(cfg.sample_size)
    unet = build_unet(cfg)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    sched = build_scheduler(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = x_all.shape[0]
    t0 = time.monotonic()
    deadline = None if minutes is None else t0 + minutes * 60.0
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    bar = tqdm(total=cfg.steps, desc="train digits16", unit="step", disable=not progress)
    step = 0
    unet.train()
    while step < cfg.steps:
        if deadline is not None and time.monotonic() > deadline:
            break
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        x0, y = x_all[idx], y_all[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        pred = unet(xt, t, class_labels=y).sample
        loss = F.mse_loss(pred, noise)
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.mul_(decay).add_(pm.detach(), alpha=1.0 - decay)
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrainingError(f"loss became {value} at step {step}")
        losses.append(value)
        step += 1
        if step % 100 == 0:
            curve.append((step, sum(losses[-100:]) / len(losses[-100:])))
        if on_step is not None:
            on_step(step, value)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    bar.close()
    seconds = time.monotonic() - t0
    tail = losses[-100:] or [float("nan")]
    result = TrainResult(step, seconds, sum(tail) / len(tail), curve)
    save_model(ema, sched, out_dir)
    return result


def save_model(unet: Any, scheduler: Any, out_dir: Path) -> None:
    """Write a diffusers pipeline layout: model_index.json, unet/, scheduler/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    scheduler.save_pretrained(out_dir / "scheduler")
    index = {
        "_class_name": "DDPMPipeline",
        "_diffusers_version": _diffusers_version(),
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", type(unet).__name__],
    }
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _diffusers_version() -> str:
    import diffusers

    return str(diffusers.__version__)
