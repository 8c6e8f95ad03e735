"""Loading a local diffusers model directory and preparing the UNet for batch-invariant runs.

Accepted layouts (all offline, `local_files_only`):
- a pipeline directory: `unet/` (config.json + weights) and `scheduler/scheduler_config.json`;
- a bare UNet directory: config.json + weights, with `scheduler_config.json` beside them.

Batch invariance. On this CPU build (torch 2.13, oneDNN), a batched `UNet2DModel` forward is
not bit-identical per sample to a batch-1 forward: `nn.Linear` on 2-D inputs (the timestep MLP
and each ResNet's time projection) takes a different GEMM path at different row counts, and the
convolutions take another kernel at batch 1 and with the default memory format. Three settings
together make every sample's output independent of the batch it rides in (checked at 1 and 2
torch threads, 16/32/48 px, batch sizes 1-16, any offset within a batch): 2-D linears run one
row at a time (`RowLinear`), the model runs in `channels_last`, and every forward is padded to
an even batch of at least 2 (`padded_size`, applied by `peer.diffusion.engine.TorchDenoiser`).
The onnx engine needs none of the three; it exports a plain copy (`plain_copy`), see
`peer.diffusion.onnx_engine`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peer.diffusion.errors import ModelLoadError

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
BATCH_QUANTUM = 2  # forwards are padded to a multiple of this, and to at least this


class RowLinear(nn.Module):
    """`nn.Linear` that applies a 2-D input one row at a time (batch-invariant GEMM path)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] > 1:
            return torch.cat([self.linear(x[i : i + 1]) for i in range(x.shape[0])])
        return self.linear(x)


def make_batch_invariant(model: nn.Module) -> int:
    """Wrap every `nn.Linear` of `model` in a `RowLinear`; return how many were wrapped."""
    count = 0
    for module in list(model.modules()):
        if isinstance(module, RowLinear):
            continue
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, RowLinear(child))
                count += 1
    return count


def padded_size(n: int) -> int:
    return max(BATCH_QUANTUM, -(-n // BATCH_QUANTUM) * BATCH_QUANTUM)


@dataclass(frozen=True)
class ModelFiles:
    unet_dir: Path
    weights: Path
    scheduler_config: Path
    root: Path


def shipped_model_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("peer.diffusion") / "assets" / "digits16"))


def resolve_model_dir(model: str | os.PathLike[str] | None) -> ModelFiles:
    root = shipped_model_dir() if model is None else Path(model)
    if not root.is_dir():
        raise ModelLoadError(f"model directory not found: {root}")
    if (root / "unet").is_dir():
        unet_dir = root / "unet"
        sched = root / "scheduler" / "scheduler_config.json"
    else:
        unet_dir = root
        sched = root / "scheduler_config.json"
    if not (unet_dir / "config.json").is_file():
        raise ModelLoadError(f"no UNet config.json in {unet_dir}")
    weights = next((unet_dir / n for n in WEIGHT_NAMES if (unet_dir / n).is_file()), None)
    if weights is None:
        raise ModelLoadError(f"no UNet weights ({' or '.join(WEIGHT_NAMES)}) in {unet_dir}")
    if not sched.is_file():
        raise ModelLoadError(f"no scheduler config at {sched}")
    return ModelFiles(unet_dir, weights, sched, root)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def weights_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class LoadedModel:
    unet: Any
    scheduler_config: dict[str, Any]
    model_id: str
    files: ModelFiles
    weights_sha256: str = ""


def load_model(model: str | os.PathLike[str] | None, device: torch.device) -> LoadedModel:
    """Load and prepare a UNet2DModel and its scheduler config; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    files = resolve_model_dir(model)
    unet_cfg = _read_json(files.unet_dir / "config.json")
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelLoadError(
            f"only UNet2DModel is supported, {files.unet_dir} holds {unet_cfg.get('_class_name')}"
        )
    sched_cfg = _read_json(files.scheduler_config)
    from diffusers import UNet2DModel

    try:
        unet = UNet2DModel.from_pretrained(
            str(files.unet_dir),
            local_files_only=True,
            use_safetensors=files.weights.suffix == ".safetensors",
            low_cpu_mem_usage=False,
        )
    except Exception as exc:  # diffusers raises OSError, ValueError, SafetensorError, ...
        raise ModelLoadError(f"cannot load UNet from {files.unet_dir}: {exc}") from exc
    unet.eval().requires_grad_(False)
    make_batch_invariant(unet)
    unet = unet.to(device=device, memory_format=torch.channels_last)
    digest = weights_digest(files.weights)
    name = "digits16" if model is None else files.root.resolve().name
    return LoadedModel(unet, sched_cfg, f"{name}@{digest[:12]}", files, digest)


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of a prepared model with the batch-invariance wrappers taken off.

    `RowLinear` loops over rows in Python, which a trace would unroll at the traced batch size;
    the export wants plain `nn.Linear` and the default memory format (the ONNX graph is NCHW).
    """
    import copy

    clone: Any = copy.deepcopy(model)
    for module in list(clone.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, RowLinear):
                setattr(module, name, child.linear)
    plain: nn.Module = clone.to(memory_format=torch.contiguous_format)
    return plain
