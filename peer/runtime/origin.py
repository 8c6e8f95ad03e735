"""Running one request at its origin: plan, dispatch shares, re-plan failures, stitch, time.

``run_generate`` and ``run_repair`` drive a ``Job`` to ``done`` or ``failed``; a share that
fails on a remote peer (dead, timeout, remote error) is re-planned onto the others or run
locally, so a request is never silently dropped. The node supplies the ``Cluster`` seam.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from peer.core.errors import PeerError, ShareFailed
from peer.core.jobs import Job
from peer.core.parallel_costs import MeasuredParallel
from peer.core.planner import CHAIN, PeerState, Plan, Planner, Share, Work
from peer.core.requests import GenerateRequest, RepairRequest
from peer.core.shares import ChainShare, GenerateShare, TextSpec, TilesShare
from peer.runtime.timing import PeerTiming

if TYPE_CHECKING:
    from peer.core.fused_plan import Canvas as FusedCanvas
    from peer.diffusion.pipeline.text import TextParams
    from peer.runtime.parallel import ParallelCluster

log = logging.getLogger("amcoedge.origin")

MAX_REPLANS = 3
IMAGE_BYTES = 16 * 16  # one generated image (uint8) on the wire


@dataclass
class RunLog:
    t0: float
    timings: list[PeerTiming] = field(default_factory=list)
    replans: list[dict[str, Any]] = field(default_factory=list)


class Cluster(Protocol):
    planner: Planner
    name: str
    native: int
    quantum: int
    default_policy: str

    def states(self, exclude: Sequence[str] = ()) -> list[PeerState]: ...

    async def refresh_load(self) -> dict[str, float]: ...

    def record_dispatch(self, plan: Plan) -> None: ...

    async def run_share(
        self, share: Share, work: GenerateShare | TilesShare | ChainShare, job: Job
    ) -> tuple[Any, PeerTiming]: ...

    def emit(self, job: Job, kind: str, **data: Any) -> None: ...

    def progress(self, job: Job, units: int, peer: str) -> None: ...

    async def run_local_repair(
        self, req: RepairRequest, job: Job
    ) -> tuple[np.ndarray, PeerTiming]: ...

    def plan_tiles(self, h: int, w: int) -> list[Any]: ...

    def fused_canvas(self, req: RepairRequest) -> FusedCanvas | None:
        """The canvas as fused tiles' planner sees it; None where they do not apply."""
        ...

    def tile_area(self, tile: Any) -> float: ...

    def repair_rows(self, label: int | None) -> int: ...

    def blend(self, shape: tuple[int, ...], parts: list[tuple[Any, np.ndarray]]) -> np.ndarray: ...

    def encode_png(self, img: np.ndarray) -> bytes: ...

    def parallel_capable(self) -> bool:
        """The backend can hand a latent over mid-chain (parallel steps)."""
        ...

    def parallel_measured(self) -> MeasuredParallel:
        """What past parallel-steps runs measured here (``peer.core.parallel_costs``)."""
        ...

    def parallel_observed(
        self, plan: Plan, report: Any, makespan_s: float, local_s: float, images: int
    ) -> None:
        """Feed a finished parallel-steps run (``ParallelReport``) to the measured costs."""
        ...

    async def text_spec(self, params: TextParams, sized: bool) -> TextSpec:
        """A text request's conditioning, encoded once here (see ``peer.core.shares``)."""
        ...


def labels_for(req: GenerateRequest) -> list[int]:
    if req.label is not None:
        return [req.label] * req.count
    rng = np.random.default_rng(req.seed)
    return [int(x) for x in rng.integers(0, 10, size=req.count)]


def seeds_for(req: GenerateRequest) -> list[int]:
    return [(req.seed + i) % (2**31) for i in range(req.count)]


def _b64png(cluster: Cluster, img: np.ndarray) -> str:
    return base64.b64encode(cluster.encode_png(img)).decode("ascii")


def _parallel_work(req: GenerateRequest) -> dict[str, Any]:
    """The planner's parallel-steps fields from the request's ``parallel`` options."""
    o = req.parallel
    if o is None:
        return {}
    return {
        "segments": o.segments,
        "tolerance_db": o.tolerance_db,
        "exact": o.exact,
        "coarse_evals": o.coarse_evals,
    }


