"""Shares: the units of work one peer runs for an origin, their wire form and their execution.

A share is one of
- ``generate``: images ``labels[i]`` with ``seeds[i]`` (one batched forward per step);
- ``tiles``: some tiles of a repair canvas, denoised as one batch (the whole canvas and mask
  travel with them);
- ``chain``: a range of denoising steps of one image, starting fresh or from a handed-on state;
- ``repair``: a whole canvas, untiled (only ever local).

On a text pipeline (``peer.diffusion.pipeline``) each share also carries a ``TextSpec``: the
prompt pair and guidance, with the prompt embeddings when the origin chose to send them
(``embeddings_travel``), and a generation's image size; a tiles canvas is then RGB (H, W, 3)
and a chain's state is a ``TextChainState`` wire form.

``encode_share``/``decode_share`` are a share's wire form (``decode_share`` validates a payload
that came over RPC); ``encode_reply``/``decode_reply`` are its result's. Running a share is
``peer.runtime.runner``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from peer.core.errors import BadRequest
from peer.rpc import pack_tensor, unpack_tensor


@dataclass(frozen=True)
class TextSpec:
    """A text pipeline's conditioning in a share (see the module's docstring)."""

    cond: Any  # peer.diffusion.pipeline.text.TextConditioning
    width: int = 0  # a generation's image size in pixels (0: the model's native size)
    height: int = 0
    embeddings: bool = True  # send the embeddings with the share (when ``cond`` holds them)

    def embed_bytes(self) -> int:
        return int(self.cond.embed_bytes())


def text_to_wire(spec: TextSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    from peer.diffusion.pipeline.text import encode_text_share

    return {
        "cond": encode_text_share(spec.cond, spec.embeddings and spec.cond.encoded),
        "width": spec.width,
        "height": spec.height,
    }


def text_from_wire(d: Any) -> TextSpec | None:
    if d is None:
        return None
    from peer.diffusion.pipeline.text import decode_text_share

    if not isinstance(d, dict) or set(d) != {"cond", "width", "height"}:
        raise BadRequest("invalid_params", "a share's text is {cond, width, height}")
    w, h = _need(d, "width", int), _need(d, "height", int)
    if not (0 <= w <= 4096 and 0 <= h <= 4096):
        raise BadRequest("invalid_params", f"text share size {w}x{h} is out of range")
    cond = decode_text_share(d["cond"])
    return TextSpec(cond, w, h, cond.encoded)


@dataclass(frozen=True)
class GenerateShare:
    labels: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    scheduler: str
    text: TextSpec | None = None  # a text pipeline's prompt (labels are then ignored)

    @property
    def images(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TilesShare:
    canvas: np.ndarray
    mask: np.ndarray
    tiles: tuple[Any, ...]  # peer.diffusion.Tile
    steps: int
    seed: int
    label: int | None = None  # None: the model averages over every class (costs num_classes)
    text: TextSpec | None = None  # a text pipeline's edit: canvas (H, W, 3), prompt


@dataclass(frozen=True)
class ChainShare:
    label: int
    seed: int
    steps: int
    scheduler: str
    start: int
    stop: int
    state: dict[str, Any] | None  # ChainState wire form; None = start fresh
    text: TextSpec | None = None  # a text pipeline's prompt (state: TextChainState wire form)


def _need(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise BadRequest("invalid_params", f"share lacks {key!r}")
    v = d[key]
    if (isinstance(v, bool) and typ is not bool) or not isinstance(v, typ):
        raise BadRequest("invalid_params", f"share field {key!r} has the wrong type")
    return v


def tile_to_wire(tile: Any) -> Any:
    return tile.to_wire()


def tile_from_wire(d: Any, height: int, width: int) -> Any:
    from peer.diffusion import DiffusionError, Tile

    try:
        tile = Tile.from_wire(d)
        tile.check_inside(height, width)
    except DiffusionError as exc:
        raise BadRequest("invalid_params", f"bad tile: {exc}") from None
    return tile


def encode_share(share: GenerateShare | TilesShare | ChainShare) -> dict[str, Any]:
    out = _encode_share(share)
    if share.text is not None:  # absent on the digits model: its wire form is unchanged
        out["text"] = text_to_wire(share.text)
    return out


def _encode_share(share: GenerateShare | TilesShare | ChainShare) -> dict[str, Any]:
    if isinstance(share, GenerateShare):
        return {
            "kind": "generate",
            "labels": list(share.labels),
            "seeds": list(share.seeds),
            "steps": share.steps,
            "scheduler": share.scheduler,
        }
    if isinstance(share, TilesShare):
        return {
            "kind": "tiles",
            "canvas": pack_tensor(share.canvas),
            "mask": pack_tensor(share.mask.astype(np.uint8)),
            "tiles": [tile_to_wire(t) for t in share.tiles],
            "steps": share.steps,
            "seed": share.seed,
            "label": share.label,
        }
    return {
        "kind": "chain",
        "label": share.label,
        "seed": share.seed,
        "steps": share.steps,
        "scheduler": share.scheduler,
        "start": share.start,
        "stop": share.stop,
        "state": share.state,
    }


def decode_share(d: Any) -> GenerateShare | TilesShare | ChainShare:
    if not isinstance(d, dict):
        raise BadRequest("invalid_params", "a share is a dict")
    kind = d.get("kind")
    steps = _need(d, "steps", int)
    if not 1 <= steps <= 10_000:
        raise BadRequest("invalid_params", "steps out of range")
    text = text_from_wire(d.get("text"))
    if kind == "generate":
        labels = _need(d, "labels", list)
        seeds = _need(d, "seeds", list)
        if len(labels) != len(seeds) or not labels or len(labels) > 1024:
            raise BadRequest("invalid_params", "labels and seeds must be equal-length, 1..1024")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in labels + seeds):
            raise BadRequest("invalid_params", "labels and seeds must be integers")
        return GenerateShare(tuple(labels), tuple(seeds), steps, _need(d, "scheduler", str), text)
    if kind == "tiles":
        try:
            canvas = unpack_tensor(_need(d, "canvas", dict), copy=True)
            mask = unpack_tensor(_need(d, "mask", dict), copy=True).astype(bool)
        except Exception as exc:
            raise BadRequest("invalid_params", f"bad canvas or mask: {exc}") from None
        if text is not None:  # an RGB canvas and its 2-D mask
            if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.shape[:2] != mask.shape:
                raise BadRequest(
                    "invalid_params", "a text edit is an (H, W, 3) canvas, (H, W) mask"
                )
        elif canvas.shape != mask.shape or canvas.ndim != 2:
            raise BadRequest("invalid_params", "canvas and mask must be equal 2-D arrays")
        h, w = mask.shape
        tiles = tuple(tile_from_wire(t, h, w) for t in _need(d, "tiles", list))
        if not tiles or len(tiles) > 4096:
            raise BadRequest("invalid_params", "a tiles share needs 1..4096 tiles")
        label = d.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise BadRequest("invalid_params", "label must be an integer or nil")
        seed = _need(d, "seed", int)
        return TilesShare(canvas.astype(np.uint8), mask, tiles, steps, seed, label, text)
    if kind == "chain":
        state = d.get("state")
        if state is not None and not isinstance(state, dict):
            raise BadRequest("invalid_params", "state must be a dict or nil")
        start, stop = _need(d, "start", int), _need(d, "stop", int)
        if not 0 <= start < stop <= steps:
            raise BadRequest("invalid_params", f"bad step range [{start}, {stop}) of {steps}")
        return ChainShare(
            _need(d, "label", int),
            _need(d, "seed", int),
            steps,
            _need(d, "scheduler", str),
            start,
            stop,
            state,
            text,
        )
    raise BadRequest("invalid_params", f"unknown share kind {kind!r}")


Work = GenerateShare | TilesShare | ChainShare


def encode_reply(work: Work, out: Any) -> dict[str, Any]:
    """A share's result on the wire (without the timing fields the caller adds)."""
    if isinstance(work, GenerateShare):
        return {"images": pack_tensor(np.asarray(out))}
    if isinstance(work, TilesShare):
        return {"tiles": [pack_tensor(np.asarray(t)) for t in out]}
    if "image" in out:
        return {"image": pack_tensor(np.asarray(out["image"]))}
    return {"state": out["state"]}


def decode_reply(work: Work, res: Any) -> Any:
    """The result of ``work`` from a reply; raises ``BadRequest`` when the reply is malformed."""
    if not isinstance(res, dict):
        raise BadRequest("malformed_reply", "a share reply is a dict")
    try:
        if isinstance(work, GenerateShare):
            return unpack_tensor(res["images"], copy=True)
        if isinstance(work, TilesShare):
            return [unpack_tensor(t, copy=True) for t in res["tiles"]]
        if "image" in res:
            return {"image": unpack_tensor(res["image"], copy=True)}
        state = res["state"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("malformed_reply", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict):
        raise BadRequest("malformed_reply", "a chain reply's state is a dict")
    return {"state": state}


def units_of(work: Work) -> int:
    """Images, tiles or steps a share computes."""
    if isinstance(work, GenerateShare):
        return work.images
    if isinstance(work, TilesShare):
        return len(work.tiles)
    return work.stop - work.start
