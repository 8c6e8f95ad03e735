"""A ``fused`` repair at its origin: the plan's bands carried out with ``run_fused``.

The planner (``peer.core.fused_plan``) chose one band per holder, the halo, the exchange period
and the warm-up. Here the origin runs the warm-up on its own executor, opens its own band
in-process (the node's ``fused.*`` handlers) and the others over RPC, and checkpoints every
band every ``CHECKPOINT_EVERY`` rounds. A holder whose call fails, that gossip declares lost,
or that overruns three times its predicted call plus 5 s, is replaced: by the cheapest
live peer holding no band, else by this peer, which re-opens the band from its checkpoint and
replays the strips sent since, so the image is the one the failure-free run makes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from peer.core.fused_plan import CHECKPOINT_EVERY, Canvas
from peer.core.jobs import Job
from peer.core.planner import PeerState, Plan, Share
from peer.core.requests import RepairRequest
from peer.runtime.fused_sessions import Call, FusedRun, run_fused
from peer.runtime.timing import PeerTiming


class FusedCluster(Protocol):
    """What the origin needs for fused tiles (``peer.runtime.node.Node`` provides it)."""

    name: str
    executor: Any  # peer.runtime.executor.Executor
    backend: Any  # peer.diffusion.Backend

    def states(self, exclude: Sequence[str] = ()) -> list[PeerState]: ...

    def fused_call(self, share: Share) -> Call: ...

    def fused_lost(self, peer: str, late: bool) -> str | None: ...

    def emit(self, job: Job, kind: str, **data: Any) -> None: ...


def fused_canvas(backend: Any, req: RepairRequest, native: int) -> Canvas | None:
    """The planner's view of a repair for fused tiles; None where they do not apply (a text
    pipeline, a backend without band steps, a canvas off the band quantum)."""
    if req.text is not None or not callable(getattr(backend, "_eps", None)):
        return None
    quantum = int(getattr(backend, "downscale", 1))
    h, w = req.mask.shape
    if h % quantum or w % quantum:
        return None
    return Canvas(
        height=h,
        width=w,
        steps=req.steps,
        area=0.0,  # the planner fills the steps and the area from its Work
        native=native,
        quantum=quantum,
        channels=int(getattr(backend, "in_channels", 1)),
        row_masked=tuple(round(float(x), 4) for x in np.asarray(req.mask).mean(axis=1)),
        open_bytes=int(req.image.nbytes + h * w),
    )


def _replacer(cluster: FusedCluster) -> Any:
    """The next holder of a lost band: the live peer holding no band with the least wait
    plus compute, else this peer (always there; it then runs two bands)."""

    def replace(band: int, avoid: set[str]) -> tuple[str, Call] | None:
        spares = [p for p in cluster.states(exclude=sorted(avoid)) if not p.is_self]
        spares.sort(key=lambda p: (p.wait_s + p.own_pending_s + p.a_s + p.c_s, p.name))
        if spares:
            p = spares[0]
            share = Share(p.name, p.addr, False, (band,), None, 0.0)
        else:
            me = next(p for p in cluster.states() if p.is_self)
            share = Share(me.name, me.addr, True, (band,), None, 0.0)
        return share.peer, cluster.fused_call(share)

    return replace


async def run_fused_repair(
    cluster: FusedCluster, plan: Plan, req: RepairRequest, job: Job
) -> tuple[np.ndarray, FusedRun]:
    """The plan's bands over their holders; the finished canvas and the run's report."""
    d: dict[str, Any] = dict(plan.detail)
    shares = sorted(plan.shares, key=lambda s: s.units[0])
    calls = [(s.peer, cluster.fused_call(s)) for s in shares]
    predicted = float(plan.predicted_makespan_s)

    async def here(fn: Any) -> Any:
        out, _ = await cluster.executor.run(fn, predicted, job.id)
        return out

    res = await run_fused(
        cluster.backend,
        req.image,
        req.mask,
        req.steps,
        req.seed,
        calls,
        halo=int(d["halo"]),
        sync_every=int(d["sync_every"]),
        warmup=int(d["warmup"]),
        label=req.label,
        run_local=here,
        checkpoint_every=CHECKPOINT_EVERY,
        lost=cluster.fused_lost,
        replace=_replacer(cluster),
        step_s=[float(x) for x in d["step_s"]],
        exchange_s=[float(x) for x in d["exchange_s"]],
    )
    want = [list(b) for b in d["bands"]]
    got = [b.to_wire() for b in res.bands]
    if got != want:  # the planner's layout and plan_bands disagree: a bug, not a fault
        raise RuntimeError(f"fused bands {got} differ from the plan's {want}")
    for r in res.replans:
        cluster.emit(job, "replan", **r)
    return np.asarray(res.image, dtype=np.uint8), res


def fused_json(plan: Plan, res: FusedRun) -> dict[str, Any]:
    d: dict[str, Any] = dict(plan.detail)
    return {
        "bands": [b.to_wire() for b in res.bands],
        "holders": list(res.holders),
        "sync_every": d["sync_every"],
        "halo": d["halo"],
        "warmup": d["warmup"],
        "exchanges": res.exchanges,
        "bytes_per_step": round(res.bytes_per_step, 1),
        "checkpoints": res.checkpoints,
        "checkpoint_bytes": res.checkpoint_bytes,
        "wall_s": round(res.wall_s, 6),
    }


def timings(res: FusedRun, t0: float) -> list[Any]:
    """One entry per band holder (start and end of the run; the rounds are shared)."""
    end = time.perf_counter() - t0
    return [PeerTiming(name, 1, 0.0, 0.0, 0.0, 0.0, end) for name in res.holders]