async def run_generate(cluster: Cluster, req: GenerateRequest, job: Job) -> dict[str, Any]:
    policy = req.policy or cluster.default_policy
    labels, seeds = labels_for(req), seeds_for(req)
    text = None if req.text is None else await cluster.text_spec(req.text, sized=True)
    if text is not None:  # a text pipeline: no labels; images of width x height RGB
        labels = [0] * req.count
    work = Work(
        kind="generate",
        units=req.count,
        steps=req.steps,
        bytes_per_unit=IMAGE_BYTES if text is None else 3 * text.width * text.height,
        quantum=cluster.quantum,
        # parallel steps: a deterministic sampler, no text, a backend that hands latents over
        deterministic=req.scheduler == "ddim" and text is None and cluster.parallel_capable(),
        measured=cluster.parallel_measured(),
        **_parallel_work(req),
    )
    t_plan = time.perf_counter()
    fresh = await cluster.refresh_load()
    plan = cluster.planner.plan(cluster.states(), work, mode=req.mode, policy=policy)
    plan_s = time.perf_counter() - t_plan
    cluster.emit(job, "plan", **plan.to_json())
    cluster.record_dispatch(plan)
    rl = RunLog(t0=time.perf_counter())
    images: list[np.ndarray | None] = [None] * req.count
    extra: dict[str, Any] = {}
    if plan.mode == "parallel":
        from peer.runtime.parallel import run_parallel_steps

        local_s = plan.alternatives.get("local")
        if local_s is None:  # asked for parallel: what local would take, for the guard
            local_s = cluster.planner.plan_mode(
                cluster.states(), work, "local", "local"
            ).predicted_makespan_s
        out, report = await run_parallel_steps(
            cast("ParallelCluster", cluster),
            plan,
            labels,
            seeds,
            req.steps,
            job,
            options=req.parallel,
        )
        images = [np.asarray(im, dtype=np.uint8) for im in out]
        rl.replans.extend(report.replans)
        for t in report.timings:  # the segments' perf_counter times, relative to the job
            t.start_s = max(t.start_s - rl.t0, 0.0)
            t.end_s = max(t.end_s - rl.t0, t.start_s)
        rl.timings.extend(report.timings)
        cluster.progress(job, req.count, cluster.name)
        cluster.parallel_observed(plan, report, time.perf_counter() - rl.t0, local_s, req.count)
        extra["parallel"] = report.to_json()
    elif plan.mode in CHAIN:
        images[:] = await _run_chain(cluster, plan, labels, seeds, req, job, rl, text)
    else:
        run = UnitRun(
            cluster,
            work,
            policy,
            job,
            rl,
            make=lambda idx: GenerateShare(
                tuple(labels[i] for i in idx),
                tuple(seeds[i] for i in idx),
                req.steps,
                req.scheduler,
                text,
            ),
            put=lambda idx, out: _put_images(images, idx, out),
        )
        await run.run(plan, list(range(req.count)), req.mode)
    makespan = time.perf_counter() - rl.t0
    done = [im for im in images if im is not None]
    if len(done) != req.count:
        raise PeerError(f"{req.count - len(done)} images missing after execution")
    return {
        "images": [_b64png(cluster, im) for im in done],
        "labels": labels if text is None else None,
        "seeds": seeds,
        "plan": plan.to_json(),
        "replans": rl.replans,
        "timing": _timing(rl, makespan, plan_s, plan, fresh),
        **extra,  # parallel steps: iterations, exactness, change between the last iterates
    }


def _put_images(images: list[np.ndarray | None], idx: Sequence[int], out: Any) -> None:
    arr = np.asarray(out)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] != len(idx):
        raise PeerError(f"share returned {arr.shape[0]} images for {len(idx)}")
    for k, i in enumerate(idx):
        images[i] = np.asarray(arr[k], dtype=np.uint8)


