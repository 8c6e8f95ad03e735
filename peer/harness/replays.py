"""``amcoedge scenario replays``: randomised replays of measured scenarios, for training.

The recruiter trained on synthetic clusters decides like greedy on the real ones (issue 15); the
fitted replays (``scenario sim --fit``) predict the real runs' means within about 20% and show
room that greedy leaves (``--headroom``). This writes, for one scenario file and one real run
of it, ``--variants`` traces of the fitted replay randomised around what was measured, so that
``amcoedge policy train --replays FILE`` can draw episodes from them:

- the schedule: a new seed per variant (arrival times, origins, request kinds) and the arrival
  rate times U(0.7, 1.4) (loads the file did not measure, around the one it did);
- the costs: the fitted per-peer factors times one U(0.8, 1.25) for the whole cluster and
  U(0.9, 1.1) per peer (calibration error, other tenants);
- the shared host's fitted cores times U(0.85, 1.15), when the fit found contention;
- the per-origin overheads times U(0.7, 1.4).

Events (crashes, stops, restarts, quota changes) stay at their times.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from peer.harness.scenario import ScenarioError, load_scenario
from peer.harness.scenario_sim import (
    EngineCosts,
    SimParams,
    SimScenarioError,
    build_trace,
    fit_params,
    load_costs,
    peer_quotas,
    quota_factor,
)
from policy.fleet.sim import Trace

RATE_RANGE = (0.7, 1.4)
CLUSTER_COST_RANGE = (0.8, 1.25)
PEER_COST_RANGE = (0.9, 1.1)
HOST_RANGE = (0.85, 1.15)
OVERHEAD_RANGE = (0.7, 1.4)
MAX_VARIANTS = 2000


def variants(sc: Any, costs: EngineCosts, params: SimParams, k: int, seed: int) -> list[Trace]:
    """``k`` randomised traces of the replay of ``sc`` under the fitted ``params``."""
    n = sc.peers
    base = (
        np.asarray(params.scale, dtype=float)
        if params.scale is not None
        else np.array([quota_factor(q, sc.threads) for q in peer_quotas(sc)])
    )
    out = []
    for i in range(k):
        rng = np.random.default_rng([seed, i, 2024])
        v_sc = replace(
            sc,
            seed=int(rng.integers(2**31)),
            rate_per_s=sc.rate_per_s * float(rng.uniform(*RATE_RANGE)),
        )
        scale = base * float(rng.uniform(*CLUSTER_COST_RANGE)) * rng.uniform(*PEER_COST_RANGE, n)
        over = params.overhead_s
        v_params = replace(
            params,
            scale=tuple(float(x) for x in scale),
            host_cores=(
                params.host_cores * float(rng.uniform(*HOST_RANGE))
                if params.host_cores is not None
                else None
            ),
            overhead_s=(
                tuple(float(o) * float(rng.uniform(*OVERHEAD_RANGE)) for o in over)
                if over is not None
                else None
            ),
        )
        trace, _ = build_trace(v_sc, costs, v_params)
        out.append(trace)
    return out


def cmd_replays(args: Any) -> int:
    from policy.fleet.traces import save_traces

    try:
        if not 1 <= args.variants <= MAX_VARIANTS:
            raise SimScenarioError(f"--variants must be 1 to {MAX_VARIANTS}, got {args.variants}")
        if not 0 <= args.seed < 2**63:
            raise SimScenarioError(f"--seed must be a non-negative integer, got {args.seed}")
        sc = load_scenario(args.file)
        try:
            real = json.loads(Path(args.fit).read_text())
        except (OSError, ValueError) as exc:
            raise SimScenarioError(f"--fit {args.fit}: {exc}") from None
        if not isinstance(real, dict):
            raise SimScenarioError(f"--fit {args.fit}: not a JSON object")
        costs = load_costs(Path(args.costs) if args.costs else None, "onnx", sc.threads)
        cores = float(os.cpu_count() or 1)  # as `scenario sim --fit`: the run ran here
        params = fit_params(real, sc, costs, SimParams(host_cores=cores), max_cores=cores)
        traces = variants(sc, costs, params, args.variants, args.seed)
    except ScenarioError as exc:
        print(f"amcoedge scenario replays: {exc}", file=sys.stderr)
        return 2
    meta = {
        "scenario": sc.name,
        "file": str(args.file),
        "fitted_from": str(args.fit),
        "variants": args.variants,
        "seed": args.seed,
        "host_cores": params.host_cores,
        "scale": list(params.scale) if params.scale is not None else None,
        "randomised": {
            "rate": RATE_RANGE,
            "cluster_cost": CLUSTER_COST_RANGE,
            "peer_cost": PEER_COST_RANGE,
            "host": HOST_RANGE,
            "overhead": OVERHEAD_RANGE,
        },
    }
    try:
        save_traces(args.out, traces, meta)
    except OSError as exc:
        print(f"amcoedge scenario replays: --out {args.out}: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                **meta,
                "out": args.out,
                "requests": [int(t.times.shape[0]) for t in traces[:5]],
            }
        )
    )
    return 0


def register(groups: dict[str, Any]) -> None:
    r = groups["scenario"].add_parser(
        "replays",
        help="randomised replays of a scenario fitted to a real run: traces to train on",
    )
    r.add_argument("file", help="scenario TOML")
    r.add_argument("--fit", required=True, help="results.json of a real `scenario run` of FILE")
    r.add_argument("--costs", help="engine costs JSON (as for `scenario sim`)")
    r.add_argument("--variants", type=int, default=64, help="traces to write (64)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True, help="the traces file to write (.npz)")
    r.set_defaults(func=cmd_replays)
