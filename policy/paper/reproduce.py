"""Reproduce the paper's simulation study: defaults plus the four sweeps of §4.2, all methods.

Each (parameter point, method, seed) is one independent run trained from scratch; points shared
by several sweeps (the defaults) run once. Runs go to worker processes (``jobs``); each finished
run is written at once to ``runs/<id>.json`` and a rerun skips those, so an interrupted
reproduction resumes. ``results.json`` holds every run, the summary (claims per learned method
with their per-seed spread) and an estimate of the full plan's wall time from the measured run
times; ``report.md`` (written by ``policy.paper.report``, which holds no figures) and the PNG
figures come from it and from the ``sim analyse`` files found in the analyses folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from policy.paper.config import DEFAULT, SimParams, capacities_up_to
from policy.paper.learners import ADADQN, LEARN_EVERY, LEARN_START
from policy.paper.runner import METHODS, is_learned, run

__all__ = ["Plan", "full_plan", "plan_work", "quick_plan", "render", "reproduce"]

BASELINES = ("smcoedge", "drlcoedge", "randcoedge")
CLAIM_METHODS = ("amcoedge", "amcoedge+")
FAILURE_THRESHOLD = 1e-3  # a failure-rate reduction is only measured where baselines fail more
FULL_SEEDS = 3  # seeds of the full reproduction (the plan), used by the estimate
TAIL = 50  # a run's figure is the mean of its last min(TAIL, episodes) episodes


@dataclass(frozen=True)
class Plan:
    sweeps: dict[str, tuple[float, ...]]
    methods: tuple[str, ...]
    learned_episodes: int
    other_episodes: int
    seeds: tuple[int, ...]
    quick: bool


def full_plan(seeds: int) -> Plan:
    return Plan(
        sweeps={
            "deadline": tuple(round(0.1 * i, 1) for i in range(1, 11)),
            "arrival_prob": tuple(round(0.1 * i, 1) for i in range(1, 11)),
            "tasks": tuple(float(10 * i) for i in range(1, 11)),
            "fmax": tuple(float(v) for v in range(20, 100, 10)),
        },
        methods=tuple(METHODS),
        learned_episodes=500,
        other_episodes=50,
        seeds=tuple(range(seeds)),
        quick=False,
    )


def quick_plan(seeds: int) -> Plan:
    return Plan(
        sweeps={  # one hard point per sweep beside the defaults
            "deadline": (0.3, 1.0),
            "arrival_prob": (0.3, 0.7),
            "tasks": (50.0, 80.0),
            "fmax": (30.0, 50.0),
        },
        methods=tuple(METHODS),
        learned_episodes=200,
        other_episodes=10,
        seeds=tuple(range(seeds)),
        quick=True,
    )


def point_params(sweep: str, value: float, base: SimParams = DEFAULT) -> SimParams:
    if sweep == "deadline":
        return base.with_(deadline=float(value))
    if sweep == "arrival_prob":
        return base.with_(arrival_prob=float(value))
    if sweep == "tasks":
        return base.with_(tasks=int(value))
    if sweep == "fmax":
        return base.with_(capacities=capacities_up_to(float(value)))
    raise ValueError(f"unknown sweep {sweep!r}")


def _key(p: SimParams) -> str:
    return json.dumps(p.as_dict(), sort_keys=True)


def run_id(method: str, params: SimParams, episodes: int, seed: int) -> str:
    """Stable file name of one run's result (resume key)."""
    text = json.dumps([method, params.as_dict(), episodes, seed], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _job(args: tuple[str, SimParams, int, int]) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    method, params, episodes, seed = args
    r = run(method, params, episodes, seed)
    assert r.tail() == min(TAIL, episodes)
    return {
        "method": method,
        "params": params.as_dict(),
        "episodes": episodes,
        "seed": seed,
        "avg_makespan": r.avg_makespan,
        "failure_rate": r.failure_rate,
        "curve": [round(v, 6) for v in r.makespans],
        "fail_curve": [round(v, 6) for v in r.failures],
        "tasks": r.tasks,
        "wall_s": r.wall_s,
        "cpu_s": r.cpu_s,
    }


def _stop_workers(ex: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now: a plain shutdown would wait for every queued run."""
    procs = getattr(ex, "_processes", None) or {}
    for proc in list(procs.values()):
        proc.terminate()
    ex.shutdown(wait=True, cancel_futures=True)


def _run_pool(
    work: list[tuple[str, SimParams, int, int]],
    jobs: int,
    on_done: Callable[[int, int], None] | None,
    on_row: Callable[[dict[str, object]], None] | None = None,
) -> list[dict[str, object]]:
    """Run ``work`` on ``jobs`` worker processes. Ctrl-C or SIGTERM stops the workers too."""
    rows: list[dict[str, object]] = []
    main = threading.current_thread() is threading.main_thread()
    prev = signal.getsignal(signal.SIGTERM) if main else None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if main:
        signal.signal(signal.SIGTERM, on_term)
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
    try:
        futs = [ex.submit(_job, w) for w in work]
        for i, f in enumerate(as_completed(futs)):
            rows.append(f.result())
            if on_row:
                on_row(rows[-1])
            if on_done:
                on_done(i + 1, len(work))
    except BaseException:
        _stop_workers(ex)
        raise
    finally:
        if main and prev is not None:
            signal.signal(signal.SIGTERM, prev)
    ex.shutdown()
    return rows


def plan_work(
    plan: Plan, base: SimParams = DEFAULT
) -> tuple[list[tuple[str, SimParams, int, int]], dict[str, list[tuple[float, str]]]]:
    """Every (method, params, episodes, seed) of the plan, and each sweep's point keys."""
    points: dict[str, SimParams] = {_key(base): base}
    index: dict[str, list[tuple[float, str]]] = {}
    for sweep, values in plan.sweeps.items():
        index[sweep] = []
        for v in values:
            p = point_params(sweep, v, base)
            points.setdefault(_key(p), p)
            index[sweep].append((v, _key(p)))
    work: list[tuple[str, SimParams, int, int]] = []
    for p in points.values():
        for m in plan.methods:
            eps = plan.learned_episodes if is_learned(m) else plan.other_episodes
            for s in plan.seeds:
                work.append((m, p, eps, s))
    # longest first: learned methods at heavy points
    work.sort(key=lambda w: -(w[2] * w[1].tasks * w[1].arrival_prob))
    return work, index


def _load_done(runs_dir: Path) -> dict[str, dict[str, object]]:
    done: dict[str, dict[str, object]] = {}
    for f in sorted(runs_dir.glob("*.json")):
        try:
            done[f.stem] = json.loads(f.read_text())
        except (OSError, ValueError):
            f.unlink(missing_ok=True)  # a run cut off mid-write is run again
    return done


def reproduce(
    out: Path,
    plan: Plan,
    jobs: int,
    base: SimParams = DEFAULT,
    on_done: Callable[[int, int], None] | None = None,
    analyses_dir: Path | None = None,
) -> dict[str, object]:
    """Run the plan into ``out``; finished runs (``out/runs/*.json``) are kept and skipped."""
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    runs_dir.mkdir(exist_ok=True)
    work, index = plan_work(plan, base)
    ids = [run_id(*w) for w in work]
    done = _load_done(runs_dir)
    todo = [w for w, i in zip(work, ids, strict=True) if i not in done]
    resumed = len(work) - len(todo)

    def save(row: dict[str, object]) -> None:
        params = SimParams(**_params_kwargs(row["params"]))  # type: ignore[arg-type]
        rid = run_id(str(row["method"]), params, int(row["episodes"]), int(row["seed"]))  # type: ignore[call-overload]
        tmp = runs_dir / f"{rid}.json.tmp"
        tmp.write_text(json.dumps(row))
        os.replace(tmp, runs_dir / f"{rid}.json")
        done[rid] = row

    t0 = time.perf_counter()
    if jobs <= 1:
        for i, w in enumerate(todo):
            save(_job(w))
            if on_done:
                on_done(i + 1, len(todo))
    elif todo:
        _run_pool(todo, jobs, on_done, on_row=save)
    wall = time.perf_counter() - t0
    rows = [done[i] for i in ids]
    results = assemble(plan, base, rows, index, wall, jobs, resumed)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _write_outputs(out, results, analyses_dir)
    return results


def _params_kwargs(d: dict[str, object]) -> dict[str, object]:
    k = dict(d)
    k["capacities"] = tuple(k["capacities"])  # type: ignore[arg-type]
    k["rates"] = tuple(k["rates"])  # type: ignore[arg-type]
    k["size_min"], k["size_max"] = k.pop("size_mbit")  # type: ignore[misc]
    k["density_min"], k["density_max"] = k.pop("density_cycles_per_bit")  # type: ignore[misc]
    return k


def assemble(
    plan: Plan,
    base: SimParams,
    rows: list[dict[str, object]],
    index: dict[str, list[tuple[float, str]]],
    wall: float,
    jobs: int,
    resumed: int,
) -> dict[str, object]:
    by_point: dict[str, dict[str, list[dict[str, object]]]] = {}
    for r in rows:
        k = json.dumps(r["params"], sort_keys=True)
        by_point.setdefault(k, {}).setdefault(str(r["method"]), []).append(r)
    return {
        "plan": {
            "sweeps": {k: list(v) for k, v in plan.sweeps.items()},
            "methods": list(plan.methods),
            "learned_episodes": plan.learned_episodes,
            "other_episodes": plan.other_episodes,
            "seeds": list(plan.seeds),
            "quick": plan.quick,
            "jobs": jobs,
        },
        "base": base.as_dict(),
        "wall_s": wall,
        "resumed": resumed,
        "cpu_count": os.cpu_count(),
        "learn": {"faithful_greedy_episode": faithful_greedy_episode(base)},
        "tail": {
            "learned": min(TAIL, plan.learned_episodes),
            "other": min(TAIL, plan.other_episodes),
        },
        "estimate": estimate_full(rows, full_plan(FULL_SEEDS), jobs, base),
        "summary": summarise(index, by_point, _key(base)),
        "runs": rows,
    }


def faithful_greedy_episode(params: SimParams = DEFAULT) -> float:
    """Episode in which the faithful AdaDQN's greedy probability reaches its maximum."""
    calls = ADADQN.eps_max / ADADQN.eps_increment
    slots = LEARN_START + calls * LEARN_EVERY
    return slots / (params.slots - 1)


def _cost_units(method: str, params: SimParams, episodes: int) -> float:
    return episodes * params.tasks * params.arrival_prob


def estimate_full(
    rows: list[dict[str, object]], plan: Plan, jobs: int, base: SimParams = DEFAULT
) -> dict[str, object] | None:
    """Wall time of ``plan`` from measured runs: CPU seconds (wall seconds for runs that did
    not record CPU time) per (episode × expected task) per method, summed over the plan and
    divided by the worker count (perfect packing, one core per worker)."""
    per: dict[str, list[float]] = {}
    basis = set()
    for r in rows:
        p = SimParams(**_params_kwargs(r["params"]))  # type: ignore[arg-type]
        units = _cost_units(str(r["method"]), p, int(r["episodes"]))  # type: ignore[call-overload]
        key = "cpu_s" if float(r.get("cpu_s", 0.0)) > 0 else "wall_s"  # type: ignore[arg-type]
        if units > 0 and float(r[key]) > 0:  # type: ignore[arg-type]
            per.setdefault(str(r["method"]), []).append(float(r[key]) / units)  # type: ignore[arg-type]
            basis.add(key)
    work, _ = plan_work(plan, base)
    if not per or any(w[0] not in per for w in work):
        return None
    rate = {m: float(np.mean(v)) for m, v in per.items()}
    cpu = sum(rate[m] * _cost_units(m, p, e) for m, p, e, _ in work)
    return {
        "runs": len(work),
        "jobs": jobs,
        "cpu_s": cpu,
        "wall_s": cpu / max(1, jobs),
        "basis": sorted(basis),
    }


def _write_outputs(out: Path, results: dict[str, object], analyses_dir: Path | None) -> None:
    from policy.paper.figures import draw_figures
    from policy.paper.report import write_report

    runs = results["runs"]
    assert isinstance(runs, list)
    base = json.dumps(results["base"], sort_keys=True)
    default_runs: dict[str, list[dict[str, object]]] = {}
    for r in runs:
        if json.dumps(r["params"], sort_keys=True) == base:
            default_runs.setdefault(str(r["method"]), []).append(r)
    plan = results["plan"]
    assert isinstance(plan, dict)
    figures = draw_figures(out, plan["methods"], results["summary"], default_runs) if runs else []  # type: ignore[arg-type]
    analyses = load_analyses(analyses_dir) if analyses_dir else {}
    (out / "report.md").write_text(write_report(results, analyses, figures))


def load_analyses(folder: Path) -> dict[str, dict[str, object]]:
    """The ``sim analyse`` outputs present in ``folder`` (name.json), by analysis name."""
    from policy.paper.report import ANALYSES

    found: dict[str, dict[str, object]] = {}
    for name in ANALYSES:
        f = folder / f"{name}.json"
        if f.is_file():
            found[name] = json.loads(f.read_text())
    return found


def render(out: Path, analyses_dir: Path | None = None) -> dict[str, object]:
    """Redraw the figures and report.md of ``out`` from its results.json (no simulation)."""
    results = json.loads((out / "results.json").read_text())
    _write_outputs(out, results, analyses_dir)
    return dict(results)


def _mean(xs: Iterable[float]) -> float:
    v = list(xs)
    return float(np.mean(v)) if v else float("nan")


def summarise(
    index: dict[str, list[tuple[float, str]]],
    by_point: dict[str, dict[str, list[dict[str, object]]]],
    default_key: str,
) -> dict[str, object]:
    def cell(key: str) -> dict[str, dict[str, object]]:
        c: dict[str, dict[str, object]] = {}
        for m, runs in by_point.get(key, {}).items():
            ms = [float(r["avg_makespan"]) for r in runs]  # type: ignore[arg-type]
            c[m] = {
                "makespan": _mean(ms),
                "failure_rate": _mean(float(r["failure_rate"]) for r in runs),  # type: ignore[arg-type]
                "makespan_sd": float(np.std(ms)),
                "per_seed": {int(r["seed"]): float(r["avg_makespan"]) for r in runs},  # type: ignore[call-overload, arg-type]
                "per_seed_failure": {int(r["seed"]): float(r["failure_rate"]) for r in runs},  # type: ignore[call-overload, arg-type]
            }
        opt = c.get("optimal")
        if opt:
            for v in c.values():
                ps, po = v["per_seed"], opt["per_seed"]
                assert isinstance(ps, dict) and isinstance(po, dict)
                v["ratio_to_optimal"] = [ps[s] / po[s] for s in sorted(ps) if s in po]
        return c

    sweeps: dict[str, list[dict[str, object]]] = {}
    gains: list[dict[str, object]] = []
    for sweep, pts in index.items():
        sweeps[sweep] = []
        for v, k in pts:
            c = cell(k)
            sweeps[sweep].append({"value": v, "methods": c})
            for m in CLAIM_METHODS:
                g = _gain(c, m)
                if g is not None:
                    gains.append({"sweep": sweep, "value": v, **g})
    claims = {m: _claim(m, [g for g in gains if g["method"] == m]) for m in CLAIM_METHODS}
    return {
        "failure_threshold": FAILURE_THRESHOLD,
        "default": cell(default_key),
        "sweeps": sweeps,
        "gains": gains,
        "claims": {m: c for m, c in claims.items() if c is not None},
    }


def _gain(c: dict[str, dict[str, object]], method: str) -> dict[str, object] | None:
    if method not in c:
        return None
    base = [m for m in BASELINES if m in c]
    if not base:
        return None
    best_ms = min(base, key=lambda m: float(c[m]["makespan"]))  # type: ignore[arg-type]
    best_fr = min(base, key=lambda m: float(c[m]["failure_rate"]))  # type: ignore[arg-type]
    a = c[method]
    am, bm = a["per_seed"], c[best_ms]["per_seed"]
    af, bf = a["per_seed_failure"], c[best_fr]["per_seed_failure"]
    assert isinstance(am, dict) and isinstance(bm, dict)
    assert isinstance(af, dict) and isinstance(bf, dict)
    fr_base = float(c[best_fr]["failure_rate"])  # type: ignore[arg-type]
    qualifies = fr_base > FAILURE_THRESHOLD
    return {
        "method": method,
        "best_makespan_baseline": best_ms,
        "makespan_gain": 1.0 - float(a["makespan"]) / float(c[best_ms]["makespan"]),  # type: ignore[arg-type]
        "makespan_gain_per_seed": {s: 1.0 - am[s] / bm[s] for s in am if s in bm},
        "best_failure_baseline": best_fr,
        "failure_gain": 1.0 - float(a["failure_rate"]) / fr_base if qualifies else None,  # type: ignore[arg-type]
        "failure_gain_per_seed": {
            s: 1.0 - af[s] / bf[s] for s in af if s in bf and bf[s] > FAILURE_THRESHOLD
        }
        if qualifies
        else {},
        "baseline_failure": fr_base,
        "method_failure": a["failure_rate"],
    }


def _claim(method: str, gains: list[dict[str, Any]]) -> dict[str, object] | None:
    if not gains:
        return None
    worst = min(gains, key=lambda g: float(g["makespan_gain"]))
    seeds = sorted({s for g in gains for s in g["makespan_gain_per_seed"]})
    ms_seed = [
        min(
            float(g["makespan_gain_per_seed"][s]) for g in gains if s in g["makespan_gain_per_seed"]
        )
        for s in seeds
    ]
    fr = [g for g in gains if g["failure_gain"] is not None]
    fr_seed = []
    for s in seeds:
        vals = [float(g["failure_gain_per_seed"][s]) for g in fr if s in g["failure_gain_per_seed"]]
        if vals:
            fr_seed.append(max(vals))
    return {
        "makespan": {
            "value": float(worst["makespan_gain"]),
            "at": {
                "sweep": worst["sweep"],
                "value": worst["value"],
                "baseline": worst["best_makespan_baseline"],
            },
            "per_seed": ms_seed,
        },
        "failure": {
            "points": len(fr),
            "value": max((float(g["failure_gain"]) for g in fr), default=None),
            "min": min((float(g["failure_gain"]) for g in fr), default=None),
            "per_seed": fr_seed,
        },
    }
