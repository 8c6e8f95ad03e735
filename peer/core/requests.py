"""Validation of client requests: raw JSON values -> typed requests, or ``BadRequest``.

Pure functions; every rejection carries a stable code:
``invalid_json``, ``not_an_object``, ``missing_field``, ``unknown_field``, ``invalid_type``,
``out_of_range``, ``invalid_value``, ``bad_base64``, ``bad_png``, ``size_mismatch``, and for
bodies that are JSON only in name: ``number_too_large`` (an integer of more than
``MAX_INT_DIGITS`` digits: Python would spend quadratic time on it, or refuse it past its own
4,300-digit limit), ``invalid_number`` (``NaN``, ``Infinity`` or a float that overflows),
``too_deep`` (arrays or objects nested past the interpreter's recursion limit; the C scanner
refuses them in linear time, so no pre-scan is needed) and ``duplicate_key`` (an object
naming a key twice: which one wins is up to each parser, so neither does). Any body is a
``BadRequest`` or a dict; nothing else escapes ``parse_json``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from peer.core.config import MODES, POLICIES, Limits
from peer.core.errors import BadRequest
from peer.core.parallel_plan import ParallelOptions, parse_parallel

if TYPE_CHECKING:
    from peer.diffusion.pipeline.text import TextCaps, TextParams

SCHEDULERS: tuple[str, ...] = ("ddim", "ddpm")  # the samplers peer.diffusion provides
MAX_SEED = 2**31 - 1
MAX_INT_DIGITS = 64  # every integer field is far below 10**64


@dataclass(frozen=True)
class GenerateRequest:
    count: int
    label: int | None
    steps: int
    seed: int
    mode: str
    policy: str | None
    scheduler: str
    text: TextParams | None = None  # a text pipeline's request (label is then None)
    parallel: ParallelOptions | None = None  # mode parallel: segments, tolerance or exactness


@dataclass(frozen=True)
class RepairRequest:
    image: np.ndarray  # (H, W) uint8; (H, W, 3) on a text pipeline
    mask: np.ndarray  # (H, W) bool, True = regenerate
    steps: int
    seed: int
    mode: str
    policy: str | None
    label: int | None
    text: TextParams | None = None  # a text pipeline's edit (label is then None)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(
            "number_too_large", f"an integer of {len(text)} characters; at most {MAX_INT_DIGITS}"
        )
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest("invalid_number", f"{text[:40]} does not fit in a 64-bit float")
    return value


def _parse_constant(text: str) -> float:
    raise BadRequest("invalid_number", f"{text} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise BadRequest("duplicate_key", f"key {k[:64]!r} appears more than once")
            seen.add(k)
    return out


MAX_JSON_DEPTH = 64  # every body of the API nests a few levels; 64 leaves room
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: linear, no per-char branch


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (brackets inside strings do not count).

    Linear time and no recursion: strings are cut out, then the running count of openers less
    closers is taken over the bytes at once.
    """
    bare = _STRING.sub("", text).encode("utf-8", "replace")
    if not bare:
        return 0
    b = np.frombuffer(bare, dtype=np.uint8)
    step = (b == ord("[")).astype(np.int32) + (b == ord("{")) - (b == ord("]")) - (b == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def parse_json(body: bytes) -> dict[str, Any]:
    """A request body -> a JSON object, or ``BadRequest`` (never any other exception)."""
    try:
        text = body.decode("utf-8")  # RFC 8259: UTF-8 only (json.loads would guess UTF-16/32)
    except UnicodeDecodeError as exc:
        raise BadRequest("invalid_json", f"body is not UTF-8: {exc}") from None
    depth = nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        # refused before parsing: a RecursionError raised inside the C scanner leaves CPython
        # 3.11's recursion bookkeeping skewed (a later compile() fails with SystemError)
        raise BadRequest(
            "too_deep", f"arrays and objects nest {depth} deep (at most {MAX_JSON_DEPTH})"
        )
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_pairs,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:  # the C scanner counts each nested array/object against the limit
        raise BadRequest(
            "too_deep", f"arrays and objects nest deeper than {sys.getrecursionlimit()}"
        ) from None
    except ValueError as exc:  # e.g. a number the int/float constructors refuse
        raise BadRequest("invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("not_an_object", "the body must be a JSON object")
    return value


def _int(body: Mapping[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    if key not in body or body[key] is None:
        if default is None:
            raise BadRequest("missing_field", f"{key} is required")
        return default
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest("invalid_type", f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise BadRequest("out_of_range", f"{key} must be in [{lo}, {hi}], got {v}")
    return v


def _choice(
    body: Mapping[str, Any], key: str, default: str | None, choices: tuple[str, ...]
) -> str | None:
    if key not in body or body[key] is None:
        return default
    v = body[key]
    if not isinstance(v, str):
        raise BadRequest("invalid_type", f"{key} must be a string, got {type(v).__name__}")
    if v not in choices:
        raise BadRequest("invalid_value", f"{key} must be one of {list(choices)}, got {v!r}")
    return v


def _label(body: Mapping[str, Any]) -> int | None:
    if body.get("label") is None:
        return None
    return _int(body, "label", None, 0, 9)


def _check_keys(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            "unknown_field", f"unknown field(s): {unknown}; allowed: {sorted(allowed)}"
        )


GENERATE_KEYS = {
    "count",
    "label",
    "steps",
    "seed",
    "mode",
    "policy",
    "scheduler",
    "wait",
    "parallel",
}
REPAIR_MODES = ("auto", "tile", "local", "fused")  # fused: bands fused every step (digits model)
REPAIR_KEYS = {"image", "mask", "steps", "seed", "mode", "policy", "label", "wait"}


TEXT_KEYS = {"prompt", "negative_prompt", "guidance_scale", "width", "height"}


def _fields_for_model(body: Mapping[str, Any], caps: TextCaps | None, model_id: str) -> None:
    """A 422 for fields the loaded model cannot use (a prompt on the digits model, a label on a
    text pipeline); checked before unknown keys so the answer says why."""
    from peer.diffusion.pipeline.text import check_fields_for_model

    check_fields_for_model(body, caps is not None, caps.model_id if caps else model_id)


def edits_only(caps: TextCaps) -> None:
    """An inpainting pipeline only edits: a generation is a clear 422."""
    if caps.kind == "inpaint":
        raise BadRequest(
            "edits_only",
            f"model {caps.model_id} is an inpainting pipeline: it edits an image under a mask "
            "(/v1/repair, /v1/images/edits), it does not generate from a prompt alone",
            422,
        )


def parse_generate(
    body: Mapping[str, Any],
    limits: Limits,
    caps: TextCaps | None = None,
    model_id: str = "the loaded model",
) -> GenerateRequest:
    """A generate request; with ``caps`` (a text pipeline is loaded) the text fields apply."""
    if caps is not None or any(body.get(k) is not None for k in TEXT_KEYS):
        _fields_for_model(body, caps, model_id)
    if caps is not None:
        from peer.diffusion.pipeline.text import parse_text_fields

        _check_keys(body, (GENERATE_KEYS - {"label", "parallel"}) | TEXT_KEYS)
        edits_only(caps)
        text = parse_text_fields(body, caps)
        return GenerateRequest(
            count=_int(body, "count", 1, 1, limits.max_count),
            label=None,
            steps=text.steps,
            seed=text.seed,
            mode=_choice(body, "mode", "auto", MODES) or "auto",
            policy=_choice(body, "policy", None, POLICIES),
            scheduler=_choice(body, "scheduler", "ddim", SCHEDULERS) or "ddim",
            text=text,
        )
    _check_keys(body, GENERATE_KEYS)
    steps = _int(body, "steps", 20, 1, limits.max_steps)
    return GenerateRequest(
        count=_int(body, "count", 1, 1, limits.max_count),
        label=_label(body),
        steps=steps,
        seed=_int(body, "seed", 0, 0, MAX_SEED),
        mode=_choice(body, "mode", "auto", MODES) or "auto",
        policy=_choice(body, "policy", None, POLICIES),
        scheduler=_choice(body, "scheduler", "ddim", SCHEDULERS) or "ddim",
        parallel=parse_parallel(body.get("parallel"), steps),
    )


def decode_png(
    value: Any, key: str, limits: Limits, mode: str = "L", max_side: int | None = None
) -> np.ndarray:
    """Base64 PNG -> (H, W) uint8 (converted to grayscale; ``mode="RGB"``: (H, W, 3))."""
    side = limits.max_canvas if max_side is None else max_side
    if not isinstance(value, str):
        raise BadRequest("invalid_type", f"{key} must be a base64 PNG string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("bad_base64", f"{key} is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format != "PNG":
                raise BadRequest("bad_png", f"{key} must be a PNG, got {img.format}")
            w, h = img.size
            if not (1 <= w <= side and 1 <= h <= side):
                raise BadRequest(
                    "out_of_range", f"{key} is {w}x{h}; each side must be in [1, {side}]"
                )
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except BadRequest:
        raise
    except Exception as exc:  # hostile bytes: PIL raises OSError, ValueError, SyntaxError,
        # EOFError, struct.error, zlib.error, DecompressionBombError, ... on them
        raise BadRequest("bad_png", f"{key} is not a readable PNG: {type(exc).__name__}") from None
    return arr


def parse_repair(
    body: Mapping[str, Any],
    limits: Limits,
    native: int = 16,
    caps: TextCaps | None = None,
    model_id: str = "the loaded model",
) -> RepairRequest:
    """A repair request; with ``caps`` (a text pipeline is loaded) an RGB edit with a prompt."""
    if caps is not None or any(body.get(k) is not None for k in TEXT_KEYS):
        _fields_for_model(body, caps, model_id)
    if caps is not None:
        return _parse_text_repair(body, limits, caps)
    _check_keys(body, REPAIR_KEYS)
    for key in ("image", "mask"):
        if key not in body:
            raise BadRequest("missing_field", f"{key} is required")
    image = decode_png(body["image"], "image", limits)
    mask = decode_png(body["mask"], "mask", limits)
    if image.shape != mask.shape:
        raise BadRequest("size_mismatch", f"image is {image.shape}, mask is {mask.shape}")
    if min(image.shape) < native:
        raise BadRequest("out_of_range", f"the canvas must be at least {native}x{native}")
    return RepairRequest(
        image=image,
        mask=mask > 127,
        steps=_int(body, "steps", 20, 1, limits.max_steps),
        seed=_int(body, "seed", 0, 0, MAX_SEED),
        mode=_choice(body, "mode", "auto", REPAIR_MODES) or "auto",
        policy=_choice(body, "policy", None, POLICIES),
        label=_label(body),
    )


def _parse_text_repair(body: Mapping[str, Any], limits: Limits, caps: TextCaps) -> RepairRequest:
    from peer.diffusion.pipeline.text import parse_text_fields

    _check_keys(body, (REPAIR_KEYS - {"label"}) | TEXT_KEYS)
    for key in ("image", "mask"):
        if key not in body:
            raise BadRequest("missing_field", f"{key} is required")
    image = decode_png(body["image"], "image", limits, mode="RGB", max_side=caps.max_side)
    mask = decode_png(body["mask"], "mask", limits, max_side=caps.max_side)
    h, w = mask.shape
    if image.shape[:2] != mask.shape:
        raise BadRequest("size_mismatch", f"image is {image.shape[:2]}, mask is {mask.shape}")
    for key, side in (("width", w), ("height", h)):
        if body.get(key) is not None and body[key] != side:
            raise BadRequest("size_mismatch", f"{key} must be the image's, {side}")
    text = parse_text_fields({**body, "width": w, "height": h}, caps)
    return RepairRequest(
        image=image,
        mask=mask > 127,
        steps=text.steps,
        seed=text.seed,
        mode=_choice(body, "mode", "auto", ("auto", "tile", "local")) or "auto",
        policy=_choice(body, "policy", None, POLICIES),
        label=None,
        text=text,
    )


def parse_wait(body: Mapping[str, Any]) -> bool:
    v = body.get("wait", True)
    if not isinstance(v, bool):
        raise BadRequest("invalid_type", "wait must be true or false")
    return v


IDEMPOTENCY_KEY_MAX = 128


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1..128 characters of ``[A-Za-z0-9_.:-]``, or absent."""
    if value is None:
        return None
    ok = 0 < len(value) <= IDEMPOTENCY_KEY_MAX and all(
        c.isascii() and (c.isalnum() or c in "_.:-") for c in value
    )
    if not ok:
        raise BadRequest(
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} characters of A-Z a-z 0-9 _ . : -",
        )
    return value
