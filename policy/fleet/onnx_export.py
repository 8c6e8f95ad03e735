"""Export the recruitment network to ONNX with a dynamic peer axis, and check parity."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.fleet.features import N_FEATURES
from policy.fleet.network import RecruiterNet
from policy.fleet.train import load_net

PARITY_SIZES: tuple[int, ...] = (1, 2, 5, 17, 64)
OPSET = 17


def export_net(net: RecruiterNet, path: str | Path) -> Path:
    """Write ``net`` as ONNX: input ``features`` (peers, F); outputs ``q`` (A,), ``score`` (peers, H)."""
    net.eval()
    example = torch.zeros(3, N_FEATURES)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(out),
            input_names=["features"],
            output_names=["q", "score"],
            dynamic_axes={"features": {0: "peers"}, "score": {0: "peers"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return out


def export_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """The ``export.py`` entry for ``kind == "fleet-recruiter"`` checkpoints."""
    return export_net(load_net(ckpt), path)


def parity(
    net: RecruiterNet, path: str | Path, sizes: tuple[int, ...] = PARITY_SIZES, seed: int = 0
) -> dict[int, float]:
    """Max abs difference between torch and onnxruntime outputs for each candidate count."""
    from policy.ort import OrtModel

    model = OrtModel(path)
    rng = np.random.default_rng(seed)
    out: dict[int, float] = {}
    net.eval()
    for n in sizes:
        feats = rng.normal(0.0, 1.0, (n, N_FEATURES)).astype(np.float32)
        with torch.inference_mode():
            q_t, s_t = net(torch.from_numpy(feats))
        q_o, s_o = model.run({"features": feats})
        out[n] = float(max(np.max(np.abs(q_t.numpy() - q_o)), np.max(np.abs(s_t.numpy() - s_o))))
    return out
