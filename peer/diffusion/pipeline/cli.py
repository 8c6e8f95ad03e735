"""`amcoedge model make-tiny-sd`, `amcoedge model check-pipeline`, `amcoedge bench pipeline`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from amcoedge.output import emit_json
from peer.diffusion.errors import DiffusionError


def register(groups: dict[str, Any]) -> None:
    model, bench = groups["model"], groups["bench"]
    p = model.add_parser(
        "make-tiny-sd",
        help="write a tiny random Stable Diffusion pipeline dir (for tests)",
        description="Write a randomly initialised Stable Diffusion pipeline in the standard "
        "diffusers layout, built from configs (nothing is downloaded). --sd15-shape writes the "
        "real SD 1.5 architecture with random weights (about 4 GB), for benchmarks.",
    )
    p.add_argument("dir", type=Path, help="output directory (absent or empty)")
    p.add_argument("--inpaint", action="store_true", help="the inpainting variant (9-channel UNet)")
    p.add_argument(
        "--size", type=int, default=None, help="image side in pixels (32; 512 with --sd15-shape)"
    )
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.add_argument("--sd15-shape", action="store_true", help="SD 1.5's architecture")
    p.set_defaults(func=_cmd_make)

    p = model.add_parser(
        "check-pipeline",
        help="batch/steps/tiles exactness of a pipeline dir",
        description="Batch split, steps relay (through the wire form, with and without the "
        "prompt embeddings) and tile split of a pipeline, guided, compared bit for bit.",
    )
    p.add_argument("--model", required=True, type=Path, help="pipeline directory")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", nargs="?", const="-", default="-", help="also write the JSON here")
    p.set_defaults(func=_cmd_check)

    p = bench.add_parser(
        "pipeline",
        help="per-step UNet cost, batch fit, text encoding, VAE decode, peak RSS of a pipeline",
        description="Time one peer's pipeline: see peer.diffusion.pipeline.bench.",
    )
    p.add_argument("--model", required=True, type=Path, help="pipeline directory")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", nargs="?", const="-", default="-", help="also write the JSON here")
    p.set_defaults(func=_cmd_bench)


def _cmd_make(args: argparse.Namespace) -> int:
    from peer.diffusion.pipeline.tiny import make_tiny_sd

    size = args.size if args.size is not None else (512 if args.sd15_shape else 32)
    try:
        root = make_tiny_sd(args.dir, args.inpaint, size, args.seed, sd15_shape=args.sd15_shape)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emit_json(
        {"dir": str(root), "inpaint": args.inpaint, "size": size, "sd15_shape": args.sd15_shape}
    )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    return check_dir(args.model, args.device, args.threads, args.steps, args.images, args.json)


def check_dir(model: Path, device: str, threads: int, steps: int, images: int, out: Any) -> int:
    """`check_pipeline` on a pipeline dir, printed as JSON (also `amcoedge model check`'s path
    for a pipeline dir); exit 1 when batch or steps are not bit-identical."""
    from peer.diffusion.pipeline.backend import load_pipeline_backend
    from peer.diffusion.pipeline.checks import check_pipeline

    try:
        be = load_pipeline_backend(model, device=device, threads=threads)
        result = check_pipeline(be, steps=steps, images=images)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = emit_json(result, out)
    return 0 if ok and result["batch_identical"] and result["steps_identical"] else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    from peer.diffusion.pipeline.bench import bench_pipeline

    try:
        result = bench_pipeline(
            str(args.model), args.device, args.threads, args.dtype, repeats=args.repeats
        )
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if emit_json(result, args.json) else 2
