"""Export the recruitment network to ONNX with a dynamic peer axis, and check parity.

The graph has one input ``features`` (peers, F) and one output ``policy`` (peers, A + H), so it
also fits :mod:`policy.export`'s single-input, single-output exporters (``kind:
fleet-recruiter``, via :func:`exportable`); :func:`export_net` is the quick direct export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.exportable import Exportable, ExportError, write_onnx
from policy.fleet.features import N_FEATURES
from policy.fleet.network import RecruiterNet
from policy.fleet.train import load_net

PARITY_SIZES: tuple[int, ...] = (1, 2, 5, 17, 64)
OPSET = 18
INPUT_NAME = "features"
OUTPUT_NAME = "policy"


def exportable(ckpt: dict[str, Any]) -> Exportable:
    """The :data:`policy.export.EXPORTERS` builder for ``fleet-recruiter`` checkpoints."""
    try:
        net = load_net(ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ExportError(f"malformed fleet-recruiter checkpoint: {exc}") from exc
    return Exportable(net, torch.zeros(4, N_FEATURES), INPUT_NAME, OUTPUT_NAME)


def export_net(net: RecruiterNet, path: str | Path) -> Path:
    """Write ``net`` as ONNX (TorchScript exporter, dynamic peer axis)."""
    ex = Exportable(net, torch.zeros(3, N_FEATURES), INPUT_NAME, OUTPUT_NAME)
    return write_onnx(ex, path, opset=OPSET, axis="peers", exporter="legacy").path


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
            ref = net(torch.from_numpy(feats)).numpy()
        (got,) = model.run({model.input_names[0]: feats})
        if got.shape != ref.shape:
            raise ValueError(f"N={n}: onnx output shape {got.shape} != torch {ref.shape}")
        out[n] = float(np.max(np.abs(ref - got)))
    return out
