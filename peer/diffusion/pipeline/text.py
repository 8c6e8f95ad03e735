"""Text requests and text conditioning: what a text pipeline takes, validated, and its wire form.

- `TextParams`: the fields of a text-to-image or edit request (`prompt`, `negative_prompt`,
  `guidance_scale`, `steps`, `seed`, `width`, `height`), parsed from a JSON body by
  `parse_text_fields` against what the loaded model can do (`TextCaps`), or a `BadRequest`.
- `check_fields_for_model`: a clear 422 for fields the loaded model cannot use (a prompt sent to
  the digits model, a label sent to a text pipeline).
- `TextConditioning`: a request's prompt, negative prompt and guidance, with the prompt
  embeddings once they are computed. `encode_text_share` / `decode_text_share` carry it in a
  share; the embeddings travel only when `embeddings_travel` says sending them beats encoding
  again on the receiver (the text encoder is deterministic, so both give the same bits).

Classifier-free guidance is `eps = eps_u + g * (eps_c - eps_u)` per image; `guidance_scale <= 1`
runs the conditional branch only (diffusers' convention).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from peer.core.errors import BadRequest

TEXT_FIELDS = frozenset({"prompt", "negative_prompt", "guidance_scale", "width", "height"})
LABEL_FIELDS = frozenset({"label"})
MAX_PROMPT_CHARS = 2000
MAX_GUIDANCE = 50.0
MAX_SEED = 2**31 - 1
DEFAULT_GUIDANCE = 7.5
DEFAULT_STEPS = 20
WIRE_VERSION = 1
MAX_EMBED_BYTES = 16 << 20


@dataclass(frozen=True)
class TextCaps:
    """What a loaded text pipeline accepts (`PipelineBackend.text_caps()`)."""

    model_id: str
    sample_size: int  # native image side, pixels
    size_quantum: int  # width and height must be multiples of this (latent factor x UNet down)
    max_side: int  # the largest width/height accepted
    max_steps: int
    kind: str  # "text2img" or "inpaint"


@dataclass(frozen=True)
class TextParams:
    prompt: str
    negative_prompt: str
    guidance_scale: float
    steps: int
    seed: int
    width: int
    height: int

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0


def check_fields_for_model(body: Mapping[str, Any], is_text: bool, model_id: str) -> None:
    """A 422 naming the fields the loaded model cannot use (present and not null)."""
    given = {k for k, v in body.items() if v is not None}
    bad = sorted(given & (LABEL_FIELDS if is_text else TEXT_FIELDS))
    if bad:
        what = (
            "a text pipeline: it takes prompt, not label"
            if is_text
            else "not a text pipeline: it takes label, not prompt, negative_prompt, "
            "guidance_scale, width or height"
        )
        raise BadRequest(
            "unsupported_field", f"field(s) {bad} cannot be used: model {model_id} is {what}", 422
        )


def _str(body: Mapping[str, Any], key: str, default: str | None) -> str:
    v = body.get(key)
    if v is None:
        if default is None:
            raise BadRequest("missing_field", f"{key} is required")
        return default
    if not isinstance(v, str):
        raise BadRequest("invalid_type", f"{key} must be a string, got {type(v).__name__}")
    if len(v) > MAX_PROMPT_CHARS:
        raise BadRequest(
            "out_of_range", f"{key} has {len(v)} characters; at most {MAX_PROMPT_CHARS}"
        )
    return v


def _int(body: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest("invalid_type", f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise BadRequest("out_of_range", f"{key} must be in [{lo}, {hi}], got {v}")
    return v


def _side(body: Mapping[str, Any], key: str, caps: TextCaps) -> int:
    v = _int(body, key, caps.sample_size, caps.size_quantum, caps.max_side)
    if v % caps.size_quantum:
        raise BadRequest(
            "invalid_value", f"{key} must be a multiple of {caps.size_quantum}, got {v}"
        )
    return v


def parse_text_fields(body: Mapping[str, Any], caps: TextCaps) -> TextParams:
    """The text fields of a request body (unknown keys are the caller's to refuse)."""
    prompt = _str(body, "prompt", None)
    if not prompt.strip():
        raise BadRequest("invalid_value", "prompt must not be empty")
    g = body.get("guidance_scale")
    if g is None:
        guidance = DEFAULT_GUIDANCE
    elif isinstance(g, bool) or not isinstance(g, int | float):
        raise BadRequest("invalid_type", f"guidance_scale must be a number, got {type(g).__name__}")
    else:
        guidance = float(g)
        if not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE):
            raise BadRequest(
                "out_of_range", f"guidance_scale must be in [0, {MAX_GUIDANCE:g}], got {g}"
            )
    return TextParams(
        prompt=prompt,
        negative_prompt=_str(body, "negative_prompt", ""),
        guidance_scale=guidance,
        steps=_int(body, "steps", DEFAULT_STEPS, 1, caps.max_steps),
        seed=_int(body, "seed", 0, 0, MAX_SEED),
        width=_side(body, "width", caps),
        height=_side(body, "height", caps),
    )


