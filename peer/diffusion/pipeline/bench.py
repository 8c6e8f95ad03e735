"""`amcoedge bench pipeline`: what one peer pays for a Stable Diffusion pipeline.

Measured, one process, the backend's thread count: load time, text encoding of one prompt
(batch 1, as the backend always runs it), one guided denoising step (2 UNet rows per image) at
1 and 2 images and one unguided step at 1 image, the affine fit `a + c * images` of the guided
step, one VAE decode, and the process's peak resident memory. `predicted_image_s` is a
prediction from these figures (encode both prompts + `steps` guided steps + decode), labelled
as such.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

from peer.diffusion.cost import fit_affine


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1 << 20) if sys.platform == "darwin" else kb / 1024.0, 1)


def bench_pipeline(
    model: str,
    device: str = "cpu",
    threads: int = 1,
    dtype: str = "float32",
    repeats: int = 1,
    batches: tuple[int, ...] = (1, 2),
    predict_steps: int = 20,
) -> dict[str, Any]:
    from peer.diffusion.pipeline.backend import load_pipeline_backend

    t0 = time.perf_counter()
    be = load_pipeline_backend(model, device=device, threads=threads, dtype=dtype)
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()
    encode_s = be.time_encode(repeats)
    be.time_step(1)  # warm-up
    guided = {b: be.time_step(b, guided=True, repeats=repeats) for b in batches}
    unguided = be.time_step(1, guided=False, repeats=repeats)
    a, c = fit_affine(list(guided.items()))
    decode_s = be.time_decode(repeats)
    return {
        "model_id": be.model_id,
        "kind": be.kind,
        "device": be.device,
        "dtype": dtype,
        "threads": threads,
        "size": f"{be.sample_size}x{be.sample_size}",
        "latent": f"{be.sample_size // be.latent_factor}x{be.sample_size // be.latent_factor}",
        "load_s": round(load_s, 3),
        "text_encode_s": round(encode_s, 4),
        "step_guided_s": {str(b): round(s, 4) for b, s in guided.items()},
        "step_unguided_1_s": round(unguided, 4),
        "affine_fit": {"a_s": round(a, 4), "c_s": round(c, 4), "unit": "guided image (2 rows)"},
        "vae_decode_s": round(decode_s, 4),
        "predicted_image_s": {
            "steps": predict_steps,
            "seconds": round(2 * encode_s + predict_steps * guided[batches[0]] + decode_s, 2),
            "what": "prediction from the figures above, not a measured run",
        },
        "peak_rss_mb_after_load": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
        "repeats": repeats,
    }
