"""Parallel denoising steps at the origin: ``peer.diffusion.parareal`` carried out over RPC.

The plan's shares name one peer per segment of the trajectory. The origin keeps a
``PararealCore`` and carries out its effects as they come (no iteration barrier):

- a fine solve F(U^k_n) is a ``ChainShare`` over [b_n, b_{n+1}) sent with ``run_share`` to the
  segment's peer (one share per image; a peer's executor queues them), or run here for this
  peer's own segment;
- a coarse solve G(U^k_n) runs here, ahead of this peer's own fine solves (a small priority
  lane), since every remote solve downstream waits on it.

Parareal covers steps [0, S-1); the last step runs here from the final boundary, so every share
returns a latent, not an image, and the image equals the serial chain's when run to exactness.
A share that fails (peer dead, overrun, remote error) is sent again to another live peer of the
plan, or run here; the iteration goes on with the result either way (a fine solve is the same
computation wherever it runs), so losing a peer costs time, never accuracy.

``record_run`` hands what a run measured (each fine solve's compute and hand-off per holder, the
coarse solves, the last step, the iterations, the make-span against the prediction and against
local's) to the origin's ``peer.core.parallel_costs.ParallelCostTracker``, which the next plan
predicts with.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from peer.core.errors import PeerError, ShareFailed
from peer.core.jobs import Job
from peer.core.parallel_costs import ParallelCostTracker
from peer.core.parallel_plan import DEFAULT_COARSE_EVALS, DEFAULT_TOL_DB, ParallelOptions
from peer.core.planner import Plan, Share
from peer.core.shares import ChainShare
from peer.diffusion.chain import ChainState
from peer.diffusion.parareal import (
    Effect,
    Finished,
    PararealCore,
    RunCoarse,
    RunFine,
)

log = logging.getLogger("amcoedge.parallel")


class ParallelCluster(Protocol):
    """What the origin needs for parallel steps (``peer.runtime.node.Node`` provides it)."""

    name: str
    executor: Any  # peer.runtime.executor.Executor
    backend: Any  # peer.diffusion.Backend

    async def run_share(self, share: Share, work: ChainShare, job: Job) -> tuple[Any, Any]: ...

    def emit(self, job: Job, kind: str, **data: Any) -> None: ...


@dataclass
class ParallelReport:
    iterations: int
    exact: bool
    change_db: float
    fine_solves: int
    coarse_solves: int
    segments: int
    replans: list[dict[str, Any]] = field(default_factory=list)
    timings: list[Any] = field(default_factory=list)
    tolerance_db: float | None = None  # the stop rule used (None: run to exactness)
    # where the time went (wall seconds at the origin): coarse solves, the last step, and each
    # fine solve from send to result ([segment, iteration, peer, wall, remote compute])
    coarse_s: float = 0.0
    last_s: float = 0.0
    solve_s: float = 0.0
    fines: list[list[Any]] = field(default_factory=list)
    # for the measured costs (not in the JSON): per fine solve (peer, steps, wall, compute,
    # queued behind this job's own earlier solve at that peer), and the coarse solves finished
    samples: list[tuple[str, int, float, float, bool]] = field(default_factory=list)
    coarse_runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "exact": self.exact,
            "change_db": None if self.change_db == float("inf") else round(self.change_db, 3),
            "fine_solves": self.fine_solves,
            "coarse_solves": self.coarse_solves,
            "segments": self.segments,
            "tolerance_db": self.tolerance_db,
            "time_s": {
                "solve": round(self.solve_s, 4),
                "coarse": round(self.coarse_s, 4),
                "last_step": round(self.last_s, 4),
                "fine": [[a, b, c, round(d, 4), round(e, 4)] for a, b, c, d, e in self.fines],
            },
        }


class _LocalLane:
    """Runs this peer's solves one at a time, coarse ones first."""

    def __init__(self) -> None:
        self._q: asyncio.PriorityQueue[tuple[int, int, Callable[[], Awaitable[None]]]] = (
            asyncio.PriorityQueue()
        )
        self._seq = itertools.count()

    def put(self, priority: int, fn: Callable[[], Awaitable[None]]) -> None:
        self._q.put_nowait((priority, next(self._seq), fn))

    async def serve(self) -> None:
        while True:
            _, _, fn = await self._q.get()
            await fn()