@dataclass(frozen=True)
class TextConditioning:
    """A prompt pair and guidance; `cond`/`uncond` are (1, tokens, dim) float32 once encoded."""

    prompt: str
    negative_prompt: str
    guidance_scale: float
    cond: np.ndarray | None = None
    uncond: np.ndarray | None = None  # None also when guidance <= 1 (one branch only)

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def encoded(self) -> bool:
        return self.cond is not None and (self.uncond is not None or not self.guided)

    def embed_bytes(self) -> int:
        return sum(0 if a is None else a.nbytes for a in (self.cond, self.uncond))

    def without_embeddings(self) -> TextConditioning:
        return TextConditioning(self.prompt, self.negative_prompt, self.guidance_scale)


def embeddings_travel(
    embed_bytes: int, rate_bytes_per_s: float, encode_s: float, rtt_s: float = 0.0
) -> bool:
    """Send the embeddings with a share when moving them costs less than encoding them again.

    `encode_s`: the receiver's measured text-encoding time for the prompt pair; the extra bytes
    ride on a message that is sent anyway, so the round trip is not charged (`rtt_s` is kept for
    callers that send them apart).
    """
    if embed_bytes <= 0:
        return False
    if rate_bytes_per_s <= 0 or not math.isfinite(rate_bytes_per_s):
        return False
    return rtt_s + embed_bytes / rate_bytes_per_s < encode_s


def _pack(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    arr = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": [int(s) for s in arr.shape], "data": arr.tobytes()}


def _unpack(d: object, what: str) -> np.ndarray | None:
    if d is None:
        return None
    if not isinstance(d, dict) or set(d) != {"shape", "data"}:
        raise BadRequest("invalid_share", f"{what} must be {{shape, data}}")
    shape, data = d["shape"], d["data"]
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 16 for s in shape
        )
        or shape[0] != 1
    ):
        raise BadRequest("invalid_share", f"{what} shape must be [1, tokens, dim], got {shape!r}")
    if not isinstance(data, bytes | bytearray):
        raise BadRequest("invalid_share", f"{what} data must be bytes")
    need = 4 * int(np.prod(shape))
    if need > MAX_EMBED_BYTES or len(data) != need:
        raise BadRequest(
            "invalid_share", f"{what} has {len(data)} bytes, shape {shape} needs {need}"
        )
    arr = np.frombuffer(bytes(data), dtype="<f4").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise BadRequest("invalid_share", f"{what} holds non-finite values")
    return arr


def encode_text_share(cond: TextConditioning, with_embeddings: bool) -> dict[str, Any]:
    """A msgpack-safe dict of the conditioning (embeddings included when asked and present)."""
    out: dict[str, Any] = {
        "v": WIRE_VERSION,
        "prompt": cond.prompt,
        "negative_prompt": cond.negative_prompt,
        "guidance_scale": float(cond.guidance_scale),
        "cond": None,
        "uncond": None,
    }
    if with_embeddings:
        if not cond.encoded:
            raise ValueError("the conditioning has no embeddings to send")
        out["cond"], out["uncond"] = _pack(cond.cond), _pack(cond.uncond)
    return out


def decode_text_share(data: object, embed_shape: tuple[int, int] | None = None) -> TextConditioning:
    """The inverse of `encode_text_share`, validated; `embed_shape` = (tokens, dim) to expect."""
    if not isinstance(data, dict):
        raise BadRequest("invalid_share", "text conditioning must be a dict")
    want = {"v", "prompt", "negative_prompt", "guidance_scale", "cond", "uncond"}
    if set(data) != want:
        raise BadRequest("invalid_share", f"text conditioning keys must be {sorted(want)}")
    if data["v"] != WIRE_VERSION:
        raise BadRequest("invalid_share", f"text conditioning version {data['v']!r}")
    for key in ("prompt", "negative_prompt"):
        if not isinstance(data[key], str) or len(data[key]) > MAX_PROMPT_CHARS:
            raise BadRequest("invalid_share", f"{key} must be a string of <= {MAX_PROMPT_CHARS}")
    g = data["guidance_scale"]
    if isinstance(g, bool) or not isinstance(g, int | float) or not 0 <= g <= MAX_GUIDANCE:
        raise BadRequest("invalid_share", f"guidance_scale {g!r} is out of range")
    c, u = _unpack(data["cond"], "cond"), _unpack(data["uncond"], "uncond")
    if (c is None) != (u is None) and float(g) > 1.0:
        raise BadRequest("invalid_share", "a guided share carries both embeddings or neither")
    if u is not None and float(g) <= 1.0:
        raise BadRequest("invalid_share", "an unguided share carries no negative embedding")
    for arr in (c, u):
        if arr is not None and embed_shape is not None and arr.shape[1:] != embed_shape:
            raise BadRequest(
                "invalid_share", f"embeddings {arr.shape[1:]} do not fit the model's {embed_shape}"
            )
    return TextConditioning(data["prompt"], data["negative_prompt"], float(g), c, u)
