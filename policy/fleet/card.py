"""The shipped model's card: what goes in, what comes out, how it was trained and how it did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policy.fleet.actions import ACTIONS, AGE_HEDGES, CAPS, N_ACTIONS, N_HEDGES, describe
from policy.fleet.features import FEATURE_NAMES


def _misses(grid: dict[str, Any]) -> str:
    """Plain-language list of the cells that miss a per-cell target."""
    best, rand, fail = [], [], []
    for c in grid["cells"]:
        m = c["methods"]
        if not {"learned", "greedy", "greedy-aware", "random"} <= set(m):
            return ""
        tag = f"N={c['peers']} load={c['load']} stale={c['staleness_s']}"
        lrn = m["learned"]["avg_makespan"]
        b = min(m["greedy"]["avg_makespan"], m["greedy-aware"]["avg_makespan"])
        if lrn > 1.02 * b:
            best.append(f"{tag} ({lrn / b:.3f})")
        if lrn > 0.80 * m["random"]["avg_makespan"]:
            rand.append(f"{tag} ({lrn / m['random']['avg_makespan']:.3f})")
        if m["learned"]["failure_rate"] > m["greedy"]["failure_rate"]:
            fail.append(tag)
    lines = [
        "Per-cell targets missed (learned <= 1.02 x best greedy, <= 0.80 x random, failure rate"
        " <= greedy's):",
        "",
    ]
    lines.append(f"- above 1.02 x best greedy: {', '.join(best) or 'none'}")
    lines.append(f"- above 0.80 x random: {', '.join(rand) or 'none'}")
    lines.append(f"- failure rate above greedy: {', '.join(fail) or 'none'}")
    return "\n".join(lines)


def write_card(
    path: Path,
    meta: dict[str, Any],
    grid: dict[str, Any],
    table: str,
    latency: dict[str, Any],
    grid_command: str,
    notes: str = "",
) -> None:
    feats = "\n".join(f"| {i} | `{n}` |" for i, n in enumerate(FEATURE_NAMES))
    acts = ", ".join(f"{i}: {describe(i)}" for i in range(len(ACTIONS)))
    lat = "\n".join(
        f"| {n} | {v['onnx_us_p50']:.1f} | {v['onnx_us_p99']:.1f} | {v['features_us_p50']:.1f} |"
        for n, v in latency["sizes"].items()
    )
    parity = meta.get("parity_max_abs_diff", {})
    log_cost = bool(meta.get("train_config", {}).get("log_cost", False))
    target = "-log(cost / T0)" if log_cost else "-cost / T0 (clipped at 200)"
    text = f"""# recruiter.onnx: fleet recruitment policy

Chooses which peers an origin recruits for one request and how many units each gets, for any
number of candidate peers (1 to 64 tested). Loaded by `policy.fleet.make_recruiter("learned")`
through `policy/ort.py`; if it is missing or broken the recruiter falls back to greedy-aware
water-filling and every decision says so (`Decision.fallback`).

## Inputs

One input, `features`, float32, shape `(peers, {len(FEATURE_NAMES)})`: one row per candidate,
built by `policy.fleet.features.build_features` (the simulator and the runtime both call it).
Time-like columns are divided by `T0`, the best greedy-aware solo finish over the candidates.

| column | feature |
|---|---|
{feats}

## Outputs

One output, `policy`, float32, shape `(peers, {N_ACTIONS + N_HEDGES})`. Columns `0..{N_ACTIONS - 1}`
are the Q-values (negated cost over `T0`; identical in every row) of the {N_ACTIONS} actions
(cap in {list(CAPS)} with 0 = all, hedge in age multiples {list(AGE_HEDGES)} or the learned
per-candidate correction); columns `{N_ACTIONS}..{N_ACTIONS + N_HEDGES - 1}` are each candidate's score
(negated hedged solo finish over `T0`) under each hedge.

Decoding (`policy.fleet.actions.decode`): take the best valid action (caps at or above the
number of candidates are masked), rank candidates by that hedge's score, keep the best `cap`,
and water-fill the request exactly on the hedged waits (`policy.allocation.water_fill` with
thresholds wait + per-share overhead), then round to whole units by largest remainder.
Actions: {acts}.

## Training

- Command: `{meta.get("command", "?")}` (then copied here with `recruiter.pt` and this
  `recruiter.json`).
- Seed {meta.get("seed", "?")}, {meta.get("minutes", "?")} minutes wall clock (niced, on a shared
  2-core machine), {meta.get("episodes", "?")} simulated episodes of
  {meta.get("train_config", {}).get("requests_per_run", "?")} requests, N drawn from 1..64, load
  from {meta.get("train_config", {}).get("load_range", "?")}, staleness 0 or up to
  {meta.get("train_config", {}).get("stale_max_s", "?")} s.
- Method: fitted Q from a replay of simulated runs with epsilon-greedy exploration; target per
  request = {target} with cost = own make-span + delay imposed on the requests queued behind
  its shares (a later request split k ways counts 1/k per delayed share) + 0.5 x deadline if
  failed (gamma = 0, the externality term standing in for the bootstrap); the
  correction head is regressed on the waits the chosen shares actually met. See
  `policy/fleet/train.py`.
- ONNX export: `{meta.get("exporter", "?")}` exporter; torch/onnxruntime parity (max abs diff)
  by peer count: {json.dumps(parity)}.

## Evaluation

`{grid_command}`: simulator `policy.fleet.sim` (eval preset), 3 seeds per cell, identical seeded
traces for every method, {grid["cells"][0]["requests_per_run"]} requests per run (first 5% left out).
Average make-span in seconds per method; failure rates of learned and greedy; ratios of the
learned average make-span to the better of greedy / greedy-aware and to random.

{table}
Checks: `{json.dumps(grid.get("checks", {}))}`

{_misses(grid)}

{notes}

## Decision latency

onnxruntime {latency["onnxruntime"]}, provider `{latency["provider"]}`, one intra-op and one
inter-op thread, {latency["repeats"]} calls per size (machine shared and busy when measured):

| candidates | ONNX p50 us | ONNX p99 us | features p50 us |
|---|---|---|---|
{lat}
"""
    path.write_text(text)
