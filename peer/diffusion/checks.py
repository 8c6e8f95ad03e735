"""Measurements of the executor's contracts, shared by `amcoedge model check` and the tests.

- chain split: a chain run in two parts on two separately loaded backends vs one backend;
- batch: each image of a batch vs the same image generated alone;
- tile: tile repair of a canvas vs the untiled repair of the same canvas (PSNR).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from peer.diffusion.backend import Backend
from peer.diffusion.chain import ChainState
from peer.diffusion.data import load_digits_tensor
from peer.diffusion.images import psnr, tensor_to_image


def chain_split(
    make_backend: Callable[[], Backend],
    scheduler: str,
    steps: int,
    split: int,
    label: int | None,
    seed: int,
) -> dict[str, Any]:
    """One backend runs all steps; a second runs [0, split), a third (fresh) the rest."""
    whole_be = make_backend()
    whole = whole_be.run_steps(whole_be.start_chain(label, seed, steps, scheduler), steps)
    first_be = make_backend()
    part = first_be.run_steps(first_be.start_chain(label, seed, steps, scheduler), split)
    wire = msgpack.packb(part.to_wire())
    second_be = make_backend()
    resumed = ChainState.from_wire(msgpack.unpackb(wire))
    done = second_be.run_steps(resumed, steps)
    a, b = whole.latent_tensor(), done.latent_tensor()
    return {
        "scheduler": scheduler,
        "steps": steps,
        "split": split,
        "wire_bytes": len(wire),
        "latent_bit_identical": whole.latent == done.latent,
        "image_identical": bool(
            np.array_equal(whole_be.finish_chain(whole), second_be.finish_chain(done))
        ),
        "max_abs_diff": float((a - b).abs().max()),
    }


def batch_vs_single(
    be: Backend, labels: list[int | None], seeds: list[int], steps: int, scheduler: str
) -> dict[str, Any]:
    batch = be.generate(labels, seeds, steps, scheduler)
    same = [
        bool(np.array_equal(batch[i], be.generate([lab], [s], steps, scheduler)[0]))
        for i, (lab, s) in enumerate(zip(labels, seeds, strict=True))
    ]
    return {"scheduler": scheduler, "steps": steps, "n": len(seeds), "identical": same}


def digit_canvas(cells: int, size: int = 16, offset: int = 0) -> np.ndarray:
    """A cells x cells mosaic of real digits at `size` px (deterministic)."""
    x, _ = load_digits_tensor(size)
    canvas = np.zeros((cells * size, cells * size), dtype=np.uint8)
    for k in range(cells * cells):
        r, c = divmod(k, cells)
        canvas[r * size : (r + 1) * size, c * size : (c + 1) * size] = tensor_to_image(
            x[offset + 37 * k]
        )
    return canvas


def centre_mask(side: int, frac: float = 0.5) -> np.ndarray:
    m = np.zeros((side, side), dtype=bool)
    k = round(side * frac / 2)
    lo, hi = side // 2 - k, side // 2 + k
    m[lo:hi, lo:hi] = True
    return m


def scratch_mask(side: int, seed: int = 2) -> np.ndarray:
    """Damage like scratches and blotches: side // 6 rectangles of 1-10 px per side (seeded)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((side, side), dtype=bool)
    for _ in range(side // 6):
        h, w = (int(v) for v in rng.integers(1, 11, 2))
        y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
        m[y : y + h, x : x + w] = True
    return m


MASKS = {"scratches": scratch_mask, "centre": centre_mask}


def tile_vs_untiled(
    be: Backend,
    side: int,
    halo: int,
    steps: int,
    seed: int,
    scheduler: str = "ddim",
    label: int | None = None,
    mask_kind: str = "scratches",
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """PSNR of the tiled against the untiled repair; also returns (canvas, untiled, tiled)."""
    canvas = digit_canvas(side // be.sample_size, be.sample_size)
    if mask_kind not in MASKS:
        raise ValueError(f"unknown mask kind {mask_kind!r}; choose from {sorted(MASKS)}")
    mask = MASKS[mask_kind](side)
    untiled = be.repair(canvas, mask, steps, seed, label=label, scheduler=scheduler)
    tiled = be.repair_canvas(canvas, mask, steps, seed, halo=halo, label=label, scheduler=scheduler)
    report = {
        "canvas": side,
        "tile": be.sample_size,
        "halo": halo,
        "steps": steps,
        "scheduler": scheduler,
        "label": label,
        "mask": mask_kind,
        "masked_fraction": round(float(mask.mean()), 4),
        "psnr_db": round(psnr(untiled, tiled), 2),
        "psnr_masked_region_db": round(psnr(untiled[mask], tiled[mask]), 2),
        "known_region_kept": bool(
            np.array_equal(tiled[~mask], canvas[~mask])
            and np.array_equal(untiled[~mask], canvas[~mask])
        ),
    }
    return report, (canvas, untiled, tiled)
