"""Running shares on the local backend: blocking calls for the executor's worker thread.

Each real run feeds the peer's cost model with its measured compute time. A share that carries a
``TextSpec`` runs on a text pipeline (``PipelineBackend``): ``generate_text``, ``edit_tiles``,
``start_text_chain``/``run_steps``/``finish_chain``, ``edit_text``; its cost counts native-size
images (a 2x-wide image is two).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from peer.core.costs import CostTracker
from peer.core.errors import BadRequest
from peer.core.shares import ChainShare, GenerateShare, TextSpec, TilesShare
from peer.diffusion.chain import ChainState
from peer.diffusion.tiles import Tile
from peer.runtime.backend import Backend


class ShareRunner:
    """Runs shares on the backend (call only from the executor's worker thread)."""

    def __init__(self, backend: Backend, cost: CostTracker, native: int) -> None:
        self.backend = backend
        self.cost = cost
        self.native = native

    def rows(self, label: int | None) -> int:
        """Forward rows per repaired window: an unlabelled repair averages every class."""
        n = self.backend.num_classes
        return int(n) if label is None and n else 1

    def tile_area(self, tile: Tile) -> float:
        """A tile window's area (core plus halo) in native-size images."""
        return (tile.height * tile.width) / float(self.native * self.native)

    def text_area(self, text: TextSpec | None) -> float:
        """One image's area in native-size images (1 for the digits model)."""
        if text is None or not text.width or not text.height:
            return 1.0
        return (text.width * text.height) / float(self.native * self.native)

    def predict(self, share: GenerateShare | TilesShare | ChainShare) -> float:
        if isinstance(share, GenerateShare):
            return self.cost.predict(share.images * self.text_area(share.text), share.steps)
        if isinstance(share, TilesShare):
            area = sum(self.tile_area(t) for t in share.tiles) * self.rows(share.label)
            return self.cost.predict(area, share.steps)
        return self.cost.predict(self.text_area(share.text), share.stop - share.start)

    def run(self, share: GenerateShare | TilesShare | ChainShare) -> Any:
        t0 = time.perf_counter()
        if share.text is not None:
            return self.run_text(share, share.text, t0)
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

    def run_text(
        self, share: GenerateShare | TilesShare | ChainShare, text: TextSpec, t0: float
    ) -> Any:
        be: Any = self.backend  # a PipelineBackend (peer.diffusion.pipeline)
        if not getattr(be, "takes_prompt", False):
            raise BadRequest("invalid_params", f"model {be.model_id} takes no prompt")
        if isinstance(share, GenerateShare):
            w, h = text.width or None, text.height or None
            out = be.generate_text(text.cond, list(share.seeds), share.steps, w, h, share.scheduler)
            area = share.images * self.text_area(text)
            self.cost.observe(area, share.steps, time.perf_counter() - t0)
            return np.asarray(out, dtype=np.uint8)
        if isinstance(share, TilesShare):
            outs = be.edit_tiles(
                text.cond, share.canvas, share.mask, list(share.tiles), share.seed, share.steps
            )
            area = sum(self.tile_area(t) for t in share.tiles)
            self.cost.observe(area, share.steps, time.perf_counter() - t0)
            return [np.asarray(o, dtype=np.uint8) for o in outs]
        from peer.diffusion.pipeline.backend import TextChainState

        if share.state is None:
            if share.start != 0:
                raise BadRequest("invalid_params", "a chain that starts past step 0 needs a state")
            st = be.start_text_chain(
                text.cond,
                share.seed,
                share.steps,
                text.width or None,
                text.height or None,
                share.scheduler,
            )
        else:
            st = TextChainState.from_wire(share.state)
        if st.step != share.start or st.total != share.steps:
            raise BadRequest(
                "invalid_params", f"state at step {st.step}, share starts {share.start}"
            )
        st = be.run_steps(st, share.stop)
        self.cost.observe(self.text_area(text), share.stop - share.start, time.perf_counter() - t0)
        if share.stop >= share.steps:
            return {"image": np.asarray(be.finish_chain(st), dtype=np.uint8)}
        return {"state": st.to_wire(with_embeddings=text.embeddings)}

    def repair(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        steps: int,
        seed: int,
        label: int | None,
        text: TextSpec | None = None,
    ) -> np.ndarray:
        t0 = time.perf_counter()
        if text is not None:
            be: Any = self.backend
            out = np.asarray(be.edit_text(text.cond, image, mask, seed, steps), dtype=np.uint8)
            area = image.shape[0] * image.shape[1] / float(self.native * self.native)
            self.cost.observe(area, steps, time.perf_counter() - t0)
            return out
        out = np.asarray(self.backend.repair(image, mask, steps, seed, label=label), dtype=np.uint8)
        area = image.shape[0] * image.shape[1] / float(self.native * self.native)
        self.cost.observe(area * self.rows(label), steps, time.perf_counter() - t0)
        return out
