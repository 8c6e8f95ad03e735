"""The shipped model's card: what goes in, what comes out, how it was trained and how it did.

Every figure comes from the arguments (training metadata, grid results, measured latency) or
from the code's own configuration objects; the writer holds none. Hand-written notes live in a
separate file beside the card (``<card>.notes.md``, e.g. ``policy/models/recruiter.notes.md``)
that regeneration reads and never overwrites.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policy.fleet.actions import ACTIONS, AGE_HEDGES, CAPS, N_ACTIONS, N_HEDGES, describe
from policy.fleet.features import FEATURE_NAMES
from policy.fleet.sim import SimConfig
from policy.fleet.train import PEER_CHOICES

# per-cell targets the card lists misses against: the fleet-policy issue's acceptance targets,
# the same ones `policy.fleet.evaluate` checks
TARGET_VS_BEST_GREEDY = 1.02
TARGET_VS_RANDOM = 0.80


def notes_path(card: Path) -> Path:
    """The hand-written notes file of ``card`` (kept across regenerations)."""
    return card.with_name(card.stem + ".notes.md")


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
        if lrn > TARGET_VS_BEST_GREEDY * b:
            best.append(f"{tag} ({lrn / b:.3f})")
        if lrn > TARGET_VS_RANDOM * m["random"]["avg_makespan"]:
            rand.append(f"{tag} ({lrn / m['random']['avg_makespan']:.3f})")
        if m["learned"]["failure_rate"] > m["greedy"]["failure_rate"]:
            fail.append(tag)
    g, r = TARGET_VS_BEST_GREEDY, TARGET_VS_RANDOM
    lines = [
        f"Per-cell targets missed (learned <= {g} x best greedy, <= {r} x random, failure rate"
        " <= greedy's; the fleet-policy issue's targets):",
        "",
    ]
    lines.append(f"- above {g} x best greedy: {', '.join(best) or 'none'}")
    lines.append(f"- above {r} x random: {', '.join(rand) or 'none'}")
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
    tc = meta.get("train_config", {})
    log_cost = bool(tc.get("log_cost", False))
    target = (
        "-log(cost / T0)" if log_cost else f"-cost / T0 (clipped at {tc.get('cost_clip', '?')})"
    )
    cell0 = grid["cells"][0]
    seeds = len(cell0.get("seeds", [])) or "?"
    warmup = SimConfig().warmup_frac
    peers = f"{min(PEER_CHOICES)} to {max(PEER_CHOICES)}"
    all_notes = notes_section(path, notes)
    latency_note = f" ({latency['note']})" if latency.get("note") else ""
    text = f"""# recruiter.onnx: fleet recruitment policy

Chooses which peers an origin recruits for one request and how many units each gets, for any
number of candidate peers ({peers} in training). Loaded by `policy.fleet.make_recruiter("learned")`
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
- Seed {meta.get("seed", "?")}, {meta.get("minutes", "?")} minutes wall-clock budget,
  {meta.get("episodes", "?")} simulated episodes of {tc.get("requests_per_run", "?")} requests,
  N drawn from {list(PEER_CHOICES)}, load from {tc.get("load_range", "?")}, staleness 0 or up
  to {tc.get("stale_max_s", "?")} s.
- Method: fitted Q from a replay of simulated runs with epsilon-greedy exploration; target per
  request = {target} with cost = own make-span + delay imposed on the requests queued behind
  its shares (a later request split k ways counts 1/k per delayed share) +
  {tc.get("fail_penalty", "?")} x deadline if failed (gamma = 0, the externality term standing in for the bootstrap); the
  correction head is regressed on the waits the chosen shares actually met. See
  `policy/fleet/train.py`.
- ONNX export: `{meta.get("exporter", "?")}` exporter; torch/onnxruntime parity (max abs diff)
  by peer count: {json.dumps(parity)}.

## Evaluation

`{grid_command}`: simulator `policy.fleet.sim` (eval preset), {seeds} seeds per cell, identical
seeded traces for every method, {cell0["requests_per_run"]} requests per run (first {warmup:.0%}
left out).
Average make-span in seconds per method; failure rates of learned and greedy; ratios of the
learned average make-span to the better of greedy / greedy-aware and to random.

{table}
Checks: `{json.dumps(grid.get("checks", {}))}`

{_misses(grid)}

{all_notes}
## Decision latency

onnxruntime {latency["onnxruntime"]}, provider `{latency["provider"]}`, one intra-op and one
inter-op thread, {latency["repeats"]} calls per size{latency_note}:

