"""ONNX decision latency of the shipped recruitment network for several candidate counts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policy.fleet.features import CandidateArrays, build_features
from policy.ort import OrtModel, ort_version

DEFAULT_SIZES: tuple[int, ...] = (4, 16, 32, 64)


def _arrays(n: int, rng: np.random.Generator) -> CandidateArrays:
    is_self = np.zeros(n)
    is_self[0] = 1.0
    return CandidateArrays(
        is_self=is_self,
        wait=rng.uniform(0.0, 2.0, n),
        age=rng.uniform(0.0, 1.0, n) * (1.0 - is_self),
        fixed=rng.uniform(0.05, 0.5, n),
        unit=rng.uniform(0.02, 0.2, n),
        xfer=rng.uniform(0.0, 0.005, n) * (1.0 - is_self),
        own=rng.uniform(0.0, 0.5, n),
    )


def onnx_latency(
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeats: int = 2000,
    warmup: int = 200,
    model_path: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """p50/p99 microseconds of one onnxruntime call (one thread) per candidate count.

    ``onnx_us`` times the session run alone; ``features_us`` the feature build before it.
    """
    from policy.fleet.recruiters import DEFAULT_MODEL

    model = OrtModel(model_path or DEFAULT_MODEL, intra_op_threads=1, inter_op_threads=1)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "provider": model.provider,
        "providers": model.providers,
        "onnxruntime": ort_version(),
        "threads": {"intra_op": 1, "inter_op": 1},
        "repeats": repeats,
        "sizes": {},
    }
    for n in sizes:
        arr = _arrays(int(n), rng)
        feeds = {"features": build_features(arr, 8, 10.0)}
        for _ in range(warmup):
            model.run(feeds)
        run_ns = np.empty(repeats)
        feat_ns = np.empty(repeats)
        for i in range(repeats):
            t0 = time.perf_counter_ns()
            f = build_features(arr, 8, 10.0)
            t1 = time.perf_counter_ns()
            model.run({"features": f})
            t2 = time.perf_counter_ns()
            feat_ns[i] = t1 - t0
            run_ns[i] = t2 - t1
        out["sizes"][str(n)] = {
            "onnx_us_p50": float(np.percentile(run_ns, 50) / 1e3),
            "onnx_us_p99": float(np.percentile(run_ns, 99) / 1e3),
            "features_us_p50": float(np.percentile(feat_ns, 50) / 1e3),
            "features_us_p99": float(np.percentile(feat_ns, 99) / 1e3),
        }
    return out
