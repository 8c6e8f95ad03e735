"""Run one method for a number of episodes on one seed; returns plain data (JSON-ready)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from policy.paper.config import SimError, SimParams
from policy.paper.env import PaperEnv, draw_densities
from policy.paper.learners import ADADQN, DRL, SMCO, DQNMethod
from policy.paper.methods import (
    AllServers,
    Greedy,
    LocalOnly,
    Method,
    Optimal,
    RandCoEdge,
    rules_for,
)
from policy.paper.plus import ABLATIONS, PlusMethod

__all__ = ["METHODS", "RunResult", "make_method", "run"]

METHODS: dict[str, Callable[[], Method]] = {
    "amcoedge": lambda: DQNMethod("amcoedge", ADADQN),
    "amcoedge+": PlusMethod,
    "drlcoedge": lambda: DQNMethod("drlcoedge", DRL),
    "smcoedge": lambda: DQNMethod("smcoedge", SMCO),
    "randcoedge": RandCoEdge,
    "optimal": Optimal,
    "local": LocalOnly,
    "all": AllServers,
    "greedy": Greedy,
}
LEARNED = ("amcoedge", "amcoedge+", "drlcoedge", "smcoedge")
PLUS_PREFIX = "amcoedge+/"  # "amcoedge+/<ablation>": amcoedge+ with one departure undone


def is_learned(name: str) -> bool:
    return name in LEARNED or name.startswith(PLUS_PREFIX)


def make_method(name: str) -> Method:
    if name.startswith(PLUS_PREFIX):
        variant = name[len(PLUS_PREFIX) :]
        if variant not in ABLATIONS:
            raise SimError(
                f"unknown amcoedge+ ablation {variant!r}; choose from {sorted(ABLATIONS)}"
            )
        return PlusMethod(ABLATIONS[variant], name)
    if name not in METHODS:
        raise SimError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]()


@dataclass
class RunResult:
    method: str
    episodes: int
    seed: int
    params: SimParams
    makespans: list[float] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)
    tasks: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time for the run (wall time on a busy machine lies)
    extra: dict[str, object] = field(default_factory=dict)
    method_obj: Method | None = None

    def tail(self) -> int:
        return min(50, len(self.makespans))

    @property
    def avg_makespan(self) -> float:
        k = self.tail()
        return float(np.mean(self.makespans[-k:])) if k else float("nan")

    @property
    def failure_rate(self) -> float:
        k = self.tail()
        return float(np.mean(self.failures[-k:])) if k else float("nan")

    def to_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "episodes": self.episodes,
            "seed": self.seed,
            "params": self.params.as_dict(),
            "avg_makespan": self.avg_makespan,
            "failure_rate": self.failure_rate,
            "averaged_episodes": self.tail(),
            "per_episode": [
                {"makespan": m, "failure_rate": f}
                for m, f in zip(self.makespans, self.failures, strict=True)
            ],
            "tasks": self.tasks,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "decisions_per_s": self.tasks / self.wall_s if self.wall_s > 0 else 0.0,
            **self.extra,
        }


def run(
    method: str,
    params: SimParams,
    episodes: int,
    seed: int,
    progress: Callable[[int, float, float], None] | None = None,
) -> RunResult:
    """Run ``method`` for ``episodes`` episodes. Same (method, params, episodes, seed) → same result."""
    if episodes < 1:
        raise SimError(f"episodes must be >= 1, got {episodes}")
    m = make_method(method)
    rng = np.random.default_rng(seed)
    rho = draw_densities(params, rng)  # re-drawn per seed, fixed across episodes
    env = PaperEnv(params, rules_for(method, params), rho)
    torch.manual_seed(seed)
    m.bind(env, rng)
    res = RunResult(method, episodes, seed, params, method_obj=m)
    t0 = time.perf_counter()
    c0 = time.process_time()
    T, B = env.T, env.B
    for ep in range(episodes):
        env.reset(env.draw_arrivals(rng))
        m.begin_episode(ep)
        D = env.D
        for t in range(T - 1):
            m.plan_slot(t)
            Dt = D[t]
            for b in range(B):
                row = Dt[b]
                for n in np.flatnonzero(row).tolist():
                    size = float(row[n])
                    ms, failed = env.offload(b, n, m.decide(t, b, n, size), size)
                    m.feedback(b, n, ms, failed)
            env.end_slot(t)
            m.end_slot(t)
        st = env.stats()
        res.makespans.append(st.makespan)
        res.failures.append(st.failure_rate)
        res.tasks += st.tasks
        if progress is not None:
            progress(ep, st.makespan, st.failure_rate)
    res.wall_s = time.perf_counter() - t0
    res.cpu_s = time.process_time() - c0
    res.extra = {"rules": env.rules.__dict__ | {"notes": list(env.rules.notes)}, **m.summary()}
    return res
