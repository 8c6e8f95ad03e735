"""`amcoedge model ...`: train, score and describe the embedded diffusion model."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from amcoedge.output import emit_json
from peer.diffusion.errors import DiffusionError


def register(groups: dict[str, Any]) -> None:
    model = groups["model"]

    p = model.add_parser(
        "train-digits",
        help="train the class-conditional 16x16 digits DDPM",
        description="Train the class-conditional 16x16 DDPM on scikit-learn's bundled digits. "
        "A fixed --steps makes the run reproducible; --minutes only caps wall time.",
    )
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 1500)")
    p.add_argument("--minutes", type=float, default=None, help="cap on wall-clock minutes")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 128)")
    p.add_argument("--json", type=Path, default=None, help="write the training summary here")
    p.set_defaults(func=_cmd_train)
    register_more(model)
    register_engine(model, groups["bench"])


def _cmd_train(args: argparse.Namespace) -> int:
    from peer.diffusion.card import write_training_card
    from peer.diffusion.train import DIGITS16, train

    overrides: dict[str, Any] = {"seed": args.seed, "threads": args.threads}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    cfg = dataclasses.replace(DIGITS16, **overrides)
    command = (
        f"amcoedge model train-digits --out {args.out} --steps {cfg.steps} --seed {cfg.seed} "
        f"--threads {cfg.threads} --batch-size {cfg.batch_size}"
    )
    if args.minutes is not None:
        command += f" --minutes {args.minutes}"
    try:
        result = train(cfg, args.out, minutes=args.minutes)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = write_training_card(args.out, cfg, result, command)
    return 0 if emit_json(summary, args.json) else 2


def _add_model_arg(p: argparse.ArgumentParser, engine: bool = True, device: str = "auto") -> None:
    p.add_argument("--model", default=None, help="local diffusers model dir (default: shipped)")
    p.add_argument("--device", default=device, help=f"auto, cpu or cuda[:N] (default {device})")
    p.add_argument("--threads", type=int, default=1, help="compute threads (default 1)")
    if engine:
        p.add_argument(
            "--engine",
            default="torch",
            help="denoiser engine: torch, onnx or auto (the faster, timed at load; default torch)",
        )


def register_more(model: Any) -> None:
    p = model.add_parser(
        "score",
        help="label agreement of generated digits (SVC judge)",
        description="Generate N class-conditional samples (labels cycle 0-9) and report how "
        "many an SVC trained on the real digits labels as the requested digit.",
    )
    _add_model_arg(p)
    p.add_argument("--n", type=int, default=500, help="samples (default 500)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--scheduler", default="ddim", help="ddim or ddpm (default ddim)")
    p.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i")
    p.add_argument("--batch", type=int, default=50, help="images per forward (default 50)")
    p.add_argument("--grid", type=Path, default=None, help="also write a PNG grid of samples")
    p.add_argument("--write-card", action="store_true", help="record the result in the card")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.set_defaults(func=_cmd_score)

    p = model.add_parser("info", help="print the model card and config")
    _add_model_arg(p)
    p.add_argument("--json", type=Path, default=None, help="write the info here")
    p.set_defaults(func=_cmd_info)

    p = model.add_parser(
        "check",
        help="measure the exactness contracts (chain split, batch, tile PSNR) and calibrate",
        description="On the digits model (or a UNet dir): chain split, batch, tile PSNR and a "
        "calibration. On a Stable Diffusion pipeline dir: `model check-pipeline` (batch, steps "
        "relay and tile split, guided, bit for bit; --steps default 3).",
    )
    _add_model_arg(p)
    p.add_argument(
        "--steps", type=int, default=None, help="denoising steps (default 20; pipelines 3)"
    )
    p.add_argument("--halo", type=int, action="append", default=None, help="halo(s) (default 4)")
    p.add_argument("--canvas", type=int, action="append", default=None, help="canvas side(s)")
    p.add_argument("--label", type=int, default=None, help="repair label (default: none)")
    p.add_argument(
        "--mask",
        action="append",
        choices=["scratches", "centre"],
        default=None,
        help="repair mask kind(s) for the tile check (default: scratches and centre)",
    )
    p.add_argument("--images", type=Path, default=None, help="write repair images (PNG) here")
    p.add_argument(
        "--json", type=Path, nargs="?", const="-", default=None, help="write the result here"
    )
    p.set_defaults(func=_cmd_check)


def _load(args: argparse.Namespace) -> Any:
    from peer.diffusion.backend import load_backend

    return load_backend(
        args.model,
        device=args.device,
        threads=args.threads,
        engine=getattr(args, "engine", "torch"),
    )


def _emit(result: dict[str, Any], path: Path | None) -> None:
    emit_json(result, path)


def _cmd_score(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    from tqdm import tqdm

    from peer.diffusion.card import read_card, write_card
    from peer.diffusion.images import encode_png, image_grid
    from peer.diffusion.quality import DigitScorer

    try:
        be = _load(args)
        if be.num_classes != 10 or be.sample_size != 16 or be.in_channels != 1:
            print("error: score needs a 16x16 one-channel model with 10 classes", file=sys.stderr)
            return 2
        if args.n < 1 or args.batch < 1:
            print("error: --n and --batch must be >= 1", file=sys.stderr)
            return 2
        scorer = DigitScorer.fit(size=16, seed=0)
        labels = np.arange(args.n) % 10
        seeds = [args.seed + i for i in range(args.n)]
        t0 = time.monotonic()
        chunks = []
        for k in tqdm(range(0, args.n, args.batch), desc="sample", unit="batch"):
            lab = [int(v) for v in labels[k : k + args.batch]]
            chunks.append(be.generate(lab, seeds[k : k + args.batch], args.steps, args.scheduler))
        images = np.concatenate(chunks)
        seconds = time.monotonic() - t0
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = scorer.agreement(images, labels)
    result.update(
        model_id=be.model_id,
        scheduler=args.scheduler,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        sampling_seconds=round(seconds, 2),
    )
    if args.grid is not None:
        order = [i for c in range(10) for i in np.flatnonzero(labels == c)[:10]]
        args.grid.write_bytes(encode_png(image_grid([images[i] for i in order], cols=10)))
    if args.write_card:
        card = read_card(be.model_dir) or {"name": be.model_id}
        entries = [
            q
            for q in (card.get("quality") or [])
            if (q.get("scheduler"), q.get("steps")) != (args.scheduler, args.steps)
        ]
        entry = {k: result[k] for k in ("agreement", "n", "scheduler", "steps", "seed", "scorer")}
        entry["per_class"] = result["per_class"]
        entry["scorer_heldout_accuracy"] = result["scorer_heldout_accuracy"]
        card["quality"] = [*entries, entry]
        write_card(be.model_dir, card)
    _emit(result, args.json)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from peer.diffusion.card import read_card

    try:
        be = _load(args)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit(
        {"backend": be.describe(), "engine": be.engine_info(), "card": read_card(be.model_dir)},
        args.json,
    )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from peer.diffusion.backend import load_backend
    from peer.diffusion.checks import batch_vs_single, chain_split, tile_vs_untiled
    from peer.diffusion.images import encode_png, image_grid
    from peer.diffusion.pipeline.load import is_pipeline_dir

    if is_pipeline_dir(args.model):
        from peer.diffusion.pipeline.cli import check_dir

        return check_dir(args.model, args.device, args.threads, args.steps or 3, 3, args.json)
    args.steps = args.steps or 20
    halos = args.halo or [4]
    canvases = args.canvas or [32, 48]
    masks = args.mask or ["scratches", "centre"]
    try:
        be = _load(args)
        todo = len(halos) * len(canvases) * len(masks) + 4
        bar = tqdm(total=todo, desc="check", unit="part")
        result: dict[str, Any] = {"backend": be.describe(), "chain_split": [], "tile": []}
        engine = be.engine  # `auto` resolved once: every backend of the check runs the same one
        for sched in ("ddim", "ddpm"):
            result["chain_split"].append(
                chain_split(
                    lambda: load_backend(
                        args.model, device=args.device, threads=args.threads, engine=engine
                    ),
                    sched,
                    args.steps,
                    args.steps // 2,
                    label=3 if be.num_classes else None,
                    seed=11,
                )
            )
            bar.update(1)
        labels: list[int | None] = [3, 3, 7, 1, 0] if be.num_classes else [None] * 5
        seeds = [11, 12, 13, 14, 15]
        result["batch"] = [
            batch_vs_single(be, labels, seeds, args.steps, s) for s in ("ddim", "ddpm")
        ]
        bar.update(1)
        panels = []
        for kind in masks:
            for side in canvases:
                for halo in halos:
                    report, imgs = tile_vs_untiled(
                        be, side, halo, args.steps, 5, label=args.label, mask_kind=kind
                    )
                    result["tile"].append(report)
                    panels.append(imgs)
                    bar.update(1)
        cost = be.calibrate()
        result["calibration"] = cost.to_wire()
        result["engine"] = be.engine_info()
        result["summary"] = {
            "engine": be.engine,
            "provider": be.provider,
            "threads": be.threads,
            "batch_bit_identical": all(all(r["identical"]) for r in result["batch"]),
            "steps_bit_identical": all(r["latent_bit_identical"] for r in result["chain_split"]),
            "tile_min_psnr_db": min(r["psnr_db"] for r in result["tile"]),
        }
        bar.update(1)
        bar.close()
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.images is not None:
        args.images.mkdir(parents=True, exist_ok=True)
        for report, (canvas, untiled, tiled) in zip(result["tile"], panels, strict=True):
            diff = np.clip(np.abs(untiled.astype(int) - tiled.astype(int)) * 4, 0, 255)
            grid = image_grid([canvas, untiled, tiled, diff.astype(np.uint8)], cols=4)
            name = f"tile_{report['mask']}_{report['canvas']}_halo{report['halo']}.png"
            (args.images / name).write_bytes(encode_png(grid))
    _emit(result, args.json)
    return 0


def register_engine(model: Any, bench: Any) -> None:
    p = model.add_parser(
        "export",
        help="export the UNet to ONNX for the onnx engine (cached by weights hash)",
        description="Export the UNet to ONNX (opset 17, dynamic batch/height/width), check it "
        "against torch, and cache it: $AMCOEDGE_CACHE, else next to a writable model, else "
        "~/.cache/amcoedge/onnx. Peers with --engine onnx|auto export on first use otherwise.",
    )
    _add_model_arg(p, engine=False)
    p.add_argument("--force", action="store_true", help="rebuild even when a valid cache exists")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.set_defaults(func=_cmd_export)

    p = bench.add_parser(
        "denoiser",
        help="ms per denoising step, torch vs onnx engine, per batch size (JSON)",
        description="Time one denoising step of each engine at each batch size, alternating "
        "the engines in one run; median of --repeats. Prints JSON.",
    )
    _add_model_arg(p, engine=False, device="cpu")
    p.add_argument("--batches", default="1,2,8,32", help="batch sizes (default 1,2,8,32)")
    p.add_argument("--repeats", type=int, default=30, help="timed steps per cell (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument(
        "--json",
        type=Path,
        nargs="?",
        const=None,
        default=None,
        help="JSON is always printed; with a PATH it is also written there",
    )
    p.set_defaults(func=_cmd_bench_denoiser)


def _cmd_export(args: argparse.Namespace) -> int:
    from peer.diffusion.backend import load_backend
    from peer.diffusion.onnx_engine import ensure_export
    from peer.diffusion.unet import load_model

    forced = None
    try:
        if args.force:
            from peer.diffusion.backend import resolve_device

            loaded = load_model(args.model, resolve_device(args.device))
            cfg = loaded.unet.config
            size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
            forced = ensure_export(
                loaded, bool(cfg.num_class_embeds), int(cfg.in_channels), int(size), force=True
            )
        be = load_backend(args.model, device=args.device, threads=args.threads, engine="onnx")
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = be.engine_info()
    if forced is not None:
        info["onnx_export"] = forced.status
    keys = ("model_id", "provider", "onnx_model", "onnx_export", "onnx_probe_max_abs_diff")
    _emit({k: info[k] for k in (*keys, "onnx_thread_invariant")}, args.json)
    return 0


def _cmd_bench_denoiser(args: argparse.Namespace) -> int:
    from peer.diffusion.bench import bench_denoiser, parse_batches

    try:
        result = bench_denoiser(
            args.model,
            args.device,
            args.threads,
            parse_batches(args.batches),
            args.repeats,
            args.warmup,
        )
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit(result, args.json)
    return 0