async def run_repair(cluster: Cluster, req: RepairRequest, job: Job) -> dict[str, Any]:
    policy = req.policy or cluster.default_policy
    h, w = req.image.shape[:2]
    text = None if req.text is None else await cluster.text_spec(req.text, sized=False)
    all_tiles = cluster.plan_tiles(h, w)
    # only windows that hold masked pixels are work; the others keep the input as it is
    tiles = [t for t in all_tiles if req.mask[t.y0 : t.y1, t.x0 : t.x1].any()]
    kept = [(t, req.image[t.y0 : t.y1, t.x0 : t.x1].copy()) for t in all_tiles if t not in tiles]
    rows = cluster.repair_rows(req.label)
    work = Work(
        kind="repair",
        units=max(len(tiles), 1),
        steps=req.steps,
        bytes_per_unit=64,
        share_bytes=req.image.nbytes + h * w,
        area_units=rows * h * w / float(cluster.native**2),
        tile_area=rows * (cluster.tile_area(tiles[0]) if tiles else 1.0),
        quantum=cluster.quantum if rows == 1 else 1,
        fused=cluster.fused_canvas(req),
    )
    t_plan = time.perf_counter()
    fresh = await cluster.refresh_load()
    plan = cluster.planner.plan(
        cluster.states(), work, mode=req.mode, policy=policy, height=h, width=w
    )
    plan_s = time.perf_counter() - t_plan
    cluster.emit(job, "plan", **plan.to_json())
    cluster.record_dispatch(plan)
    rl = RunLog(t0=time.perf_counter())
    extra: dict[str, Any] = {}
    if not tiles:
        img = req.image.copy()  # nothing masked: nothing to repair
    elif plan.mode == "fused":
        from peer.runtime import fused_repair

        img, fres = await fused_repair.run_fused_repair(
            cast("fused_repair.FusedCluster", cluster), plan, req, job
        )
        rl.replans.extend(fres.replans)
        rl.timings.extend(fused_repair.timings(fres, rl.t0))
        cluster.progress(job, work.units, cluster.name)
        extra["fused"] = fused_repair.fused_json(plan, fres)
    elif plan.mode == "local":
        img, timing = await cluster.run_local_repair(req, job)
        timing.start_s, timing.end_s = 0.0, time.perf_counter() - rl.t0
        rl.timings.append(timing)
        cluster.progress(job, work.units, cluster.name)
    else:
        outs: list[np.ndarray | None] = [None] * len(tiles)

        def put(idx: Sequence[int], out: Any) -> None:
            if len(out) != len(idx):
                raise PeerError(f"share returned {len(out)} tiles for {len(idx)}")
            for k, i in enumerate(idx):
                outs[i] = np.asarray(out[k])

        run = UnitRun(
            cluster,
            work,
            policy,
            job,
            rl,
            make=lambda idx: TilesShare(
                req.image, req.mask, tuple(tiles[i] for i in idx), req.steps, req.seed, None, text
            ),
            put=put,
        )
        await run.run(plan, list(range(len(tiles))), "tile")
        if any(o is None for o in outs):
            raise PeerError("tiles missing after execution")
        parts = [(t, o) for t, o in zip(tiles, outs, strict=True) if o is not None]
        img = cluster.blend(
            req.image.shape, sorted(parts + kept, key=lambda p: all_tiles.index(p[0]))
        )
    makespan = time.perf_counter() - rl.t0
    return {
        "images": [_b64png(cluster, np.asarray(img, dtype=np.uint8))],
        "plan": plan.to_json(),
        "tiles": len(all_tiles),
        "tiles_repaired": len(tiles),
        "replans": rl.replans,
        "timing": _timing(rl, makespan, plan_s, plan, fresh),
        **extra,  # fused: bands, holders, exchange period, warm-up, bytes per step
    }


MakeShare = Callable[[Sequence[int]], GenerateShare | TilesShare]
PutResult = Callable[[Sequence[int], Any], None]


