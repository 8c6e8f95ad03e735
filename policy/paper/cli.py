"""CLI: `sim run`, `sim reproduce`, `policy export`, `bench sim`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from policy.paper.config import DEFAULT, DRL_RULES, SimError, SimParams, capacities_up_to

__all__ = ["register"]

METHOD_NAMES = (
    "amcoedge",
    "amcoedge+",
    "drlcoedge",
    "smcoedge",
    "randcoedge",
    "optimal",
    "local",
    "all",
    "greedy",
)
DEFAULT_EPISODES = {"amcoedge": 500, "amcoedge+": 500, "drlcoedge": 400, "smcoedge": 300}


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


def _prob(text: str) -> float:
    v = _positive_float(text) if text.strip() not in ("0", "0.0") else 0.0
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def _params(args: argparse.Namespace) -> SimParams:
    p = DEFAULT
    if args.deadline is not None:
        p = p.with_(deadline=args.deadline)
    if args.arrival_prob is not None:
        p = p.with_(arrival_prob=args.arrival_prob)
    if args.tasks is not None:
        p = p.with_(tasks=args.tasks)
    if args.fmax is not None:
        p = p.with_(capacities=capacities_up_to(args.fmax))
    if args.clean:
        p = p.with_(clean=True)
    if getattr(args, "drl_rule", None):
        p = p.with_(drl_rule=args.drl_rule)
    return p


def _write_json(path: str | None, data: Any) -> bool:
    """Write JSON to PATH (stdout for None or "-"); False with a message when it cannot."""
    text = json.dumps(data, indent=1)
    if path is None or path == "-":
        print(text)
        return True
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as exc:
        print(f"error: cannot write {path}: {exc}", file=sys.stderr)
        return False
    return True


def _cmd_run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from policy.paper.runner import run

    torch.set_num_threads(1)
    episodes = args.episodes or DEFAULT_EPISODES.get(args.method, 50)
    if args.save_checkpoint and args.method not in ("amcoedge", "amcoedge+"):
        print(
            "error: --save-checkpoint is only for --method amcoedge or amcoedge+", file=sys.stderr
        )
        return 2
    try:
        params = _params(args)
        bar = tqdm(total=episodes, desc=args.method, disable=args.quiet, file=sys.stderr)

        def tick(ep: int, ms: float, fr: float) -> None:
            bar.update(1)
            bar.set_postfix(makespan=f"{ms:.4f}", fail=f"{fr:.3f}")

        res = run(args.method, params, episodes, args.seed, progress=tick)
        bar.close()
    except SimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = res.to_json()
    if args.save_checkpoint:
        from policy.export import save_adadqn_checkpoint
        from policy.paper.plus import save_plus_checkpoint

        try:
            if args.method == "amcoedge+":
                save_plus_checkpoint(res, Path(args.save_checkpoint))
            else:
                save_adadqn_checkpoint(res, Path(args.save_checkpoint))
        except OSError as exc:
            print(f"error: cannot write {args.save_checkpoint}: {exc}", file=sys.stderr)
            return 2
        data["checkpoint"] = args.save_checkpoint
    if args.json and not _write_json(args.json, data):
        return 2
    brief = {
        k: data[k]
        for k in (
            "method",
            "episodes",
            "seed",
            "avg_makespan",
            "failure_rate",
            "wall_s",
            "decisions_per_s",
        )
    }
    print(json.dumps(brief))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from policy.paper.reproduce import full_plan, quick_plan, reproduce

    if args.render_only:
        from policy.paper.reproduce import render

        try:
            render(Path(args.out), Path(args.analyses))
        except (OSError, KeyError, ValueError) as exc:
            print(f"error: cannot render {args.out}: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"out": args.out, "rendered": True}))
        return 0
    if args.estimate_from:
        from policy.paper.reproduce import estimate_full

        rows: list[dict[str, Any]] = []
        try:
            for f in args.estimate_from:
                data = json.loads(Path(f).read_text())
                if "method" in data:  # one `sim run --json` result
                    rows.append(data)
                else:
                    rows += data["runs"] if "runs" in data else data["rows"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: cannot read run times: {exc}", file=sys.stderr)
            return 2
        full = full_plan(args.seeds or 3)
        if args.methods:
            full = replace(full, methods=tuple(args.methods))
        est = estimate_full(rows, full, args.jobs, DEFAULT.with_(drl_rule=args.drl_rule))
        if est is None:
            have = sorted({str(r["method"]) for r in rows})
            print(
                f"error: no measured run for some method of the plan (have {have})", file=sys.stderr
            )
            return 2
        print(json.dumps({"estimate_full": est, "from_runs": len(rows)}, indent=1))
        return 0
    plan = quick_plan(args.seeds or 1) if args.quick else full_plan(args.seeds or 3)
    if args.methods:
        plan = replace(plan, methods=tuple(args.methods))
    base = DEFAULT.with_(drl_rule=args.drl_rule)
    bar = tqdm(desc="reproduce", unit="run", file=sys.stderr, disable=args.quiet)

    def done(i: int, n: int) -> None:
        bar.total = n
        bar.update(1)

    try:
        res = reproduce(
            Path(args.out),
            plan,
            args.jobs,
            base=base,
            on_done=done,
            analyses_dir=Path(args.analyses),
        )
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    bar.close()
    summary = res["summary"]
    assert isinstance(summary, dict)
    brief = {
        "out": args.out,
        "runs": len(res["runs"]),  # type: ignore[arg-type]
        "resumed": res["resumed"],
        "wall_s": res["wall_s"],
        "estimate_full": res["estimate"],
        "claims": summary["claims"],
    }
    print(json.dumps(brief, indent=1))
    return 0


def _cmd_analyse(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from policy.paper import analyse

    torch.set_num_threads(1)
    bar = tqdm(desc=f"analyse {args.analysis}", unit="run", file=sys.stderr, disable=args.quiet)

    def done(i: int, n: int) -> None:
        bar.total = n
        bar.update(1)

    seeds = list(args.seeds)
    try:
        params = _params(args)
        if args.analysis == "spread":
            data = analyse.spread(args.methods, seeds, args.episodes, args.jobs, params, done)
        elif args.analysis == "ablation":
            data = analyse.ablation(args.variants, seeds, args.episodes, args.jobs, params, done)
        elif args.analysis == "drl-rule":
            data = analyse.drl_rule(seeds, args.episodes, args.jobs, params, done)
        else:
            data = analyse.bound(seeds, args.episodes, args.rounds, params, done)
    except SimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    data["command"] = _analyse_command(args)
    if not _write_json(args.out, data):
        return 2
    print(json.dumps({"out": args.out, "analysis": args.analysis, "wall_s": data["wall_s"]}))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from policy.export import ExportError, export_checkpoint

    try:
        info = export_checkpoint(Path(args.checkpoint), Path(args.out), opset=args.opset)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from policy.export import ExportError
    from policy.paper.card import write_adadqn_card

    try:
        spread = json.loads(Path(args.spread).read_text()) if args.spread else None
        write_adadqn_card(Path(args.checkpoint), Path(args.out), spread=spread)
    except (ExportError, OSError, ValueError, KeyError) as exc:
        print(f"error: cannot write the card: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"card": args.out}))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from policy.paper.runner import run

    torch.set_num_threads(1)
    out: dict[str, Any] = {"episodes": args.episodes, "seed": args.seed, "methods": {}}
    t0 = time.perf_counter()
    for m in args.methods:
        res = run(m, DEFAULT, args.episodes, args.seed)
        out["methods"][m] = {
            "decisions_per_s": res.tasks / res.wall_s,
            "tasks": res.tasks,
            "wall_s": res.wall_s,
            "avg_makespan": res.avg_makespan,
        }
    out["wall_s"] = time.perf_counter() - t0
    out["note"] = "learned methods include training (from scratch, first episodes are random)"
    return 0 if _write_json(args.json, out) else 2


def register(groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]]) -> None:
    sim = groups["sim"]
    p = sim.add_parser(
        "run",
        help="run one method of the paper's simulation",
        description="Run one method for E episodes on one seed and report the last-50 means.",
    )
    p.add_argument("--method", required=True, choices=METHOD_NAMES)
    p.add_argument(
        "--episodes",
        type=_positive_int,
        default=None,
        help="episodes (default: 500 amcoedge, 400 drlcoedge, 300 smcoedge, 50 others)",
    )
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--deadline", type=_positive_float, default=None, help="τ in seconds (1.0)")
    p.add_argument("--arrival-prob", type=_prob, default=None, help="arrival probability (0.3)")
    p.add_argument("--tasks", type=_positive_int, default=None, help="task positions per BS (50)")
    p.add_argument(
        "--fmax",
        type=_positive_float,
        default=None,
        help="capacities evenly spaced 10..fmax GHz (50)",
    )
    p.add_argument(
        "--clean",
        action="store_true",
        help="every method in the AMCoEdge environment (no baseline quirks)",
    )
    p.add_argument(
        "--drl-rule",
        choices=DRL_RULES,
        default=None,
        help="DRLCoEdge local-share rule: spec (default) or older-commit",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="write the full result JSON here")
    p.add_argument(
        "--save-checkpoint",
        metavar="PATH",
        default=None,
        help="(amcoedge, amcoedge+) save the trained agents as an export checkpoint",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    r = sim.add_parser(
        "reproduce",
        help="defaults plus the four sweeps for every method; report.md, results.json, figures",
        description="Reproduce the paper's simulation study into DIR.",
    )
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--seeds", type=_positive_int, default=None, help="seeds (3; quick: 1)")
    r.add_argument(
        "--quick",
        action="store_true",
        help="defaults + 1 hard point per sweep, 200 learned / 10 other episodes, 1 seed",
    )
    r.add_argument(
        "--jobs",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="worker processes (default: the CPU count)",
    )
    r.add_argument(
        "--methods",
        nargs="+",
        choices=METHOD_NAMES,
        default=None,
        help="methods to run (default: all)",
    )
    r.add_argument("--drl-rule", choices=DRL_RULES, default="spec", help="DRLCoEdge rule (spec)")
    r.add_argument(
        "--analyses",
        default="reports/analyses",
        metavar="DIR",
        help="folder of `sim analyse` outputs the report cites (reports/analyses)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--estimate-from",
        nargs="+",
        metavar="FILE.json",
        default=None,
        help="only print the full plan's wall-time estimate from the run times in these "
        "results.json / sim analyse files (nothing is run)",
    )
    r.add_argument(
        "--render-only",
        action="store_true",
        help="redraw figures and report.md from DIR/results.json without simulating",
    )
    r.set_defaults(func=_cmd_reproduce)

    _register_analyse(sim)

    e = groups["policy"].add_parser(
        "export",
        help="export a trained checkpoint to ONNX",
        description="Export a checkpoint ({'kind': ...}) to a single-file ONNX model.",
    )
    e.add_argument("--checkpoint", required=True, metavar="C")
    e.add_argument("--out", required=True, metavar="X.onnx")
    e.add_argument("--opset", type=_positive_int, default=18)
    e.set_defaults(func=_cmd_export)

    c = groups["policy"].add_parser(
        "card",
        help="write the model card of a paper-mode AdaDQN checkpoint",
        description="Model card from the checkpoint, its ONNX file and an optional spread file; "
        "hand-written notes come from <card>.notes.md.",
    )
    c.add_argument("--checkpoint", required=True, metavar="C.pt")
    c.add_argument("--out", required=True, metavar="CARD.md")
    c.add_argument("--spread", default=None, metavar="FILE.json", help="sim analyse spread output")
    c.set_defaults(func=_cmd_card)

    b = groups["bench"].add_parser(
        "sim",
        help="decisions per second of each simulation method (JSON)",
        description="Decisions per second for each method at the defaults.",
    )
    b.add_argument(
        "--json",
        nargs="?",
        const="-",
        default="-",
        metavar="PATH",
        help="write JSON to PATH (default: stdout)",
    )
    b.add_argument("--episodes", type=_positive_int, default=5)
    b.add_argument("--seed", type=_nonneg_int, default=0)
    b.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES))
    b.set_defaults(func=_cmd_bench)


def _analyse_command(args: argparse.Namespace) -> str:
    """The command line that recomputes this analysis (every option that changes it)."""
    parts = ["amcoedge sim analyse", args.analysis, "--out", args.out]
    parts += ["--seeds", ",".join(str(s) for s in args.seeds), "--episodes", str(args.episodes)]
    for flag in ("deadline", "arrival_prob", "fmax", "tasks", "rounds"):
        v = getattr(args, flag, None)
        if v is not None:
            parts += ["--" + flag.replace("_", "-"), str(v)]
    for flag in ("methods", "variants"):
        v = getattr(args, flag, None)
        if v:
            parts += ["--" + flag, *v]
    return " ".join(parts)


def _seed_list(text: str) -> list[int]:
    """'0-2' or '10,11,12' or '4'."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-2 or 10,11,12: {text!r}") from exc
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"need distinct non-negative seeds, got {text!r}")
    return seeds


