"""`amcoedge model ...`: train, score and describe the embedded diffusion model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

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
        "amcoedge model " + " ".join(sys.argv[sys.argv.index("train-digits") :])
        if ("train-digits" in sys.argv)
        else "amcoedge model train-digits"
    )
    try:
        result = train(cfg, args.out, minutes=args.minutes)
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = write_training_card(args.out, cfg, result, command)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0