async def run_parallel_steps(
    cluster: ParallelCluster,
    plan: Plan,
    labels: Sequence[int],
    seeds: Sequence[int],
    steps: int,
    job: Job,
    *,
    tol_db: float | None = DEFAULT_TOL_DB,
    max_iterations: int | None = None,
    coarse_evals: int = DEFAULT_COARSE_EVALS,
    options: ParallelOptions | None = None,
) -> tuple[np.ndarray, ParallelReport]:
    """Images (n, H, W) uint8 for ``labels``/``seeds`` by Parareal over the plan's segments.

    ``options`` (the request's), when given, set the tolerance (None when ``exact``) and the
    coarse evaluations instead of the keyword arguments."""
    if options is not None:
        tol_db = None if options.exact else options.tolerance_db
        coarse_evals = options.coarse_evals
    be = cluster.backend
    if steps < 2:
        raise PeerError("parallel steps need at least 2 steps")
    shares = [s for s in plan.shares if s.step_range is not None]
    if not shares:
        raise PeerError("a parallel-steps plan needs segments")
    bounds = tuple([0] + [s.step_range[1] for s in shares if s.step_range is not None])
    if bounds[-1] != steps - 1:
        raise PeerError(f"segments end at {bounds[-1]}, not at step {steps - 1}")
    # drawing the initial latents is cheap: it does not queue behind this peer's executor, so a
    # busy origin's backlog delays only its own solves (the plan's schedule counts that wait)
    templates: list[ChainState] = await asyncio.to_thread(
        lambda: [
            be.start_chain(lab, s, steps, "ddim") for lab, s in zip(labels, seeds, strict=True)
        ]
    )
    x0 = np.concatenate([st.latent_tensor().numpy() for st in templates])
    assumed = plan.detail.get("iterations_assumed")
    fine_cap = assumed if tol_db is not None and isinstance(assumed, int) and assumed >= 1 else None
    core = PararealCore(bounds, x0, tol_db, max_iterations, fine_cap)
    report = ParallelReport(0, False, 0.0, 0, 0, core.segments, tolerance_db=tol_db)
    t_solve = time.perf_counter()
    holders: list[Share] = list(shares)  # segment -> the peer that runs its fine solves
    lost: set[str] = set()
    me = next((s for s in shares if s.is_self), None) or Share(
        cluster.name, ("127.0.0.1", 0), True, (), None, 0.0
    )
    pending: set[asyncio.Task[None]] = set()
    in_flight: dict[str, int] = {}  # peer -> this job's fine solves sent there, not answered
    lane = _LocalLane()
    done: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()

    def feed(effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Finished):
                if not done.done():
                    done.set_result(eff)
            elif isinstance(eff, RunCoarse):
                lane.put(0, lambda e=eff: coarse(e))  # type: ignore[misc]
            else:
                start_fine(eff)

    async def coarse(eff: RunCoarse) -> None:
        t = time.perf_counter()
        out = await cluster.executor.call(
            lambda: be.coarse_jump(eff.latent, templates, eff.start, eff.stop, coarse_evals)
        )
        report.coarse_s += time.perf_counter() - t
        report.coarse_runs += 1
        feed(core.on_coarse(eff.iteration, eff.segment, out))

    def start_fine(eff: RunFine) -> None:
        share = holders[eff.segment]
        if share.is_self:
            lane.put(1, lambda: fine(eff, share))
        else:
            task = tg.create_task(fine(eff, share))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def fine(eff: RunFine, share: Share) -> None:
        works = [
            ChainShare(
                st.label if st.label is not None else 0,
                st.seed,
                steps,
                "ddim",
                eff.start,
                eff.stop,
                be.with_latent(st, eff.latent[i : i + 1], eff.start).to_wire(),
            )
            for i, st in enumerate(templates)
        ]
        seg = Share(
            share.peer, share.addr, share.is_self, (), (eff.start, eff.stop), share.predicted_s
        )
        t_send = time.perf_counter()
        queued = in_flight.get(share.peer, 0) > 0
        in_flight[share.peer] = in_flight.get(share.peer, 0) + 1
        try:
            outs = await asyncio.gather(*(cluster.run_share(seg, w, job) for w in works))
        except ShareFailed as exc:
            lost.add(share.peer)
            holders[eff.segment] = _replacement(holders, lost, me, share)
            new = holders[eff.segment]
            why = {"peer": share.peer, "steps": [eff.start, eff.stop], "reason": exc.reason}
            report.replans.append({**why, "to": new.peer})
            cluster.emit(job, "replan", **why, to=new.peer)
            log.warning("job %s: %s; segment %d moves to %s", job.id, exc, eff.segment, new.peer)
            start_fine(eff)
            return
        finally:
            in_flight[share.peer] -= 1
        latents = []
        for (out, timing), st in zip(outs, templates, strict=True):
            if "state" not in out:
                raise PeerError("a parallel-steps segment returned no state")
            got = ChainState.from_wire(out["state"])
            if got.step != eff.stop or got.shape != st.shape:
                raise PeerError(f"segment returned step {got.step}, expected {eff.stop}")
            latents.append(got.latent_tensor().numpy())
            timing.end_s = time.perf_counter()  # absolute like start_s; the origin rebases both
            report.timings.append(timing)
        compute = sum(float(getattr(t, "compute_s", 0.0)) for _, t in outs)
        wall = time.perf_counter() - t_send
        report.fines.append([eff.segment, eff.iteration, share.peer, wall, compute])
        report.samples.append((share.peer, eff.stop - eff.start, wall, compute, queued))
        feed(core.on_fine(eff.iteration, eff.segment, np.concatenate(latents)))

    async with asyncio.TaskGroup() as tg:
        server = tg.create_task(lane.serve())
        feed(core.start())
        result = await done
        server.cancel()
        for t in list(pending):  # the rest of a finished solve is not needed
            t.cancel()
    report.solve_s = time.perf_counter() - t_solve
    final_states = [
        be.with_latent(st, result.latent[i : i + 1], steps - 1) for i, st in enumerate(templates)
    ]
    t0 = time.perf_counter()

    def last_step() -> np.ndarray:
        ends = be.run_chains(final_states, steps)
        return np.stack([be.finish_chain(s) for s in ends])

    images = await cluster.executor.call(last_step)
    report.last_s = time.perf_counter() - t0
    report.iterations, report.exact, report.change_db = (
        result.iterations,
        result.exact,
        result.change_db,
    )
    report.fine_solves, report.coarse_solves = core.fine_solves, core.coarse_solves
    return np.asarray(images, dtype=np.uint8), report