@dataclass
class UnitRun:
    """One batch/tile request being carried out: what stays fixed while shares are re-planned."""

    cluster: Cluster
    work: Work
    policy: str
    job: Job
    rl: RunLog
    make: MakeShare  # unit indices -> the share that computes them
    put: PutResult  # unit indices, a share's output -> stored in the result
    excluded: set[str] = field(default_factory=set)  # peers that failed a share of this request

    async def run(self, plan: Plan, units: Sequence[int], mode: str, depth: int = 0) -> None:
        """Run ``plan`` (its share units index into ``units``); re-plan the shares that fail."""
        async with asyncio.TaskGroup() as tg:
            for share in plan.shares:
                tg.create_task(self._one(share, [units[i] for i in share.units], mode, depth))

    async def _one(self, share: Share, idx: list[int], mode: str, depth: int) -> None:
        cluster, job, rl = self.cluster, self.job, self.rl
        try:
            out, timing = await cluster.run_share(share, self.make(idx), job)
        except ShareFailed as exc:
            self.excluded.add(share.peer)
            rl.replans.append({"peer": share.peer, "units": idx, "reason": exc.reason})
            cluster.emit(job, "replan", peer=share.peer, units=idx, reason=exc.reason)
            log.warning("job %s: %s; re-planning %d units", job.id, exc, len(idx))
            await self.run(
                self._replan(idx, mode, depth), idx, self._sub_mode(mode, depth), depth + 1
            )
            return
        timing.start_s = max(timing.start_s - rl.t0, 0.0)
        timing.end_s = time.perf_counter() - rl.t0
        rl.timings.append(timing)
        self.put(idx, out)
        cluster.progress(job, len(idx), share.peer)

    @staticmethod
    def _sub_mode(mode: str, depth: int) -> str:
        return mode if depth + 1 < MAX_REPLANS else "local"

    def _replan(self, idx: list[int], mode: str, depth: int) -> Plan:
        sub_work = replace(self.work, units=len(idx))
        states = self.cluster.states(exclude=sorted(self.excluded))
        planner = self.cluster.planner
        if self._sub_mode(mode, depth) == "local":
            sub = planner.plan_mode(states, sub_work, "local", "local")
        else:
            sub = planner.plan_mode(
                states, sub_work, "tile" if mode == "tile" else "batch", self.policy
            )
        self.cluster.record_dispatch(sub)
        return sub


async def _run_chain(
    cluster: Cluster,
    plan: Plan,
    labels: Sequence[int],
    seeds: Sequence[int],
    req: GenerateRequest,
    job: Job,
    rl: RunLog,
    text: TextSpec | None = None,
) -> list[np.ndarray]:
    """The relay: each hop runs its step range of every image's chain (one share per image,
    sent together); a share that fails runs here instead."""
    states: list[dict[str, Any] | None] = [None] * len(labels)
    images: list[np.ndarray | None] = [None] * len(labels)
    me = next(s for s in cluster.states() if s.is_self)

    async def one(share: Share, cs: ChainShare) -> tuple[Any, PeerTiming]:
        try:
            return await cluster.run_share(share, cs, job)
        except ShareFailed as exc:
            start, stop = cs.start, cs.stop
            rl.replans.append({"peer": share.peer, "steps": [start, stop], "reason": exc.reason})
            cluster.emit(job, "replan", peer=share.peer, steps=[start, stop], reason=exc.reason)
            local = Share(me.name, me.addr, True, (), (start, stop), 0.0)
            return await cluster.run_share(local, cs, job)

    for share in plan.shares:
        assert share.step_range is not None
        start, stop = share.step_range
        works = [
            ChainShare(lab, seed, req.steps, req.scheduler, start, stop, st, text)
            for lab, seed, st in zip(labels, seeds, states, strict=True)
        ]
        outs = await asyncio.gather(*(one(share, cs) for cs in works))
        for i, (out, timing) in enumerate(outs):
            timing.start_s = max(timing.start_s - rl.t0, 0.0)
            timing.end_s = time.perf_counter() - rl.t0
            rl.timings.append(timing)
            cluster.progress(job, stop - start, timing.peer)
            if "image" in out:
                images[i] = np.asarray(out["image"], dtype=np.uint8)
            else:
                states[i] = out["state"]
    done = [im for im in images if im is not None]
    if len(done) != len(images):
        raise PeerError("the chain ended without an image")
    return done


def _timing(
    rl: RunLog, makespan: float, plan_s: float, plan: Plan, fresh: dict[str, float]
) -> dict[str, Any]:
    """Measured make-span beside the plan's prediction, and how fresh the load it used was."""
    predicted = plan.predicted_makespan_s
    return {
        "makespan_s": round(makespan, 6),
        "predicted_s": round(predicted, 6),
        "actual_over_predicted": round(makespan / predicted, 4) if predicted > 0 else None,
        "plan_s": round(plan_s, 6),
        "load_age_s": {k: round(v, 4) for k, v in sorted(fresh.items())},
        "peers": [t.to_json() for t in rl.timings],
    }