def _register_analyse(sim: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from policy.paper.plus import ABLATIONS

    a = sim.add_parser(
        "analyse",
        help="recompute an analysis the reproduction report cites (JSON)",
        description="Recompute one analysis of the reproduction report into a JSON file.",
    )
    sub = a.add_subparsers(dest="analysis", required=True)
    specs = {
        "spread": ("learned methods over seeds, ratios to each seed's Optimal and SMCoEdge", 500),
        "bound": ("one fixed ES subset per BS by coordinate descent (faithful env)", 3),
        "ablation": ("amcoedge+ with each departure undone", 500),
        "drl-rule": ("DRLCoEdge under both local-share rules", 400),
    }
    for name, (help_text, episodes) in specs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", required=True, metavar="FILE.json")
        p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="e.g. 0-2 or 10,11")
        p.add_argument("--episodes", type=_positive_int, default=episodes)
        p.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1)
        p.add_argument("--quiet", action="store_true")
        for flag, kind in (
            ("--deadline", _positive_float),
            ("--arrival-prob", _prob),
            ("--fmax", _positive_float),
        ):
            p.add_argument(flag, type=kind, default=None)
        p.add_argument("--tasks", type=_positive_int, default=None)
        p.set_defaults(func=_cmd_analyse, clean=False)
        if name == "spread":
            p.add_argument(
                "--methods",
                nargs="+",
                choices=("amcoedge", "amcoedge+", "drlcoedge", "smcoedge"),
                default=["amcoedge", "amcoedge+"],
            )
        if name == "ablation":
            p.add_argument(
                "--variants", nargs="+", choices=sorted(ABLATIONS), default=list(ABLATIONS)
            )
        if name == "bound":
            p.add_argument("--rounds", type=_positive_int, default=3)
