"""Shares: the units of work one peer runs for an origin, their wire form and their execution.

A share is one of
- ``generate``: images ``labels[i]`` with ``seeds[i]`` (one batched forward per step);
- ``tiles``: some tiles of a repair canvas, denoised as one batch (the whole canvas and mask
  travel with them);
- ``chain``: a range of denoising steps of one image, starting fresh or from a handed-on state;
- ``repair``: a whole canvas, untiled (only ever local).

``ShareRunner`` methods are blocking and run on the executor's worker thread; each real run
feeds the peer's cost model. ``decode_share`` validates a payload that came over RPC.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from peer.core.costs import CostTracker
from peer.core.errors import BadRequest
from peer.rpc import pack_tensor, unpack_tensor


@dataclass(frozen=True)
class GenerateShare:
    labels: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    scheduler: str

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


@dataclass(frozen=True)
class ChainShare:
    label: int
    seed: int
    steps: int
    scheduler: str
    start: int
    stop: int
    state: dict[str, Any] | None  # ChainState wire form; None = start fresh


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
    if kind == "generate":
        labels = _need(d, "labels", list)
        seeds = _need(d, "seeds", list)
        if len(labels) != len(seeds) or not labels or len(labels) > 1024:
            raise BadRequest("invalid_params", "labels and seeds must be equal-length, 1..1024")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in labels + seeds):
            raise BadRequest("invalid_params", "labels and seeds must be integers")
        return GenerateShare(tuple(labels), tuple(seeds), steps, _need(d, "scheduler", str))
    if kind == "tiles":
        try:
            canvas = unpack_tensor(_need(d, "canvas", dict), copy=True)
            mask = unpack_tensor(_need(d, "mask", dict), copy=True).astype(bool)
        except Exception as exc:
            raise BadRequest("invalid_params", f"bad canvas or mask: {exc}") from None
        if canvas.shape != mask.shape or canvas.ndim != 2:
            raise BadRequest("invalid_params", "canvas and mask must be equal 2-D arrays")
        h, w = canvas.shape
        tiles = tuple(tile_from_wire(t, h, w) for t in _need(d, "tiles", list))
        if not tiles or len(tiles) > 4096:
            raise BadRequest("invalid_params", "a tiles share needs 1..4096 tiles")
        label = d.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise BadRequest("invalid_params", "label must be an integer or nil")
        return TilesShare(canvas.astype(np.uint8), mask, tiles, steps, _need(d, "seed", int), label)
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
        )
    raise BadRequest("invalid_params", f"unknown share kind {kind!r}")


class ShareRunner:
    """Runs shares on the backend (call only from the executor's worker thread)."""

    def __init__(self, backend: Any, cost: CostTracker, native: int) -> None:
        self.backend = backend
        self.cost = cost
        self.native = native

    def rows(self, label: int | None) -> int:
        """Forward rows per repaired window: an unlabelled repair averages every class."""
        n = getattr(self.backend, "num_classes", None)
        return int(n) if label is None and n else 1

    def tile_area(self, tile: Any) -> float:
        h, w = _tile_window(tile)
        return (h * w) / float(self.native * self.native)

    def predict(self, share: GenerateShare | TilesShare | ChainShare) -> float:
        if isinstance(share, GenerateShare):
            return self.cost.predict(share.images, share.steps)
        if isinstance(share, TilesShare):
            area = sum(self.tile_area(t) for t in share.tiles) * self.rows(share.label)
            return self.cost.predict(area, share.steps)
        return self.cost.predict(1, share.stop - share.start)

    def run(self, share: GenerateShare | TilesShare | ChainShare) -> Any:
        t0 = time.perf_counter()
        if isinstance(share, GenerateShare):
            out = self.backend.generate(
                list(share.labels), list(share.seeds), share.steps, scheduler=share.scheduler
            )
            self.cost.observe(share.images, share.steps, time.perf_counter() - t0)
            return np.asarray(out, dtype=np.uint8)
        if isinstance(share, TilesShare):
            outs = self.backend.repair_tiles(
                share.canvas, share.mask, list(share.tiles), share.steps, share.seed, share.label
            )
            area = sum(self.tile_area(t) for t in share.tiles) * self.rows(share.label)
            self.cost.observe(area, share.steps, time.perf_counter() - t0)
            return [np.asarray(o) for o in outs]
        return self.run_chain(share, t0)

    def run_chain(self, share: ChainShare, t0: float) -> dict[str, Any]:
        from peer.diffusion import ChainState

        be = self.backend
        if share.state is None:
            if share.start != 0:
                raise BadRequest("invalid_params", "a chain that starts past step 0 needs a state")
            st = be.start_chain(share.label, share.seed, share.steps, share.scheduler)
        else:
            st = ChainState.from_wire(share.state)
        st = be.run_steps(st, share.stop)
        self.cost.observe(1, share.stop - share.start, time.perf_counter() - t0)
        if share.stop >= share.steps:
            return {"image": np.asarray(be.finish_chain(st), dtype=np.uint8)}
        return {"state": st.to_wire()}

    def repair(
        self, image: np.ndarray, mask: np.ndarray, steps: int, seed: int, label: int | None
    ) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.asarray(self.backend.repair(image, mask, steps, seed, label=label), dtype=np.uint8)
        area = image.shape[0] * image.shape[1] / float(self.native * self.native)
        self.cost.observe(area * self.rows(label), steps, time.perf_counter() - t0)
        return out


def _tile_window(tile: Any) -> tuple[int, int]:
    """Height and width of the window a tile is denoised over (core plus halo)."""
    for hk, wk in (("win_h", "win_w"), ("height", "width"), ("h", "w")):
        if hasattr(tile, hk) and hasattr(tile, wk):
            return int(getattr(tile, hk)), int(getattr(tile, wk))
    for y0, y1, x0, x1 in (("y0", "y1", "x0", "x1"), ("top", "bottom", "left", "right")):
        if all(hasattr(tile, k) for k in (y0, y1, x0, x1)):
            return int(getattr(tile, y1)) - int(getattr(tile, y0)), int(getattr(tile, x1)) - int(
                getattr(tile, x0)
            )
    return 16, 16
