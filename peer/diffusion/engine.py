"""Denoiser engines: what runs the UNet forward of one denoising step.

The backend (`peer.diffusion.backend`) owns the loop, the samplers and all randomness; an engine
only maps `(rows, t, class labels)` to the model output for those rows. Two engines exist:

- `torch`: the diffusers `UNet2DModel` in PyTorch eager, prepared for batch invariance (2-D
  linears one row at a time, `channels_last`, every forward padded to an even batch of at least
  2; see `peer.diffusion.unet`). Its numerics are the model's reference.
- `onnx`: the same UNet exported to ONNX and run by onnxruntime (`peer.diffusion.onnx_engine`).
  For the small models this project ships, most of an eager step is framework overhead, which
  onnxruntime does not pay. Its outputs differ from torch's in the last bits (about 3e-6), so
  the two engines are never mixed in one request: an onnx backend's `model_id` carries the suffix
  `+onnx-cpu` (or `+onnx-cuda`), peers only collaborate with peers of the same `model_id`, and a
  chain state is only resumed by a backend with the same `model_id`.

`auto` loads both, times one denoising step of each at a couple of batch sizes and keeps the
faster; the figures stay available in `Backend.engine_info()`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

import torch

from peer.diffusion.errors import InvalidRequestError
from peer.diffusion.unet import padded_size

EngineName = Literal["torch", "onnx"]
ENGINE_CHOICES = ("auto", "torch", "onnx")
AUTO_BATCHES = (1, 8)  # batch sizes `auto` times each engine at
AUTO_REPEATS = 5
AUTO_WARMUP = 2


def check_engine(engine: object) -> str:
    """The requested engine name, validated (`auto`, `torch` or `onnx`)."""
    if not isinstance(engine, str) or engine not in ENGINE_CHOICES:
        raise InvalidRequestError(
            f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}"
        )
    return engine


class Denoiser(Protocol):
    """One UNet forward: model output for `rows` (m, C, H, W) at timestep `t`."""

    name: EngineName
    provider: str

    def __call__(self, rows: torch.Tensor, t: int, cls: torch.Tensor | None) -> torch.Tensor: ...


class TorchDenoiser:
    """PyTorch eager over the batch-invariant UNet: pads to an even batch, `channels_last`."""

    name: EngineName = "torch"

    def __init__(self, unet: torch.nn.Module, device: torch.device) -> None:
        self._unet = unet
        self._device = device
        self.provider = f"torch-{device.type}"

    def __call__(self, rows: torch.Tensor, t: int, cls: torch.Tensor | None) -> torch.Tensor:
        m = rows.shape[0]
        p = padded_size(m)
        if p > m:
            rows = torch.cat([rows, rows[-1:].expand(p - m, *rows.shape[1:])])
            if cls is not None:
                cls = torch.cat([cls, cls[-1:].expand(p - m)])
        rows = rows.to(self._device).contiguous(memory_format=torch.channels_last)
        tt = torch.full((p,), t, dtype=torch.long, device=self._device)
        cls_dev = None if cls is None else cls.to(self._device)
        out: torch.Tensor = self._unet(rows, tt, class_labels=cls_dev).sample
        return out[:m].contiguous()


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, sync: bool) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` untimed ones."""
    times = []
    for r in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibration_seconds(
    steps: Mapping[int, Callable[[], object]],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[tuple[int, float]]:
    """(batch, seconds) per batch size: the least of ``repeats`` timings by ``clock``.

    The sizes are timed round-robin, so that a burst of other work (peers starting beside this
    one, a CFS quota's throttled slice) falls on every size alike rather than on the last few;
    and the least of each size's timings is kept, as such work only ever adds time. A single-
    threaded CPU engine is timed by its thread's CPU time (``time.thread_time``), which neither
    descheduling nor a quota's throttling advances: start-up calibrations of five peers on two
    shared cores came out with a fixed cost from 0 to 30x the engine's own.
    """
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    best: dict[int, float] = {}
    for _ in range(repeats):
        for b, fn in steps.items():
            t0 = clock()
            fn()
            t = clock() - t0
            best[b] = min(t, best.get(b, t))
    return list(best.items())
