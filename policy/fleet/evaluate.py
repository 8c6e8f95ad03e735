"""Compare recruiters on identical seeded traces: one cell, or the whole grid."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from policy.fleet.heuristics import Choice
from policy.fleet.recruiters import RECRUITERS, HeuristicRecruiter, Recruiter, load_learned
from policy.fleet.sim import RequestCtx, RunResult, SimConfig, make_trace, run

GRID_PEERS: tuple[int, ...] = (8, 16, 32)
GRID_LOADS: tuple[float, ...] = (0.3, 0.6, 0.85)
GRID_STALENESS: tuple[float, ...] = (0.0, 0.5, 2.0)
METRICS = ("avg_makespan", "p95_makespan", "failure_rate", "decision_us_p50", "decision_us_p99")


def _recruiter(name: str, seed: int, model_path: str | Path | None) -> Recruiter:
    if name == "learned":
        return load_learned(model_path, seed)
    return HeuristicRecruiter(name, seed)


def _merge(results: list[RunResult]) -> dict[str, float]:
    ms = np.concatenate([r.makespan for r in results])
    fl = np.concatenate([r.failed for r in results])
    us = np.concatenate([r.decision_us for r in results])
    sh = np.concatenate([r.n_shares for r in results])
    return {
        # mean over seeds of each seed's average equals the pooled mean (equal request counts)
        "avg_makespan": float(np.mean(ms)),
        "p95_makespan": float(np.percentile(ms, 95)),
        "failure_rate": float(np.mean(fl)),
        "decision_us_p50": float(np.percentile(us, 50)),
        "decision_us_p99": float(np.percentile(us, 99)),
        "avg_shares": float(np.mean(sh)),
        "requests": int(ms.shape[0]),
    }


def evaluate_cell(
    n_peers: int,
    load: float,
    staleness_s: float,
    seeds: Iterable[int] = (0, 1, 2),
    methods: Sequence[str] = RECRUITERS,
    base: SimConfig | None = None,
    model_path: str | Path | None = None,
) -> dict[str, Any]:
    """All ``methods`` on the same seeded traces of one (N, load, staleness) cell."""
    for m in methods:
        if m not in RECRUITERS:
            raise ValueError(f"unknown method {m!r}; known: {', '.join(RECRUITERS)}")
    cfg = replace(base or SimConfig(), n_peers=n_peers, load=load, staleness_s=staleness_s)
    per: dict[str, list[RunResult]] = {m: [] for m in methods}
    seeds = list(seeds)
    for seed in seeds:
        trace = make_trace(cfg, seed)
        for m in methods:
            rec = _recruiter(m, seed, model_path)

            def recruit(ctx: RequestCtx, rng: np.random.Generator, rec: Recruiter = rec) -> Choice:
                return rec.choose(ctx.arr, ctx.units, ctx.deadline_s)

            per[m].append(run(trace, recruit, seed=seed))
    out: dict[str, Any] = {
        "peers": n_peers,
        "load": load,
        "staleness_s": staleness_s,
        "seeds": seeds,
        "requests_per_run": cfg.n_requests,
        "methods": {m: _merge(per[m]) for m in methods},
    }
    if "learned" in methods:
        out["provider"] = load_learned(model_path).provider
    return out


def evaluate_grid(
    peers: Sequence[int] = GRID_PEERS,
    loads: Sequence[float] = GRID_LOADS,
    staleness: Sequence[float] = GRID_STALENESS,
    seeds: Iterable[int] = (0, 1, 2),
    methods: Sequence[str] = RECRUITERS,
    base: SimConfig | None = None,
    model_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    seeds = list(seeds)
    cells = []
    combos = list(itertools.product(peers, loads, staleness))
    for n, rho, s in tqdm(combos, desc="grid", disable=not progress):
        cells.append(evaluate_cell(n, rho, s, seeds, methods, base, model_path))
    return {"cells": cells, "checks": check_grid(cells) if "learned" in methods else {}}


def _ratio(cell: dict[str, Any], a: str, b: str) -> float:
    m = cell["methods"]
    return float(m[a]["avg_makespan"] / m[b]["avg_makespan"])


def check_grid(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The acceptance checks: learned against the greedy family and random, per cell and on average."""
    need = {"learned", "greedy", "greedy-aware", "random"}
    if not cells or not need <= set(cells[0]["methods"]):
        return {}
    per_cell_best = []
    per_cell_random = []
    fail_ok = []
    stale_g, stale_ga = [], []
    for c in cells:
        m = c["methods"]
        best = min(m["greedy"]["avg_makespan"], m["greedy-aware"]["avg_makespan"])
        per_cell_best.append(m["learned"]["avg_makespan"] / best)
        per_cell_random.append(_ratio(c, "learned", "random"))
        fail_ok.append(m["learned"]["failure_rate"] <= m["greedy"]["failure_rate"])
        if c["staleness_s"] >= 0.5:
            stale_g.append(_ratio(c, "learned", "greedy"))
            stale_ga.append(_ratio(c, "learned", "greedy-aware"))
    out: dict[str, Any] = {
        "max_ratio_vs_best_greedy": max(per_cell_best),
        "max_ratio_vs_random": max(per_cell_random),
        "failure_never_above_greedy": all(fail_ok),
        "cells_failure_above_greedy": int(len(fail_ok) - sum(fail_ok)),
    }
    if stale_g:
        out["stale_mean_ratio_vs_greedy"] = float(np.mean(stale_g))
        out["stale_mean_ratio_vs_greedy_aware"] = float(np.mean(stale_ga))
    out["pass"] = bool(
        out["max_ratio_vs_best_greedy"] <= 1.02
        and out["max_ratio_vs_random"] <= 0.80
        and out["failure_never_above_greedy"]
        and out.get("stale_mean_ratio_vs_greedy", 0.0) <= 0.90
        and out.get("stale_mean_ratio_vs_greedy_aware", 0.0) <= 0.97
    )
    return out


def markdown_table(grid: dict[str, Any]) -> str:
    """The grid as a Markdown table: avg make-span (s) per method, failure rates, ratios."""
    cells = grid["cells"]
    methods = list(cells[0]["methods"])
    head = (
        "| N | load | stale s | "
        + " | ".join(methods)
        + " | fail learned / greedy | learned / best greedy | learned / random |"
    )
    sep = "|" + "---|" * (3 + len(methods) + 3)
    lines = [head, sep]
    for c in cells:
        m = c["methods"]
        vals = " | ".join(f"{m[k]['avg_makespan']:.3f}" for k in methods)
        extra = " | | |"
        if "learned" in m and "greedy" in m and "greedy-aware" in m and "random" in m:
            best = min(m["greedy"]["avg_makespan"], m["greedy-aware"]["avg_makespan"])
            extra = (
                f" | {m['learned']['failure_rate']:.3f} / {m['greedy']['failure_rate']:.3f}"
                f" | {m['learned']['avg_makespan'] / best:.3f}"
                f" | {m['learned']['avg_makespan'] / m['random']['avg_makespan']:.3f} |"
            )
        lines.append(f"| {c['peers']} | {c['load']} | {c['staleness_s']} | {vals}{extra}")
    return "\n".join(lines) + "\n"
