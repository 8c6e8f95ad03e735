"""`amcoedge bench denoiser`: ms per denoising step for each engine, measured in one run.

Both engines are loaded in one process with the same weights and thread count. For each batch
size the two engines' steps are timed alternately (torch, onnx, torch, ...), so a change in the
machine's load during the run touches both alike; each figure is the median of its repeats.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from peer.diffusion.backend import MAX_BATCH, load_backend
from peer.diffusion.errors import InvalidRequestError
from peer.diffusion.onnx_engine import onnxruntime_version


def parse_batches(text: str) -> list[int]:
    """`1,2,8,32` -> [1, 2, 8, 32]; each in [1, MAX_BATCH], no duplicates."""
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InvalidRequestError(f"batches must be comma-separated ints, got {text!r}") from exc
    if not sizes or any(not 1 <= b <= MAX_BATCH for b in sizes) or len(set(sizes)) != len(sizes):
        raise InvalidRequestError(
            f"batches must be distinct ints in [1, {MAX_BATCH}], got {text!r}"
        )
    return sizes


def bench_denoiser(
    model: str | None,
    device: str,
    threads: int,
    batches: Sequence[int],
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    if repeats < 1 or warmup < 0:
        raise InvalidRequestError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    torch_be = load_backend(model, device=device, threads=threads, engine="torch")
    onnx_be = load_backend(model, device=device, threads=threads, engine="onnx")
    rows = []
    for b in batches:
        timers = {"torch": torch_be.step_timer(b), "onnx": onnx_be.step_timer(b)}
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for r in range(warmup + repeats):
            for name, timer in timers.items():
                seconds = timer()
                if r >= warmup:
                    times[name].append(seconds)
        t_ms = statistics.median(times["torch"]) * 1e3
        o_ms = statistics.median(times["onnx"]) * 1e3
        rows.append(
            {
                "batch": b,
                "torch_ms_per_step": round(t_ms, 3),
                "onnx_ms_per_step": round(o_ms, 3),
                "speedup": round(t_ms / o_ms, 3),
            }
        )
    info = onnx_be.engine_info()
    return {
        "model_id": torch_be.model_id,
        "device": torch_be.device,
        "threads": threads,
        "repeats": repeats,
        "warmup": warmup,
        "statistic": "median",
        "providers": {"torch": torch_be.provider, "onnx": onnx_be.provider},
        "onnx_model": info["onnx_model"],
        "onnx_export": info["onnx_export"],
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime_version(),
            "python": platform.python_version(),
        },
        "rows": rows,
    }
