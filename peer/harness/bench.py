"""Planner decision latency: gossip view snapshot -> plan, for several peer counts.

Wall-clock percentiles include any time the OS scheduler took the core away (on a shared
machine that dominates p99); ``cpu_*`` percentiles are this thread's CPU time per decision.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from peer.core.costs import CostTracker
from peer.core.planner import Planner, Work
from peer.core.recruit import Recruiters
from peer.core.viewstate import states_from_view


def synthetic_view(n: int, seed: int = 0) -> Any:
    """A gossip ``View`` of ``n`` alive peers with random capacity, backlog and age."""
    from gossip import PeerMeta, PeerView, View

    rng = random.Random(seed)
    peers = {}
    for i in range(n):
        name = f"p{i}"
        meta = PeerMeta(
            name=name,
            gossip_addr=("127.0.0.1", 7000 + i),
            rpc_addr=("127.0.0.1", 7000 + i),
            http_addr=("127.0.0.1", 8000 + i),
            model_id="digits16",
            capacity=rng.uniform(150.0, 800.0),
            queued_s=rng.uniform(0.0, 0.5) if i else 0.0,
            active_shares=rng.randint(0, 3),
        )
        peers[name] = PeerView(
            name=name,
            status="alive",
            incarnation=0,
            meta=meta,
            meta_age_s=rng.uniform(0.0, 1.0),
            bandwidth={f"p{j}": rng.uniform(2e7, 1e8) for j in range(n) if j != i},
        )
    return View.build("p0", peers, 0.0)


def planner_latency(sizes: list[int], iters: int = 2000, policy: str = "onnx") -> dict[str, Any]:
    from policy.fleet import DispatchLedger

    out: dict[str, Any] = {"policy": policy, "iters": iters, "unit": "ms", "by_peers": {}}
    recruiters = Recruiters(seed=0)
    planner = Planner(recruiters)
    cost = CostTracker(0.0035, 0.0008)
    for n in sizes:
        view = synthetic_view(n, seed=n)
        ledger = DispatchLedger()
        work = Work(kind="generate", units=8, steps=20, bytes_per_unit=256)
        lat: list[float] = []
        cpu: list[float] = []
        plan = None
        for k in range(iters + 50):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            states = states_from_view(
                view,
                me="p0",
                my_addr=("127.0.0.1", 7000),
                my_wait_s=0.0,
                cost=cost,
                ledger=ledger,
                now=float(k),
                model_id="digits16",
            )
            plan = planner.plan(states, work, mode="batch", policy=policy)
            dt = time.perf_counter() - t0
            dc = time.thread_time() - c0
            if k >= 50:
                lat.append(dt * 1e3)
                cpu.append(dc * 1e3)
        arr = np.asarray(lat)
        carr = np.asarray(cpu)
        assert plan is not None
        out["by_peers"][str(n)] = {
            "p50_ms": round(float(np.percentile(arr, 50)), 4),
            "p99_ms": round(float(np.percentile(arr, 99)), 4),
            "max_ms": round(float(arr.max()), 4),
            "cpu_p50_ms": round(float(np.percentile(carr, 50)), 4),
            "cpu_p99_ms": round(float(np.percentile(carr, 99)), 4),
            "policy_used": plan.policy,
            "provider": plan.provider,
            "fallback": plan.fallback,
            "peers_in_plan": len(plan.shares),
        }
    return out
