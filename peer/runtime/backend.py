"""The runtime's seam to a diffusion backend, and a do-nothing backend for plumbing tests.

``peer.diffusion.Backend`` (the real model) provides this protocol; so does
:class:`NullBackend`, which answers every call with blank images of the right shapes and is
what the runtime's plumbing tests run on. Every end-to-end test, the demo and the benchmarks
run the real model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from peer.diffusion.chain import ChainState
from peer.diffusion.cost import CostModel
from peer.diffusion.tiles import Tile


class Backend(Protocol):
    """A loaded model: blocking calls, made only from the executor's worker thread."""

    model_id: str
    sample_size: int  # native image side, pixels
    num_classes: int | None  # class-conditional models: the number of labels
    device: str

    @property
    def batch_quantum(self) -> int:
        """Forwards are padded to a multiple of this many images (1: no padding)."""
        ...

    def calibrate(self) -> CostModel: ...

    def engine_info(self) -> dict[str, Any]: ...

    def generate(
        self, labels: list[int], seeds: list[int], steps: int, scheduler: str = "ddim"
    ) -> np.ndarray: ...

    def repair(
        self, image: np.ndarray, mask: np.ndarray, steps: int, seed: int, label: int | None = None
    ) -> np.ndarray: ...

    def repair_tiles(
        self,
        canvas: np.ndarray,
        mask: np.ndarray,
        tiles: Sequence[Tile],
        steps: int,
        seed: int,
        label: int | None = None,
    ) -> list[np.ndarray]: ...

    def start_chain(self, label: int, seed: int, steps: int, scheduler: str) -> ChainState: ...

    def run_steps(self, st: ChainState, stop: int) -> ChainState: ...

    def finish_chain(self, st: ChainState) -> np.ndarray: ...


class NullBackend:
    """Blank images of the right shapes, instantly; ``fill`` picks the pixel value per image.

    Each generated image is filled with ``seed mod 251`` so that a test can tell which share
    made which image; a chain starts at that value and adds 1 per step run; repairs return the
    input canvas (and tiles their windows).
    """

    model_id = "null16"
    sample_size = 16
    num_classes: int | None = 10
    device = "cpu"
    batch_quantum = 1

    def calibrate(self) -> CostModel:
        return CostModel(a_s=0.004, c_s=0.0008)

    def engine_info(self) -> dict[str, Any]:
        return {"engine": "null", "provider": "none"}

    def generate(
        self, labels: list[int], seeds: list[int], steps: int, scheduler: str = "ddim"
    ) -> np.ndarray:
        n = self.sample_size
        return np.stack([np.full((n, n), s % 251, dtype=np.uint8) for s in seeds])

    def repair(
        self, image: np.ndarray, mask: np.ndarray, steps: int, seed: int, label: int | None = None
    ) -> np.ndarray:
        return np.asarray(image, dtype=np.uint8).copy()

    def repair_tiles(
        self,
        canvas: np.ndarray,
        mask: np.ndarray,
        tiles: Sequence[Tile],
        steps: int,
        seed: int,
        label: int | None = None,
    ) -> list[np.ndarray]:
        return [np.asarray(canvas[t.y0 : t.y1, t.x0 : t.x1], dtype=np.uint8).copy() for t in tiles]

    def start_chain(self, label: int, seed: int, steps: int, scheduler: str) -> ChainState:
        n = self.sample_size
        latent = np.full((1, 1, n, n), float(seed % 251), dtype="<f4")
        return ChainState(
            self.model_id, scheduler, steps, 0, label, seed, latent.shape, latent.tobytes(), b""
        )

    def run_steps(self, st: ChainState, stop: int) -> ChainState:
        """Each step adds 1 to every pixel, so a test sees that every step ran exactly once."""
        if not st.step <= stop <= st.total:
            raise ValueError(f"cannot run a chain at step {st.step} to {stop} of {st.total}")
        x = np.frombuffer(st.latent, dtype="<f4") + (stop - st.step)
        return replace(st, step=stop, latent=x.astype("<f4").tobytes())

    def finish_chain(self, st: ChainState) -> np.ndarray:
        n = self.sample_size
        x = np.frombuffer(st.latent, dtype="<f4").reshape(n, n)
        return (x % 256).astype(np.uint8)
