"""How much better than greedy any decision of the recruiter's action space can do on a replay.

``amcoedge scenario sim FILE --headroom`` replays, besides the file's policies, every fixed
action of the learned recruiter's action space (:mod:`policy.fleet.actions`: keep the ``cap``
candidates with the best solo finish under an age hedge, or all of them; water-fill over them)
that does not need the network: the same action for every request. The learned recruiter
chooses among these per request, so the best fixed action is not an upper bound on it, but a
replay where no fixed action beats greedy by much says where a target like "5% below greedy"
has little room: the decisions it would take are (almost) greedy's.

As ``peer.harness.scenario_sim.runtime_recruit`` does for ``onnx``, the action picks the peers
and the planner then water-fills the request over them on the unhedged waits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np

from policy.fleet.actions import ACTIONS, AGE_HEDGES, LEARNED, N_HEDGES, decode, describe
from policy.fleet.allocate import split_units
from policy.fleet.features import request_scale

PREFIX = "fixed "


def fixed_recruit(action: int) -> Callable[..., Any]:
    """The simulator's recruit function for one fixed (cap, hedge) action."""
    h = ACTIONS[action][1]
    if h == LEARNED:
        raise ValueError("the learned hedge needs the network")

    def recruit(ctx: Any, rng: np.random.Generator) -> Any:
        arr, units = ctx.arr, ctx.units
        solo = arr.wait + arr.own + AGE_HEDGES[h] * arr.age + arr.fixed + units * arr.per_unit
        score = np.zeros((len(arr), N_HEDGES), dtype=np.float32)
        score[:, h] = -solo / request_scale(arr, units)
        pos, _, _ = decode(arr, units, action, score)
        wait = arr.wait + arr.own
        sub, counts, span = split_units(wait[pos], arr.fixed[pos], arr.per_unit[pos], units)
        return pos[sub], counts, span

    return recruit


def fixed_actions(peers: int) -> dict[str, Callable[[int], Callable[..., Any]]]:
    """Every fixed action for a cluster of ``peers`` (caps at or above it are 'all'), by name."""
    return {
        PREFIX + describe(a): partial(_per_seed, a)
        for a, (cap, h) in enumerate(ACTIONS)
        if h != LEARNED and cap < peers
    }


def _per_seed(action: int, seed: int) -> Callable[..., Any]:
    return fixed_recruit(action)  # deterministic: the seed changes nothing


def summary(policies: Mapping[str, Any]) -> dict[str, Any]:
    """Each fixed action's mean and p95, the best one's, and ratios to greedy and onnx."""

    def fig(run: Mapping[str, Any], key: str) -> float:
        v = run.get(key)
        return math.inf if v is None else float(v)

    fixed = {n: r for n, r in policies.items() if n.startswith(PREFIX)}
    table = {
        n[len(PREFIX) :]: {
            "makespan_mean_s": r.get("makespan_mean_s"),
            "makespan_p95_s": r.get("makespan_p95_s"),
            "failure_rate": r.get("failure_rate"),
        }
        for n, r in fixed.items()
    }
    out: dict[str, Any] = {"actions": table}
    if not fixed:
        return out
    best = min(fixed, key=lambda n: (fig(fixed[n], "makespan_mean_s"), n))
    b = fixed[best]
    out["best"] = {"action": best[len(PREFIX) :], **table[best[len(PREFIX) :]]}
    for ref in ("greedy", "onnx"):
        r = policies.get(ref)
        if r is None or not r.get("makespan_mean_s") or b.get("makespan_mean_s") is None:
            continue
        out[f"best_over_{ref}"] = {
            "mean": round(b["makespan_mean_s"] / r["makespan_mean_s"], 4),
            "p95": round(b["makespan_p95_s"] / r["makespan_p95_s"], 4)
            if r.get("makespan_p95_s") and b.get("makespan_p95_s") is not None
            else None,
        }
    return out


def report_lines(headroom: Mapping[str, Any] | None) -> list[str]:
    """The headroom section of the sim's ``report.md``."""
    if not headroom or "best" not in headroom:
        return []
    best = headroom["best"]
    lines = [
        "",
        "## Headroom: every fixed action of the recruiter's action space",
        "",
        "| action | mean s | p95 s | failure rate |",
        "|---|---|---|---|",
    ]
    for name, r in sorted(
        headroom["actions"].items(),
        key=lambda kv: (kv[1]["makespan_mean_s"] is None, kv[1]["makespan_mean_s"] or 0.0),
    ):
        lines.append(
            f"| {name} | {_f(r['makespan_mean_s'])} | {_f(r['makespan_p95_s'])} | "
            f"{_f(r['failure_rate'])} |"
        )
    lines += ["", f"Best fixed action: {best['action']} ({_f(best['makespan_mean_s'])} s mean)."]
    for ref in ("greedy", "onnx"):
        r = headroom.get(f"best_over_{ref}")
        if r:
            lines.append(f"Best over {ref}: mean {r['mean']:.3f}, p95 {_f(r['p95'])}.")
    return lines


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"
