"""Loading a diffusers Stable Diffusion pipeline directory, offline.

Layout (diffusers' standard): `model_index.json` naming the pipeline class and its components,
and one folder per component: `unet/` (`UNet2DConditionModel`), `vae/` (`AutoencoderKL`),
`text_encoder/` (`CLIPTextModel`), `tokenizer/` (`CLIPTokenizer`: vocab.json, merges.txt),
`scheduler/` (scheduler_config.json). What loads: `StableDiffusionPipeline` (text-to-image) and
`StableDiffusionInpaintPipeline` (a 9-channel UNet), SD 1.x and 2.x alike (2.x's OpenCLIP text
encoder is stored as a `CLIPTextModel`; `v_prediction` models run through the same samplers).
A text-to-image pipeline also serves edits, RePaint-style on latents. SD-XL (two text
encoders), ControlNet, safety checkers and feature extractors are not loaded: the first two are
refused with a `ModelLoadError`, the last two are ignored (the runtime returns raw images).

Loading never touches the network: `HF_HUB_OFFLINE=1` is set and every component is read with
`local_files_only=True`. The UNet is prepared for batch-invariant runs exactly as the digits
model is (`peer.diffusion.unet`): 2-D linears one row at a time, channels-last, forwards padded
to an even batch, and 1x1 convolutions (the attention projections of SD 1.x) one sample at a
time (`SampleConv`). The text encoder and the VAE always run one prompt / one latent at a time,
so their outputs never depend on what else a peer computes.
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
from peer.diffusion.unet import make_batch_invariant

PIPELINE_KINDS = {
    "StableDiffusionPipeline": "text2img",
    "StableDiffusionInpaintPipeline": "inpaint",
}
COMPONENTS = {
    "unet": "UNet2DConditionModel",
    "vae": "AutoencoderKL",
    "text_encoder": "CLIPTextModel",
    "tokenizer": "CLIPTokenizer",
}
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)


class SampleConv(nn.Module):
    """A 1x1 `nn.Conv2d` applied one sample at a time.

    On this CPU build a channels-last 1x1 convolution is a GEMM over batch x height x width
    rows, and from 16 rows on (SD's attention `proj_in`/`proj_out`) oneDNN picks another
    blocking: a sample's output then differs in the last bits with the batch it rides in.
    One sample at a time keeps the row count fixed.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[0] > 1:
            return torch.cat([self.conv(x[i : i + 1]) for i in range(x.shape[0])])
        return self.conv(x)


def wrap_pointwise_convs(model: nn.Module) -> int:
    """Wrap every 1x1 `nn.Conv2d` of `model` in a `SampleConv`; return how many."""
    count = 0
    for module in list(model.modules()):
        if isinstance(module, SampleConv):
            continue
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and tuple(child.kernel_size) == (1, 1):
                setattr(module, name, SampleConv(child))
                count += 1
    return count


def is_pipeline_dir(path: str | os.PathLike[str] | None) -> bool:
    """Whether `path` holds a diffusers pipeline (a `model_index.json` naming a text encoder).

    The runtime's `--model` loader asks this to choose between `PipelineBackend` and the UNet
    backend.
    """
    if path is None:
        return False
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True  # looks like one; the loader will say what is wrong with it
    return isinstance(data, dict) and "text_encoder" in data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"missing {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


@dataclass(frozen=True)
class PipelineFiles:
    root: Path
    kind: str  # "text2img" or "inpaint"
    class_name: str
    scheduler_config: dict[str, Any]
    digest: str  # sha256 over every component's config and weights


def resolve_pipeline_dir(model: str | os.PathLike[str]) -> PipelineFiles:
    """Check the layout and component classes of a pipeline directory; nothing is loaded yet."""
    root = Path(model)
    if not root.is_dir():
        raise ModelLoadError(f"pipeline directory not found: {root}")
    index = _read_json(root / "model_index.json")
    cls = index.get("_class_name")
    if cls not in PIPELINE_KINDS:
        raise ModelLoadError(
            f"{root}: pipeline class {cls!r} is not supported; "
            f"supported: {', '.join(sorted(PIPELINE_KINDS))}"
        )
    for name, want in COMPONENTS.items():
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == want):
            raise ModelLoadError(f"{root}: component {name!r} must be a {want}, got {entry!r}")
        if not (root / name).is_dir():
            raise ModelLoadError(f"{root}: component folder {name}/ is missing")
    if "text_encoder_2" in index:
        raise ModelLoadError(f"{root}: two text encoders (SD-XL) are not supported")
    sched = _read_json(root / "scheduler" / "scheduler_config.json")
    h = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder"):
        folder = root / name
        _read_json(folder / "config.json")
        weights = next((folder / w for w in WEIGHT_FILES if (folder / w).is_file()), None)
        if weights is None:
            raise ModelLoadError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")
        h.update((folder / "config.json").read_bytes())
        with weights.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    for name in ("vocab.json", "merges.txt"):
        path = root / "tokenizer" / name
        if not path.is_file():
            raise ModelLoadError(f"{root}: tokenizer/{name} is missing")
        h.update(path.read_bytes())
    h.update(json.dumps(sched, sort_keys=True).encode())
    return PipelineFiles(root, PIPELINE_KINDS[cls], cls, sched, h.hexdigest())


@dataclass
class LoadedPipeline:
    files: PipelineFiles
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    model_id: str


def _quiet() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        dlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - both ship with the install
        pass


def load_pipeline(
    model: str | os.PathLike[str], device: torch.device, dtype: torch.dtype = torch.float32
) -> LoadedPipeline:
    """Load every component of a pipeline directory onto `device`; never touches the network."""
    files = resolve_pipeline_dir(model)
    _quiet()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def load(what: str, fn: Any) -> Any:
        try:
            return fn()
        except ModelLoadError:
            raise
        except Exception as exc:  # diffusers/transformers raise OSError, ValueError, ...
            raise ModelLoadError(f"cannot load {what} from {files.root}: {exc}") from exc

    root = str(files.root)
    unet = load(
        "unet",
        lambda: UNet2DConditionModel.from_pretrained(
            root,
            subfolder="unet",
            local_files_only=True,
            torch_dtype=dtype,
            low_cpu_mem_usage=False,
        ),
    )
    vae = load(
        "vae",
        lambda: AutoencoderKL.from_pretrained(
            root, subfolder="vae", local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False
        ),
    )
    text = load(
        "text_encoder",
        lambda: CLIPTextModel.from_pretrained(
            root, subfolder="text_encoder", local_files_only=True, dtype=dtype
        ),
    )
    tok = load(
        "tokenizer",
        lambda: CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True),
    )
    want_in = 9 if files.kind == "inpaint" else 4
    if int(unet.config.in_channels) != want_in:
        raise ModelLoadError(
            f"{files.root}: a {files.class_name} needs a {want_in}-channel UNet, "
            f"got {unet.config.in_channels}"
        )
    if int(unet.config.cross_attention_dim) != int(text.config.hidden_size):
        raise ModelLoadError(
            f"{files.root}: UNet cross-attention width {unet.config.cross_attention_dim} "
            f"does not match the text encoder's {text.config.hidden_size}"
        )
    for m in (unet, vae, text):
        m.eval().requires_grad_(False)
    make_batch_invariant(unet)
    wrap_pointwise_convs(unet)
    unet = unet.to(device=device, memory_format=torch.channels_last)
    vae = vae.to(device)
    text = text.to(device)
    tag = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    model_id = f"{files.root.resolve().name}@{files.digest[:12]}{tag}"
    return LoadedPipeline(files, unet, vae, text, tok, model_id)
