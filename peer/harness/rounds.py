"""Repeated rounds of a scenario: interleaved policy order, pooled figures, paired ratios.

On a shared machine the load moves while one policy's workload runs after another's, and one
run of each does not resolve a 5% difference (three runs of greedy on the same schedule gave
1.16-1.74 s). ``scenario run --rounds N`` runs every policy N times on the same schedule, the
order rotated each round (A B C, B C A, C A B) so that a drift of the machine's load does not
favour whichever policy runs first, and reports:

- per policy, the figures pooled over its rounds (every request of every round: mean, p50, p95,
  failures; utilisation averaged over rounds);
- per round, each policy's mean and p95;
- paired ratios of the first policy over each other one, round by round (both ran in the same
  round, minutes apart), with their median, min and max.

Pure functions over the per-round results of ``peer.harness.scenario_run._run_policy``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from peer.harness.records import request_figures

MAX_ROUNDS = 20

# what pooling carries over from a policy's last round (what the peers believed at its end)
_LAST_ROUND_KEYS = ("links", "convergence", "link_down_in_flight", "rss", "polls", "quotas")


def round_orders(policies: Sequence[str], rounds: int) -> list[list[str]]:
    """The policy order of each round: the list rotated by one place per round."""
    n = len(policies)
    return [[policies[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else []


def pool(per_round: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each policy's figures over all its rounds (``per_round[r][policy]`` is one run)."""
    names = list(dict.fromkeys(n for rnd in per_round for n in rnd))
    return {name: _pool_one([rnd[name] for rnd in per_round if name in rnd]) for name in names}


def _pool_one(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    failed_rounds = []
    for r, run in enumerate(runs):
        records += [{**rec, "round": r} for rec in run.get("records", [])]
        applied += [{**ev, "round": r} for ev in run.get("events_applied", [])]
        if "error" in run:
            failed_rounds.append(f"round {r}: {run['error']}")
    used = [run for run in runs if "utilisation" in run]
    peers = list(dict.fromkeys(p for run in used for p in run["utilisation"]))
    out: dict[str, Any] = {
        "rounds": len(runs),
        **request_figures(records),
        "utilisation": {
            p: round(statistics.fmean(run["utilisation"].get(p, 0.0) for run in used), 4)
            for p in peers
        },
        "replans": sum(run.get("replans", 0) for run in runs),
        "retried": sum(run.get("retried", 0) for run in runs),
        "lost": sum(run.get("lost", 0) for run in runs),
        "events_applied": applied,
        "records": records,
    }
    last = runs[-1] if runs else {}
    out.update({k: last[k] for k in _LAST_ROUND_KEYS if k in last})
    if failed_rounds:
        out["error"] = "; ".join(failed_rounds)
    return out


def round_table(
    orders: Sequence[Sequence[str]], per_round: Sequence[dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per round: the order the policies ran in and each one's mean, p95 and failures."""
    keys = ("makespan_mean_s", "makespan_p95_s", "ok", "requests", "failure_rate", "error")
    return [
        {
            "order": list(order),
            "policies": {n: {k: run[k] for k in keys if k in run} for n, run in rnd.items()},
        }
        for order, rnd in zip(orders, per_round, strict=True)
    ]


def paired(per_round: Sequence[dict[str, dict[str, Any]]], subject: str) -> dict[str, Any]:
    """``subject``'s mean and p95 over each other policy's, round by round, and their spread.

    A round where either run failed to start, or served nothing, gives no ratio (counted in
    ``rounds_without``)."""
    others = list(dict.fromkeys(n for rnd in per_round for n in rnd if n != subject))
    out: dict[str, Any] = {}
    for other in others:
        entry: dict[str, Any] = {}
        for key, label in (("makespan_mean_s", "mean"), ("makespan_p95_s", "p95")):
            ratios = []
            for rnd in per_round:
                a, b = rnd.get(subject, {}).get(key), rnd.get(other, {}).get(key)
                if a is not None and b:
                    ratios.append(round(a / b, 4))
            entry[label] = {
                "per_round": ratios,
                "median": round(statistics.median(ratios), 4) if ratios else None,
                "min": min(ratios, default=None),
                "max": max(ratios, default=None),
                "rounds_without": len(per_round) - len(ratios),
            }
        out[f"{subject}/{other}"] = entry
    return out


def report_lines(res: dict[str, Any]) -> list[str]:
    """The rounds section of ``report.md`` (empty for a single round)."""
    rounds = res.get("rounds")
    if not rounds:
        return []
    names = list(res["policies"])
    lines = [
        "",
        f"## Rounds ({len(rounds)}; order rotated each round; the table above pools them)",
        "",
        "| round | order | " + " | ".join(f"{n} mean / p95 s" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for i, rnd in enumerate(rounds):
        cells = []
        for n in names:
            p = rnd["policies"].get(n, {})
            cells.append(
                "failed"
                if "error" in p
                else f"{_f(p.get('makespan_mean_s'))} / {_f(p.get('makespan_p95_s'))}"
            )
        lines.append(f"| {i} | {' '.join(rnd['order'])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired ratios (same round): median [min, max] over rounds",
        "",
        "| ratio | mean | p95 |",
        "|---|---|---|",
    ]
    for pair, e in res.get("paired", {}).items():
        lines.append(f"| {pair} | {_spread(e['mean'])} | {_spread(e['p95'])} |")
    return lines


def _spread(e: dict[str, Any]) -> str:
    if e["median"] is None:
        return "–"
    return f"{e['median']:.3f} [{e['min']:.3f}, {e['max']:.3f}]"


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"
