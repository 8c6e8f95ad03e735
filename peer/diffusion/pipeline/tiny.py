"""A tiny, randomly initialised Stable Diffusion pipeline in the standard diffusers layout.

Built from configs only (nothing downloaded): `model_index.json`, `unet/`, `vae/`,
`text_encoder/`, `tokenizer/` (a CLIP byte-level BPE vocabulary and merges learned here from a
small built-in word list), `scheduler/`. The shapes follow SD 1.x (a `UNet2DConditionModel` with
cross-attention, an `AutoencoderKL`, a `CLIPTextModel`, 77-token prompts) at a few channels, so
every code path of a real pipeline runs in milliseconds. `inpaint=True` writes the inpainting
variant (a 9-channel UNet: latent, mask, masked-image latent).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from peer.diffusion.errors import InvalidRequestError

# Words the tiny tokenizer learns its merges from; any text still tokenizes (byte fallback).
_CORPUS = (
    "a photo of the cat dog on in with and red blue green yellow black white small large "
    "house tree sky mountain river city street car flower portrait painting oil digital art "
    "sunset night light dark old new beautiful detailed high quality landscape face woman man "
    "blurry ugly low resolution watermark text"
)
MODEL_MAX_LENGTH = 77
DIFFUSERS_VERSION = "0.30.0"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def learn_bpe(words: list[str], merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary (bytes, bytes + '</w>', merges, specials) from `words`."""
    table = bytes_to_unicode()
    base = list(table.values())
    vocab_list = base + [c + "</w>" for c in base]
    seqs: Counter[tuple[str, ...]] = Counter()
    for w in words:
        chars = [table[b] for b in w.encode("utf-8")]
        seqs[(*chars[:-1], chars[-1] + "</w>")] += 1
    learned: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for seq, n in seqs.items():
            for a, b in itertools.pairwise(seq):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        learned.append(best)
        vocab_list.append(best[0] + best[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for seq, n in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            merged[tuple(out)] += n
        seqs = merged
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, learned


def write_tokenizer(out: Path, merges: int = 200) -> int:
    """vocab.json, merges.txt and the tokenizer configs of a CLIPTokenizer; returns vocab size."""
    vocab, learned = learn_bpe(_CORPUS.split(), merges)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in learned]
    (out / "merges.txt").write_text("\n".join(lines) + "\n")
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return len(vocab)


def _scheduler_config() -> dict[str, Any]:
    """SD 1.5's scheduler config (PNDM in the original; every sampler here reads the betas)."""
    return {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
        "prediction_type": "epsilon",
        "trained_betas": None,
    }


def make_tiny_sd(
    out: str | Path,
    inpaint: bool = False,
    sample_size: int = 32,
    seed: int = 0,
    sd15_shape: bool = False,
) -> Path:
    """Write a randomly initialised pipeline to `out` (created; must be empty or absent).

    `sample_size` is the image side in pixels. Tiny: latents are `sample_size / 4` (a 3-block
    VAE), a 2-block UNet of 8/16 channels, a 2-layer 32-wide CLIP text encoder. `sd15_shape`:
    the real SD 1.5 architecture (860 M UNet, 84 M VAE, 123 M text encoder) with random
    weights, for benchmarks; latents are then `sample_size / 8`.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise InvalidRequestError(f"{root} exists and is not empty")
    torch.manual_seed(seed)
    vocab_size = write_tokenizer(root / "tokenizer", merges=200 if not sd15_shape else 400)
    if sd15_shape:
        if sample_size % 64:
            raise InvalidRequestError(
                f"an SD-1.5-shaped sample_size is a multiple of 64, got {sample_size}"
            )
        vae_blocks: tuple[int, ...] = (128, 256, 512, 512)
        unet_kw: dict[str, Any] = {
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        }
        text_cfg = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=MODEL_MAX_LENGTH,
            hidden_act="quick_gelu",
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
        vae_groups = 32
    else:
        if sample_size % 16 or sample_size < 16:
            raise InvalidRequestError(f"a tiny sample_size is a multiple of 16, got {sample_size}")
        vae_blocks = (8, 8, 8)
        unet_kw = {
            "block_out_channels": (8, 16),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
            "norm_num_groups": 4,
        }
        text_cfg = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MODEL_MAX_LENGTH,
            hidden_act="quick_gelu",
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
        vae_groups = 4
    factor = 2 ** (len(vae_blocks) - 1)
    latent = sample_size // factor
    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_blocks),
        up_block_types=("UpDecoderBlock2D",) * len(vae_blocks),
        block_out_channels=vae_blocks,
        layers_per_block=2 if sd15_shape else 1,
        latent_channels=4,
        norm_num_groups=vae_groups,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )
    unet: Any = UNet2DConditionModel(
        sample_size=latent,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        **unet_kw,
    )
    text: Any = CLIPTextModel(text_cfg)
    for m in (vae, unet, text):
        m.eval()
    vae.save_pretrained(root / "vae", safe_serialization=True)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    text.save_pretrained(root / "text_encoder", safe_serialization=True)
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(_scheduler_config(), indent=2)
    )
    index = {
        "_class_name": "StableDiffusionInpaintPipeline" if inpaint else "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root
