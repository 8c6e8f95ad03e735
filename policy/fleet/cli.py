"""`amcoedge policy train | eval | grid` for the fleet recruitment policy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from amcoedge.output import emit_json
from policy.fleet.recruiters import RECRUITERS


def _methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in RECRUITERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown methods {bad}; known: {', '.join(RECRUITERS)}")
    return names


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return v


def _peers(text: str) -> int:
    v = int(text)
    if not 1 <= v <= 64:
        raise argparse.ArgumentTypeError("peers must be in 1..64")
    return v


def _load(text: str) -> float:
    v = float(text)
    if not 0.0 < v < 5.0:
        raise argparse.ArgumentTypeError("load must be in (0, 5)")
    return v


def _stale(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 60.0:
        raise argparse.ArgumentTypeError("staleness must be in [0, 60] seconds")
    return v


def _train(args: argparse.Namespace) -> int:
    import torch

    from policy.export import export_checkpoint
    from policy.fleet.onnx_export import parity
    from policy.fleet.traces import TraceFileError
    from policy.fleet.train import TrainConfig, load_net, train

    torch.set_num_threads(1)
    if args.replay_frac > 0 and not args.replays:
        print("amcoedge policy train: --replay-frac needs --replays FILE", file=sys.stderr)
        return 2
    tc = TrainConfig(
        minutes=args.minutes,
        seed=args.seed,
        episodes=args.episodes,
        randomised_frac=args.randomised_frac,
        host_frac=args.host_frac,
        replays=tuple(args.replays),
        replay_frac=args.replay_frac,
        runtime_semantics=args.runtime_semantics,
        init=args.init,
        eps_start=args.eps_start,
    )
    out = Path(args.out)
    try:  # a bad traces file fails here, before the first episode
        ckpt = train(tc, out, progress=not args.quiet)
    except TraceFileError as exc:
        print(f"amcoedge policy train: {exc}", file=sys.stderr)
        return 2
    onnx_path = out / "recruiter.onnx"
    info = export_checkpoint(out / "recruiter.pt", onnx_path)
    summary = {
        "out": str(out),
        "checkpoint": str(out / "recruiter.pt"),
        "onnx": str(onnx_path),
        "exporter": info["exporter"],
        "episodes": ckpt["episodes"],
        "seed": args.seed,
        "minutes": args.minutes,
        "command": f"amcoedge policy train --out {args.out} --minutes {args.minutes:g} --seed {args.seed}"
        + (f" --episodes {args.episodes}" if args.episodes else "")
        + (f" --randomised-frac {args.randomised_frac:g}" if args.randomised_frac else "")
        + (f" --host-frac {args.host_frac:g}" if args.host_frac else "")
        + "".join(f" --replays {f}" for f in args.replays)
        + (f" --replay-frac {args.replay_frac:g}" if args.replay_frac else "")
        + (" --runtime-semantics" if args.runtime_semantics else "")
        + (f" --init {args.init}" if args.init else "")
        + (f" --eps-start {args.eps_start:g}" if args.eps_start != 1.0 else ""),
        "parity_max_abs_diff": parity(load_net(ckpt), onnx_path),
    }
    meta = {**summary, "train_config": ckpt["train"], "net": ckpt["net"], "log": ckpt["log"]}
    (out / "recruiter.json").write_text(json.dumps(meta) + "\n")
    emit_json(summary)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from policy.fleet.evaluate import evaluate_cell
    from policy.fleet.sim import SimConfig

    base = SimConfig(n_requests=args.requests)
    res = evaluate_cell(
        args.peers, args.load, args.staleness, range(args.seeds), args.methods, base, args.model
    )
    emit_json(res, args.json)
    return 0


def _grid(args: argparse.Namespace) -> int:
    from policy.fleet.evaluate import evaluate_grid, markdown_table
    from policy.fleet.sim import SimConfig

    base = SimConfig(n_requests=args.requests)
    res = evaluate_grid(
        seeds=range(args.seeds),
        methods=args.methods,
        base=base,
        model_path=args.model,
        progress=not args.quiet,
    )
    table = markdown_table(res)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.card:
        from policy.fleet.bench import onnx_latency
        from policy.fleet.card import write_card
        from policy.fleet.recruiters import DEFAULT_MODEL

        model = Path(args.model) if args.model else DEFAULT_MODEL
        meta_path = model.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        cmd = "amcoedge policy grid " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else ""
        write_card(Path(args.card), meta, res, table, onnx_latency(model_path=model), cmd)
    emit_json(res["checks"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(table, file=sys.stderr)
    return 0


def _sim_real(args: argparse.Namespace) -> int:
    from policy.fleet.card import put_sim_real, sim_real_section

    compares = []
    for path in args.compare:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(f"amcoedge policy sim-real: {path}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(data, dict) or not isinstance(data.get("policies"), dict):
            print(f"amcoedge policy sim-real: {path}: not a compare JSON", file=sys.stderr)
            return 2
        compares.append(data)
    cmd = "amcoedge policy sim-real " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else ""
    put_sim_real(Path(args.card), sim_real_section(compares, cmd))
    return 0


def _notes(args: argparse.Namespace) -> int:
    from policy.fleet.card import put_notes

    card = Path(args.card)
    if not card.is_file() or not put_notes(card):
        print(f"amcoedge policy notes: {card}: no card with a '## Notes' section", file=sys.stderr)
        return 2
    return 0


def register(groups: dict[str, Any]) -> None:
    p = groups["policy"]
    nt = p.add_parser("notes", help="rewrite a model card's Notes section from its notes file")
    nt.add_argument("--card", required=True, help="model card (Markdown), e.g. recruiter.md")
    nt.set_defaults(func=_notes)
    sr = p.add_parser(
        "sim-real", help="write the model card's sim-vs-real table from scenario compare JSONs"
    )
    sr.add_argument("--card", required=True, help="model card (Markdown) to update")
    sr.add_argument("compare", nargs="+", help="`amcoedge scenario compare --json` outputs")
    sr.set_defaults(func=_sim_real)
    t = p.add_parser("train", help="train the fleet recruitment network (DQN family, any N)")
    t.add_argument("--out", required=True, help="output directory (checkpoint, ONNX, log)")
    t.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--episodes",
        type=_positive_int,
        default=None,
        help="stop after this many episodes (reproducible: epsilon decays by episode count)",
    )
    t.add_argument(
        "--randomised-frac",
        type=_fraction,
        default=0.0,
        help="share of episodes from policy.fleet.randomise (real-like clusters; issue 15)",
    )
    t.add_argument(
        "--host-frac",
        type=_fraction,
        default=0.0,
        help="of the randomised episodes, the share whose peers share one host's cores",
    )
    t.add_argument(
        "--replays",
        action="append",
        default=[],
        help="a traces file of `amcoedge scenario replays` (repeatable): measured scenarios",
    )
    t.add_argument(
        "--replay-frac",
        type=_fraction,
        default=0.0,
        help="share of episodes drawn from the --replays files (before --randomised-frac)",
    )
    t.add_argument(
        "--runtime-semantics",
        action="store_true",
        help="decide as the runtime does: no deadline in the features, planner re-split",
    )
    t.add_argument("--init", help="checkpoint (recruiter.pt) to start from (fine-tuning)")
    t.add_argument("--eps-start", type=_fraction, default=1.0, help="initial exploration rate")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..K-1")
        sp.add_argument("--requests", type=_positive_int, default=2000, help="requests per run")
        sp.add_argument(
            "--methods",
            type=_methods,
            default=list(RECRUITERS),
            help="comma-separated, from: " + ", ".join(RECRUITERS),
        )
        sp.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
        sp.add_argument("--json", default=None, help="write the JSON result here")

    e = p.add_parser("eval", help="compare recruiters on one seeded cell (N, load, staleness)")
    e.add_argument("--peers", type=_peers, required=True)
    e.add_argument("--load", type=_load, required=True, help="offered load over total capacity")
    e.add_argument("--staleness", type=_stale, required=True, help="mean view age, seconds")
    common(e)
    e.set_defaults(func=_eval)

    g = p.add_parser(
        "grid", help="the evaluation grid: N 8/16/32 x load 0.3/0.6/0.85 x staleness 0/0.5/2 s"
    )
    common(g)
    g.add_argument("--markdown", default=None, help="write the Markdown table here")
    g.add_argument("--card", default=None, help="write the model card (Markdown) here")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_grid)