| candidates | ONNX p50 us | ONNX p99 us | features p50 us |
|---|---|---|---|
{lat}
"""
    path.write_text(text)


def notes_section(path: Path, notes: str = "") -> str:
    """The card's ``## Notes`` section: ``notes`` and the hand-written notes file, or ''."""
    hand = notes_path(path).read_text().strip() if notes_path(path).is_file() else ""
    all_notes = "\n\n".join(n for n in (notes.strip(), hand) if n)
    if not all_notes:
        return ""
    return (
        f"## Notes\n\nHand-written, from `{notes_path(path).name}` (kept when this card is "
        f"regenerated):\n\n{all_notes}\n"
    )


def put_notes(card: Path) -> bool:
    """Rewrite an existing card's ``## Notes`` section from its notes file (the rest kept).

    False when the card has no such section (regenerate it with ``policy grid --card``)."""
    text = card.read_text()
    head, sep, rest = text.partition("## Notes\n")
    if not sep:
        return False
    nxt = rest.find("\n## ")
    tail = rest[nxt + 1 :] if nxt >= 0 else ""
    card.write_text(head + notes_section(card) + ("\n" + tail if tail else ""))
    return True


SIM_REAL_BEGIN = "<!-- sim-vs-real: written by `amcoedge policy sim-real`; do not edit -->"
SIM_REAL_END = "<!-- /sim-vs-real -->"


def sim_real_section(compares: list[dict[str, Any]], command: str) -> str:
    """The card's sim-vs-real table from ``amcoedge scenario compare --json`` outputs."""
    lines = [
        SIM_REAL_BEGIN,
        "## Simulator vs real cluster",
        "",
        f"`{command}`: each scenario run for real (`amcoedge scenario run`) and replayed in the "
        "fleet simulator (`amcoedge scenario sim`), then set side by side "
        "(`amcoedge scenario compare`). Mean and p95 over the successful requests (as "
        "`scenario run` reports them); all-requests mean counts late (deadline-failed) "
        "requests at their wall time too.",
        "",
        "| scenario | policy | mean real / sim s | sim / real | p95 real / sim s "
        "| failure rate real / sim | all-requests mean real / sim s | peers per request real / sim |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def f(x: Any, d: int = 3) -> str:
        return "–" if x is None else f"{x:.{d}f}"

    for cmp in compares:
        for pol, row in cmp["policies"].items():
            m = row["makespan_mean_s"]
            rel = m["sim_over_real_minus_1"]
            al = row.get("all_requests_mean_s", {"real": None, "sim": None})
            fr = row["failure_rate"]
            ppr = row["mean_peers_per_request"]
            p95 = row["makespan_p95_s"]
            lines.append(
                f"| {cmp['scenario']}, {cmp.get('sim_model', 'sim')} (load "
                f"{cmp.get('real_load_average_1m')}) | {pol} | "
                f"{f(m['real'])} / {f(m['sim'])} | {'–' if rel is None else f'{1 + rel:.2f}'} | "
                f"{f(p95['real'])} / {f(p95['sim'])} | {f(fr['real'])} / {f(fr['sim'])} | "
                f"{f(al['real'])} / {f(al['sim'])} | {f(ppr['real'], 2)} / {f(ppr['sim'], 2)} |"
            )
    lines.append("")
    for cmp in compares:
        lines.append(
            f"- {cmp['scenario']} ({cmp.get('sim_model', 'sim')}): ranking real {' < '.join(cmp['real_ranking'])}, sim "
            f"{' < '.join(cmp['sim_ranking'])} ({'same' if cmp['same_ranking'] else 'different'}); "
            f"every mean within {cmp['tolerance']:.0%}: "
            f"{'yes' if cmp['all_means_within_tolerance'] else 'no'}; largest gap: "
            f"{cmp['largest_discrepancies'][0] if cmp['largest_discrepancies'] else '–'}"
        )
    lines += ["", SIM_REAL_END, ""]
    return "\n".join(lines)


def put_sim_real(card: Path, section: str) -> None:
    """Replace the card's sim-vs-real section (or append it); the rest is kept."""
    text = card.read_text() if card.is_file() else ""
    if SIM_REAL_BEGIN in text and SIM_REAL_END in text:
        head, rest = text.split(SIM_REAL_BEGIN, 1)
        _, tail = rest.split(SIM_REAL_END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text)