def record_run(
    tracker: ParallelCostTracker,
    plan: Plan,
    report: ParallelReport,
    makespan_s: float,
    local_s: float | None,
    images: int,
    coarse_evals: int,
    now: float,
) -> None:
    """Feed one finished run to the measured costs (see the module header)."""
    for peer, steps, wall, compute, queued in report.samples:
        tracker.observe_fine(peer, steps, images, compute, wall, now, queued=queued)
    tracker.observe_coarse(report.coarse_runs * coarse_evals, images, report.coarse_s, now)
    tracker.observe_last(images, report.last_s, now)
    tracker.observe_iterations(report.segments, report.tolerance_db, report.iterations, now)
    tracker.observe_outcome(
        plan.predicted_makespan_s,
        makespan_s,
        local_s,
        now,
        measured=plan.detail.get("costs") == "measured",
    )


def _replacement(holders: list[Share], lost: set[str], me: Share, failed: Share) -> Share:
    """The live peer of the plan holding the fewest segments (this peer when none is left)."""
    live = [s for s in holders if s.peer not in lost]
    if not live:
        return me
    load: dict[str, int] = {}
    for s in live:
        load[s.peer] = load.get(s.peer, 0) + 1
    best = min(live, key=lambda s: (load[s.peer], not s.is_self, s.peer))
    return best
