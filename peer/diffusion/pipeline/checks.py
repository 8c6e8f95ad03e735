"""Exactness checks of a loaded pipeline: batch split, steps relay, tiles, guidance.

`check_pipeline` runs, on one backend, what a cluster of peers with the same `model_id` would
run, and compares bits: every image of a batch against the image generated alone (batch split),
every chain cut at every step and carried through its wire form (with and without the prompt
embeddings) against the uncut chain (steps relay), and for edits every tile edited alone
against the tiles edited together (tile split), with classifier-free guidance on throughout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from peer.diffusion.pipeline.backend import EditInputs, PipelineBackend, TextChainState
from peer.diffusion.pipeline.text import TextConditioning


def _relay(
    be: PipelineBackend, st: TextChainState, cuts: list[int], embeddings: bool
) -> np.ndarray:
    """Run a chain to the end, handing it on through its wire form at every cut."""
    for stop in [*cuts, st.total]:
        st = be.run_steps(st, stop)
        st = TextChainState.from_wire(st.to_wire(with_embeddings=embeddings))
    return be.finish_chain(st)


def _steps_identical(be: PipelineBackend, make: Any, ref: np.ndarray, steps: int) -> bool:
    ok = True
    for cut in range(1, steps):
        for emb in (True, False):
            ok &= bool(np.array_equal(_relay(be, make(), [cut], emb), ref))
    ok &= bool(np.array_equal(_relay(be, make(), list(range(1, steps)), False), ref))
    return ok


def check_pipeline(
    be: PipelineBackend, steps: int = 3, images: int = 3, guidance: float = 7.5, seed: int = 0
) -> dict[str, Any]:
    cond = be.encode(TextConditioning("a photo of a red house", "blurry", guidance))
    seeds = [seed + k for k in range(images)]
    out: dict[str, Any] = {
        "model_id": be.model_id,
        "kind": be.kind,
        "steps": steps,
        "images": images,
        "guidance_scale": guidance,
    }
    if be.kind == "text2img":
        batch = be.generate_text(cond, seeds, steps)
        alone = [be.generate_text(cond, [s], steps)[0] for s in seeds]
        out["text2img"] = {
            "batch_identical": all(np.array_equal(a, b) for a, b in zip(batch, alone, strict=True)),
            "steps_identical": _steps_identical(
                be, lambda: be.start_text_chain(cond, seeds[0], steps), alone[0], steps
            ),
        }
    else:
        out["text2img"] = None  # an inpainting pipeline only edits
    n = be.sample_size
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    mask = np.zeros((n, n), dtype=bool)
    mask[n // 4 : 3 * n // 4, n // 8 : n // 2] = True
    edit = EditInputs(image, mask)
    started = [be.start_text_chain(cond, s, steps, edit=edit) for s in seeds]
    batch_e = [be.finish_chain(s) for s in be.run_chains(started, steps)]
    alone_e = [be.edit_text(cond, image, mask, s, steps) for s in seeds]
    canvas_h, canvas_w = n + n // 2, 2 * n
    big = rng.integers(0, 256, (canvas_h, canvas_w, 3), dtype=np.uint8)
    bmask = np.zeros((canvas_h, canvas_w), dtype=bool)
    bmask[n // 4 : canvas_h - n // 4, n // 4 : canvas_w - n // 4] = True
    tiles = be.plan_edit_tiles(canvas_h, canvas_w)
    together = be.edit_tiles(cond, big, bmask, tiles, seed, steps)
    apart = [be.edit_tiles(cond, big, bmask, [t], seed, steps)[0] for t in tiles]
    out["inpaint"] = {
        "batch_identical": all(np.array_equal(a, b) for a, b in zip(batch_e, alone_e, strict=True)),
        "steps_identical": _steps_identical(
            be, lambda: be.start_text_chain(cond, seeds[0], steps, edit=edit), alone_e[0], steps
        ),
        "tiles": len(tiles),
        "tiles_identical": all(np.array_equal(a, b) for a, b in zip(together, apart, strict=True)),
        "known_pixels_kept": all(bool(np.array_equal(e[~mask], image[~mask])) for e in batch_e),
    }
    parts = [v for v in (out["text2img"], out["inpaint"]) if v is not None]
    out["batch_identical"] = all(p["batch_identical"] for p in parts)
    out["steps_identical"] = all(p["steps_identical"] for p in parts)
    return out
