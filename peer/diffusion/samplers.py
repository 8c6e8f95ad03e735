"""Samplers: one reverse-diffusion step each, with the noise passed in.

A sampler wraps a diffusers scheduler built from the model's scheduler config and exposes the
step as a pure function of (model output, step index, sample, noise). The executor draws every
random number itself, from per-image (or per-canvas) generators, so the same noise can be
replayed anywhere: on a second peer that resumes a chain, or on a tile cropped from a canvas.
The only state is the step count, which fixes the timestep list; nothing else has to travel.

Adding a scheduler means one class here and one entry in `SAMPLERS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from peer.diffusion.errors import InvalidRequestError, ModelLoadError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class Sampler:
    """Base: the timestep list for `steps` steps and the noise-level table."""

    name = "base"
    stochastic = False  # whether `step` consumes a fresh noise tensor

    def __init__(self, scheduler: Any, steps: int) -> None:
        total = int(scheduler.config.num_train_timesteps)
        if not 1 <= steps <= total:
            raise InvalidRequestError(f"steps must be in [1, {total}], got {steps}")
        scheduler.set_timesteps(steps)
        self.scheduler = scheduler
        self.steps = steps
        self.timesteps: list[int] = [int(t) for t in scheduler.timesteps]
        self.alphas_cumprod: torch.Tensor = scheduler.alphas_cumprod.to(torch.float32)
        self.prediction_type = str(scheduler.config.prediction_type)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ModelLoadError(f"unsupported prediction_type {self.prediction_type!r}")

    def prev_timestep(self, i: int) -> int:
        """The timestep the sample reaches after step i; -1 means the clean image."""
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """q(x_t | x_0): the clean sample noised to level t (t = -1 returns x0)."""
        if t < 0:
            return x0
        ab = self.alpha_bar(t)
        return x0 * ab**0.5 + noise * (1.0 - ab) ** 0.5

    def step(
        self, model_output: torch.Tensor, i: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError


class DDIMSampler(Sampler):
    """DDIM with eta = 0: deterministic, delegated to diffusers' DDIMScheduler."""

    name = "ddim"
    stochastic = False

    def step(
        self, model_output: torch.Tensor, i: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        out = self.scheduler.step(model_output, self.timesteps[i], sample, eta=0.0)
        return out.prev_sample


class DDPMSampler(Sampler):
    """Ancestral DDPM, written out after diffusers' DDPMScheduler.step with the noise injected."""

    name = "ddpm"
    stochastic = True
    VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")

    def __init__(self, scheduler: Any, steps: int) -> None:
        super().__init__(scheduler, steps)
        self.variance_type = str(scheduler.config.variance_type)
        if self.variance_type not in self.VARIANCE_TYPES:
            raise ModelLoadError(f"unsupported DDPM variance_type {self.variance_type!r}")
        cfg = scheduler.config
        self.clip_range: float | None = (
            float(cfg.clip_sample_range) if cfg.clip_sample and not cfg.thresholding else None
        )
        self.thresholding = bool(cfg.thresholding)

    def step(
        self, model_output: torch.Tensor, i: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        sched = self.scheduler
        t = self.timesteps[i]
        prev_t = self.prev_timestep(i)
        ac = sched.alphas_cumprod
        alpha_prod_t = ac[t]
        alpha_prod_t_prev = ac[prev_t] if prev_t >= 0 else sched.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        if self.prediction_type == "epsilon":
            x0 = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        elif self.prediction_type == "sample":
            x0 = model_output
        else:
            x0 = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        if self.thresholding:
            x0 = sched._threshold_sample(x0)
        elif self.clip_range is not None:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        x0_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
        xt_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
        prev = x0_coeff * x0 + xt_coeff * sample
        if t > 0:
            if noise is None:
                raise InvalidRequestError("the DDPM step needs a noise tensor")
            var = sched._get_variance(t)
            if self.variance_type == "fixed_small_log":
                prev = prev + var * noise
            else:
                prev = prev + (var**0.5) * noise
        return prev


SAMPLERS: Mapping[str, tuple[type[Sampler], str]] = {
    "ddim": (DDIMSampler, "DDIMScheduler"),
    "ddpm": (DDPMSampler, "DDPMScheduler"),
}


def scheduler_names() -> list[str]:
    return sorted(SAMPLERS)


def make_sampler(name: str, scheduler_config: Mapping[str, Any], steps: int) -> Sampler:
    """Build the named sampler for `steps` steps from a diffusers scheduler config."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise InvalidRequestError(
            f"unknown scheduler {name!r}; choose one of {', '.join(scheduler_names())}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise InvalidRequestError(f"steps must be an int, got {type(steps).__name__}")
    import diffusers

    cls, sched_cls_name = SAMPLERS[name]
    sched_cls = getattr(diffusers, sched_cls_name)
    accepted = inspect.signature(sched_cls.__init__).parameters
    cfg = {k: v for k, v in scheduler_config.items() if k in accepted}
    scheduler = sched_cls.from_config(cfg)
    return cls(scheduler, steps)


def coarse_timesteps(timesteps: Sequence[int], start: int, stop: int, evals: int) -> list[int]:
    """The timesteps a coarse jump over fine steps [start, stop) evaluates at, then lands on.

    Returns ``evals + 1`` timesteps (fewer when the segment is shorter): the first is
    ``timesteps[start]``, the last the timestep reached after step ``stop - 1`` (-1: clean).
    """
    if not 0 <= start < stop <= len(timesteps):
        raise InvalidRequestError(f"bad segment [{start}, {stop}) of {len(timesteps)} steps")
    evals = max(1, min(int(evals), stop - start))
    idx = [start + round(k * (stop - start) / evals) for k in range(evals + 1)]
    return [int(timesteps[i]) if i < len(timesteps) else -1 for i in idx]


def ddim_jump(x: Any, eps: Any, alpha_t: float, alpha_prev: float, clip: float | None) -> Any:
    """One deterministic DDIM update from noise level alpha_t to alpha_prev (epsilon model).

    Written after diffusers' ``DDIMScheduler.step`` with eta = 0; works on torch tensors and
    numpy arrays alike.
    """
    x0 = (x - (1.0 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
    if clip is not None:
        x0 = x0.clip(-clip, clip)
    return alpha_prev**0.5 * x0 + (1.0 - alpha_prev) ** 0.5 * eps
