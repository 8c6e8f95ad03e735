"""`amcoedge bench gossip`: the membership benchmark, simulated (virtual time) or `--real`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from amcoedge.output import emit_json
from gossip.bench import run_sim_bench
from gossip.errors import ConfigError
from gossip.realbench import PRESETS, run_real_bench

ANCHORS = {
    "memberlist_lan": "probe 1 s, timeout 0.5 s, suspicion 4 s (N<=10) / 8 s (N=100): "
    "crash confirmed in about 5-6 s for <= 10 peers",
    "swim_first_detection_periods": 1.58,
    "kinship_median_detection_s_at_100": 9.7,
    "memberlist_median_detection_s_at_100": 9.8,
}


def register(groups: dict[str, Any]) -> None:
    p = groups["bench"].add_parser(
        "gossip",
        help="gossip membership: join, dissemination, crash detection, false positives, load",
        description=(
            "Simulated (virtual time, seeded) by default; --real runs N peer processes on "
            "loopback and measures wall-clock time. Prints JSON."
        ),
    )
    p.add_argument("--peers", type=int, default=100, help="number of peers (default 100)")
    p.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    p.add_argument("--seed", type=int, default=1, help="simulation seed")
    p.add_argument("--preset", choices=sorted(PRESETS), default="lan", help="GossipConfig preset")
    p.add_argument(
        "--steady-s",
        type=float,
        default=None,
        help="quiet window for false positives and bytes/s (default 600 simulated, 20 real)",
    )
    p.add_argument("--crashes", type=int, default=None, help="peers crashed one at a time")
    p.add_argument("--meta-changes", type=int, default=None, help="timed single load changes")
    p.add_argument(
        "--meta-rate",
        type=float,
        default=0.02,
        help="background load updates per peer per second in the steady window (simulated)",
    )
    p.add_argument(
        "--keyed",
        action="store_true",
        help="run with a cluster key (authenticated frames; measures their byte overhead)",
    )
    p.add_argument("--real", action="store_true", help="real processes on loopback UDP/TCP")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    try:
        result = _run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["config_preset"] = args.preset
    result["anchors"] = ANCHORS
    return 0 if emit_json(result, args.json) else 2


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.peers < 2:
        raise ConfigError("--peers must be at least 2")
    if not 0.0 <= args.loss < 1.0:
        raise ConfigError("--loss must be within [0, 1)")
    phases = ["join", "dissemination", "steady", "crashes"]
    bar = tqdm(total=len(phases), desc=f"gossip N={args.peers}", file=sys.stderr, leave=False)

    def progress(phase: str, t: float) -> None:
        bar.set_postfix_str(f"{phase} done at t={t:.1f}s")
        bar.update(1)

    try:
        if args.real:
            if args.loss:
                raise ConfigError("--loss is only simulated; loopback runs have no loss model")
            if args.peers > 200:
                raise ConfigError("--real supports at most 200 peer processes")
            return asyncio.run(
                run_real_bench(
                    args.peers,
                    preset=args.preset,
                    meta_changes=10 if args.meta_changes is None else args.meta_changes,
                    crashes=3 if args.crashes is None else args.crashes,
                    steady_s=20.0 if args.steady_s is None else args.steady_s,
                    progress=progress,
                )
            )
        return run_sim_bench(
            args.peers,
            args.loss,
            args.seed,
            config=PRESETS[args.preset](),
            steady_s=600.0 if args.steady_s is None else args.steady_s,
            meta_changes=20 if args.meta_changes is None else args.meta_changes,
            crashes=9 if args.crashes is None else args.crashes,
            meta_rate=args.meta_rate,
            progress=progress,
            secret=os.urandom(32) if args.keyed else None,
        )
    finally:
        bar.close()
