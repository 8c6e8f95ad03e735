"""The planner: (view of the cluster, request, policy) -> plan. Pure: no clocks, sockets, asyncio.

Pipeline for one request, given ``now`` by the caller:

1. **Candidate features.** Each peer in the view becomes a ``Cand``: its wait (the gossiped
   backlog aged forward to ``now`` plus this origin's own dispatches since that backlog was
   published, from ``policy.fleet.DispatchLedger``), the per-share fixed cost (round trip plus
   ``steps * a_j``), the cost per unit (``steps * c_j`` per image; one forward per tile) and the
   transfer time per unit. Compute cost is affine per denoising step, ``a_j + c_j * images``.
2. **Policy.** The recruiter (``peer.core.recruit``) picks the set of collaborating peers. ``onnx``
   (the learned recruiter) falls back to ``greedy`` when its model is missing or fails, and the
   plan says so.
3. **Water-filling.** Shares over the chosen set come from exact water-filling
   (``policy.allocation.water_fill``) with the fixed cost counted as part of the wait; ``equal``
   and ``random`` keep the split their baseline defines.
4. **Whole units.** Largest-remainder rounding to images (``batch``), tiles (``tile``); a peer
   whose rounded share is 0 is dropped, and a collaborator is pruned while that lowers the
   predicted make-span. ``chain`` (old name ``steps``) builds a two-hop relay (a peer that can
   start now runs the first steps, a faster or later-free peer runs the rest; one chain per
   image). ``local`` runs everything here; ``auto`` predicts every mode that applies and keeps
   the shortest, parallel steps' prediction counted times the guard their past runs earned
   (``peer.core.parallel_costs``: measured costs, prediction error, losses to local).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np

from peer.core.errors import PlanError
from peer.core.fused_plan import Canvas, Holder, best_layout
from peer.core.parallel_costs import MeasuredParallel
from peer.core.parallel_plan import (
    DEFAULT_TOL_DB,
    SHARE_OVERHEAD_S,
    Costs,
    ParallelOptions,
    assumed_iterations,
    best_bounds,
)
from policy.allocation import round_units, water_fill

LINK_BLIND = "onnx-nolinks"  # the learned policy fed default links (an ablation; see plan_mode)
DEFAULT_RTT_S = 0.001  # a link nothing has measured yet (peer.core.viewstate uses these too)
DEFAULT_BYTES_PER_S = 1e8

Mode = Literal["batch", "tile", "steps", "chain", "local", "parallel", "fused"]
Kind = Literal["generate", "repair"]
CHAIN = ("chain", "steps")  # the relay mode and its old name
Addr = tuple[str, int]


@dataclass(frozen=True)
class PeerState:
    """What the origin believes about one peer at planning time."""

    name: str
    is_self: bool
    addr: Addr  # RPC address
    wait_s: float  # gossiped backlog aged forward to now (exact for this peer itself)
    view_age_s: float  # age of the gossiped backlog behind wait_s
    a_s: float  # compute seconds per denoising step, fixed part
    c_s: float  # compute seconds per denoising step per image
    rtt_s: float = 0.0  # RPC round trip (0 for self)
    bytes_per_s: float = 1e8  # bandwidth origin -> peer
    own_pending_s: float = 0.0  # what this origin dispatched there since the backlog was published


@dataclass(frozen=True)
class Work:
    """The request as the planner sees it."""

    kind: Kind
    units: int  # images (generate) or tiles (repair, tiled)
    steps: int
    bytes_per_unit: int = 512  # bytes moved per unit (both ways)
    share_bytes: int = 0  # bytes moved once per remote share (repair canvas + mask)
    area_units: float = 1.0  # untiled repair: canvas area in native-size images
    tile_area: float = 1.0  # tile mode: one tile window's area in native-size images
    chain_bytes: int = 8192  # steps mode: latent + generator + scheduler state
    quantum: int = 1  # the backend pads each forward to a multiple of this many images
    deterministic: bool = False  # the sampler draws no noise per step: parallel steps apply
    coarse_evals: int = 2  # parallel steps: UNet evaluations per coarse segment solve
    iterations: int = 0  # parallel steps: iterations the prediction assumes (0: from tolerance)
    segments: int | None = None  # parallel steps: forced segment count (None: the planner's)
    tolerance_db: float = DEFAULT_TOL_DB  # parallel steps: stop at this change between iterates
    exact: bool = False  # parallel steps: run to exactness (all P iterations)
    measured: MeasuredParallel | None = None  # parallel steps: costs past runs measured, guard
    fused: Canvas | None = None  # fused tiles: the canvas (None: fused tiles do not apply)


@dataclass(frozen=True)
class Share:
    peer: str
    addr: Addr
    is_self: bool
    units: tuple[int, ...]  # image or tile indices (empty in steps mode)
    step_range: tuple[int, int] | None  # [start, stop) in steps mode
    predicted_s: float  # predicted finish time from now
    work_s: float = 0.0  # predicted seconds of work it adds to that peer (for the ledger)


@dataclass(frozen=True)
class Plan:
    mode: Mode
    shares: tuple[Share, ...]
    policy: str  # the policy that made the decision (after any fallback)
    requested_policy: str
    provider: str  # execution provider of the policy (e.g. CPUExecutionProvider, heuristic)
    fallback: str | None  # why the requested policy was not used, if it was not
    predicted_makespan_s: float
    candidates: int
    alternatives: dict[str, float] = field(default_factory=dict)  # auto: mode -> prediction
    detail: dict[str, object] = field(default_factory=dict)  # mode-specific settings

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "policy": self.policy,
            "requested_policy": self.requested_policy,
            "provider": self.provider,
            "fallback": self.fallback,
            "predicted_makespan_s": round(self.predicted_makespan_s, 6),
            "peers": [s.peer for s in self.shares],
            "shares": [
                {
                    "peer": s.peer,
                    "units": list(s.units),
                    "steps": list(s.step_range) if s.step_range else None,
                    "predicted_s": round(s.predicted_s, 6),
                }
                for s in self.shares
            ],
            "candidates": self.candidates,
            "alternatives": {k: round(v, 6) for k, v in self.alternatives.items()},
            **({"detail": dict(self.detail)} if self.detail else {}),
        }


@dataclass(frozen=True)
class RecruitResult:
    """A recruiter's decision over a candidate list."""

    selected: list[int]  # indices into the candidate list
    shares: list[float] | None  # over `selected`, when the policy defines the split
    keep_shares: bool  # True: the planner keeps `shares` instead of water-filling
    policy: str  # the policy that decided (after any fallback)
    provider: str  # its execution provider ("heuristic" for the hand-written ones)
    fallback: str | None  # why the requested policy did not decide, if it did not


class Recruiter(Protocol):
    """The planner's seam to recruitment policies (implemented by ``peer.core.recruit``)."""

    def decide(self, policy: str, units: int, cands: Sequence[Cand]) -> RecruitResult: ...

    def provider(self, policy: str) -> str: ...


@dataclass(frozen=True)
class Cand:
    """Per-peer cost terms for one work kind and mode (seconds)."""

    peer: PeerState
    wait_s: float
    fixed_s: float
    unit_s: float
    xfer_s_per_unit: float
    quantum: int = 1  # forwards are padded to a multiple of this many images

    def finish(self, n: int) -> float:
        if n <= 0:
            return 0.0
        padded = max(self.quantum, -(-n // self.quantum) * self.quantum)
        return self.wait_s + self.fixed_s + padded * self.unit_s + n * self.xfer_s_per_unit


def applicable_modes(work: Work, native: int, height: int = 0, width: int = 0) -> list[Mode]:
    """Modes that apply to a request, in the order auto breaks ties."""
    if work.kind == "generate":
        modes: list[Mode] = ["local", "batch"]
        modes.append("chain")  # the relay ("steps" is its old name); any count
        if work.deterministic and work.steps >= 3:
            modes.append("parallel")
        return modes
    modes = ["local"]
    if max(height, width) > native:
        modes.append("tile")
    if work.fused is not None and height >= 2 * native:
        modes.append("fused")
    return modes


def candidates(peers: Sequence[PeerState], work: Work, mode: Mode) -> list[Cand]:
    out: list[Cand] = []
    s = work.steps
    for p in peers:
        remote = not p.is_self
        bw = max(p.bytes_per_s, 1.0)
        if mode in ("tile", "fused"):  # a share's tiles are denoised as one batch
            fixed = s * p.a_s + ((p.rtt_s + work.share_bytes / bw) if remote else 0.0)
            unit = s * p.c_s * work.tile_area
        elif mode == "local" and work.kind == "repair":
            fixed = s * p.a_s + ((p.rtt_s + work.share_bytes / bw) if remote else 0.0)
            unit = s * p.c_s * work.area_units
        elif mode == "parallel":  # a unit is one denoising step of the whole batch
            fixed = p.rtt_s if remote else 0.0
            unit = work.units * (p.a_s + p.c_s)  # a chain share per image (``_fine_step``)
        else:
            fixed = s * p.a_s + (p.rtt_s if remote else 0.0)
            unit = s * p.c_s
        xfer = (work.bytes_per_unit / bw) if remote and mode != "parallel" else 0.0
        wait = max(p.wait_s, 0.0) + max(p.own_pending_s, 0.0)
        out.append(Cand(p, wait, fixed, unit, xfer, work.quantum if mode not in CHAIN else 1))
    return out


class Planner:
    """Turns a view and a request into a plan; holds only the recruiters (policy objects)."""

    def __init__(self, recruiters: Recruiter, *, native: int = 16) -> None:
        self.recruiters = recruiters
        self.native = native
        # (request kind, mode) -> factor on that mode's raw prediction for that kind of
        # request (``peer.core.costs.ModeBias.factor``); parallel steps have their own
        # measured costs and guard instead
        self.bias: Callable[[str, str], float] = _no_bias

    def plan(
        self,
        peers: Sequence[PeerState],
        work: Work,
        *,
        mode: str,
        policy: str,
        height: int = 0,
        width: int = 0,
    ) -> Plan:
        if work.units < 1 or work.steps < 1:
            raise PlanError("a request needs at least one unit and one step")
        selfs = [p for p in peers if p.is_self]
        if len(selfs) != 1:
            raise PlanError("the view must contain this peer exactly once")
        applicable = applicable_modes(work, self.native, height, width)
        mode = "chain" if mode == "steps" else mode  # the relay's old name
        if mode == "auto":
            best: Plan | None = None
            preds: dict[str, float] = {}
            best_score = math.inf
            for m in applicable:
                if not _auto_offers(m, applicable, work):
                    continue
                p = self._biased(work.kind, self.plan_mode(peers, work, m, policy))
                preds[m] = p.predicted_makespan_s
                # parallel competes with its prediction times the measured guard (>= 1)
                score = p.predicted_makespan_s * (parallel_guard(work) if m == "parallel" else 1.0)
                if best is None or score < best_score - 1e-9:
                    best, best_score = p, score
            assert best is not None  # applicable always holds "local"
            return _with_alternatives(best, preds)
        if mode not in applicable:
            raise PlanError(f"mode {mode!r} does not apply to this request (applies: {applicable})")
        return self._biased(work.kind, self.plan_mode(peers, work, mode, policy))

    def _biased(self, kind: str, plan: Plan) -> Plan:
        """``plan`` with its predictions (make-span and each share's finish, which the share's
        overrun deadline derives from) times the learned bias of its mode for ``kind``."""
        f = 1.0 if plan.mode == "parallel" else self.bias(kind, plan.mode)
        if f == 1.0:
            return plan
        return replace(
            plan,
            shares=tuple(replace(s, predicted_s=s.predicted_s * f) for s in plan.shares),
            predicted_makespan_s=plan.predicted_makespan_s * f,
            detail={**plan.detail, "bias": round(f, 4)},
        )

    # -- one mode -----------------------------------------------------------------------------

    def plan_mode(self, peers: Sequence[PeerState], work: Work, mode: Mode, policy: str) -> Plan:
        """Plan in one given mode, without checking that it applies (re-planning uses this)."""
        if mode == "local" or (policy == "local" and mode == "batch"):
            return self._local(peers, work, mode, policy)
        cands = candidates(peers, work, mode)
        units = work.steps if mode in (*CHAIN, "parallel") else work.units
        if policy == "local":  # tiles or steps, all on this peer
            me = next(i for i, c in enumerate(cands) if c.peer.is_self)
            rec = RecruitResult([me], None, False, "local", "heuristic", None)
        elif policy == LINK_BLIND:
            # the ablation: the learned policy sees every link at the defaults; the split
            # below still uses the measured links
            blind = [
                replace(p, rtt_s=DEFAULT_RTT_S, bytes_per_s=DEFAULT_BYTES_PER_S) for p in peers
            ]
            rec = self.recruiters.decide("onnx", units, candidates(blind, work, mode))
        else:
            rec = self.recruiters.decide(policy, units, cands)
        if mode in CHAIN:
            return self._chain(cands, work, rec, policy)
        if mode == "parallel":
            return self._parallel(cands, work, rec, policy)
        if mode == "fused":
            return self._fused(cands, work, rec, policy)
        return self._split(cands, work, mode, rec, policy)

    def _local(self, peers: Sequence[PeerState], work: Work, mode: Mode, policy: str) -> Plan:
        me = next(p for p in peers if p.is_self)
        cand = candidates([me], work, "local")[0]
        finish = cand.finish(1) if work.kind == "repair" else cand.finish(work.units)
        share = Share(
            me.name, me.addr, True, tuple(range(work.units)), None, finish, finish - cand.wait_s
        )
        return Plan(
            mode="local",
            shares=(share,),
            policy="local",
            requested_policy=policy,
            provider="heuristic",
            fallback=None,
            predicted_makespan_s=finish,
            candidates=len(peers),
        )

    def _parallel(self, cands: list[Cand], work: Work, rec: RecruitResult, policy: str) -> Plan:
        """Parallel steps: this peer holds the first segment (shortened by its coarse work) and
        runs the coarse solves; remote peers the policy chose hold the others, fastest first.
        Without a forced count, as many segments as lower the predicted make-span
        (``parallel_layout``); a forced count above the peers goes round the holders."""
        me = next(i for i, c in enumerate(cands) if c.peer.is_self)
        chosen = [i for i in rec.selected if 0 <= i < len(cands) and i != me]
        n = work.units

        def per(i: int) -> float:
            c = cands[i]
            return c.wait_s + work.steps * _step_cost(c, work) + c.peer.rtt_s

        chosen.sort(key=lambda i: (per(i), cands[i].peer.name))
        limit = max(work.steps - 1, 1)
        if work.segments is not None:
            counts = [min(work.segments, limit)]
        else:
            counts = list(range(1, min(len(chosen) + 1, limit) + 1))
        best: tuple[float, int, tuple[int, ...], tuple[int, ...], int] | None = None
        measured = work.measured is not None and bool(work.measured.step_s)
        for k in counts:
            # this peer holds the first segment, or (busy with the coarse solves) none
            for held in ((me, *chosen[: k - 1]), tuple(chosen[:k])):
                if not held:
                    continue
                bounds, t, iters = parallel_layout(
                    cands[me], [cands[i] for i in held if i != me], work, k, me in held
                )
                if best is None or t < best[0] - 1e-12:
                    best = (t, k, bounds, held, iters)
        assert best is not None
        best_t, best_k, bounds, held, iters = best
        order = [held[s % len(held)] for s in range(best_k)]
        shares: list[Share] = []
        for j, i in enumerate(order):
            start, stop = bounds[j], bounds[j + 1]
            c = cands[i]
            work_s = (stop - start) * _fine_step(c, n) * iters
            shares.append(
                Share(c.peer.name, c.peer.addr, c.peer.is_self, (), (start, stop), best_t, work_s)
            )
        return Plan(
            mode="parallel",
            shares=tuple(shares),
            policy=rec.policy,
            requested_policy=policy,
            provider=rec.provider,
            fallback=rec.fallback,
            predicted_makespan_s=best_t,
            candidates=len(cands),
            detail={
                "segments": best_k,
                "bounds": list(bounds),
                "coarse_evals": work.coarse_evals,
                "iterations_assumed": iters,
                "tolerance_db": None if work.exact else work.tolerance_db,
                "exact": work.exact,
                "costs": "measured" if measured else "calibrated",
                "guard": round(parallel_guard(work), 4),
            },
        )

    def _fused(self, cands: list[Cand], work: Work, rec: RecruitResult, policy: str) -> Plan:
        """Fused tiles: one band per holder, the holder count and set, the exchange period and
        the warm-up from the predicted make-span (``peer.core.fused_plan``); the policy's
        choice is the pool of holders, this peer always in it."""
        if work.fused is None:
            raise PlanError("fused tiles need the canvas (Work.fused)")
        me = next(i for i, c in enumerate(cands) if c.peer.is_self)
        pool = sorted({me, *(i for i in rec.selected if 0 <= i < len(cands))})
        holders = [
            Holder(
                cands[i].peer.name,
                cands[i].peer.is_self,
                cands[i].peer.a_s,
                cands[i].peer.c_s,
                cands[i].wait_s,
                0.0 if cands[i].peer.is_self else cands[i].peer.rtt_s,
                cands[i].peer.bytes_per_s,
            )
            for i in pool
        ]
        canvas = replace(work.fused, steps=work.steps, area=work.area_units)
        lay = best_layout(holders, canvas)
        split = work.steps - lay.warmup
        shares = tuple(
            Share(
                cands[pool[i]].peer.name,
                cands[pool[i]].peer.addr,
                cands[pool[i]].peer.is_self,
                (b,),
                None,
                lay.makespan_s,
                split * lay.step_s[b],
            )
            for b, i in enumerate(lay.holders)
        )
        return Plan(
            mode="fused",
            shares=shares,
            policy=rec.policy,
            requested_policy=policy,
            provider=rec.provider,
            fallback=rec.fallback,
            predicted_makespan_s=lay.makespan_s,
            candidates=len(cands),
            detail={
                "bands": [list(b) for b in lay.bands],
                "halo": lay.halo,
                "sync_every": lay.sync_every,
                "warmup": lay.warmup,
                "step_s": [round(x, 6) for x in lay.step_s],
                "exchange_s": [round(x, 6) for x in lay.exchange_s],
                "bytes_per_step": round(lay.bytes_per_step, 1),
            },
        )

    def _split(
        self, cands: list[Cand], work: Work, mode: Mode, rec: RecruitResult, policy: str
    ) -> Plan:
        chosen = [i for i in rec.selected if 0 <= i < len(cands)]
        if not chosen:
            chosen = [next(i for i, c in enumerate(cands) if c.peer.is_self)]
        if rec.keep_shares and rec.shares is not None:
            shares = np.asarray([max(rec.shares[k], 0.0) for k in range(len(chosen))])
            if not shares.sum() > 0:
                shares = np.ones(len(chosen))
            counts = dict(zip(chosen, round_units(shares, work.units), strict=True))
        else:
            counts = _fill_units([cands[i] for i in chosen], chosen, work.units)
            counts = _prune(cands, counts, work.units)
            counts = _rebalance(cands, counts, chosen)
        return self._assemble(cands, counts, mode, rec, policy)

    def _assemble(
        self, cands: list[Cand], counts: dict[int, int], mode: Mode, rec: RecruitResult, policy: str
    ) -> Plan:
        shares: list[Share] = []
        nxt = 0
        # self first, then by predicted finish: deterministic unit order
        order = sorted(
            (i for i, n in counts.items() if n > 0),
            key=lambda i: (not cands[i].peer.is_self, cands[i].peer.name),
        )
        for i in order:
            n = counts[i]
            c = cands[i]
            shares.append(
                Share(
                    c.peer.name,
                    c.peer.addr,
                    c.peer.is_self,
                    tuple(range(nxt, nxt + n)),
                    None,
                    c.finish(n),
                    c.finish(n) - c.wait_s,
                )
            )
            nxt += n
        return Plan(
            mode=mode,
            shares=tuple(shares),
            policy=rec.policy,
            requested_policy=policy,
            provider=rec.provider,
            fallback=rec.fallback,
            predicted_makespan_s=max(s.predicted_s for s in shares),
            candidates=len(cands),
        )

    def _chain(self, cands: list[Cand], work: Work, rec: RecruitResult, policy: str) -> Plan:
        pool = sorted({*rec.selected, next(i for i, c in enumerate(cands) if c.peer.is_self)})
        pool = [i for i in pool if 0 <= i < len(cands)]
        steps, n = work.steps, work.units
        # per-step cost (one chain per image, each its own share), ready time (wait + round
        # trip), hand-off cost per peer
        per = {i: n * (cands[i].peer.a_s + cands[i].peer.c_s) for i in pool}
        ready = {
            i: cands[i].wait_s + (0.0 if cands[i].peer.is_self else cands[i].peer.rtt_s)
            for i in pool
        }
        hand = {
            i: (cands[i].peer.rtt_s + n * work.chain_bytes / max(cands[i].peer.bytes_per_s, 1.0))
            if not cands[i].peer.is_self
            else 0.0
            for i in pool
        }
        best: tuple[float, list[tuple[int, int, int, float]]] | None = None
        if rec.keep_shares and len(pool) > 1:
            # equal / random: the steps are split evenly along the chosen peers, earliest first
            order = sorted(pool, key=lambda i: (ready[i], cands[i].peer.name))
            counts = round_units(np.ones(len(order)), steps)
            t = 0.0
            hops: list[tuple[int, int, int, float]] = []
            start = 0
            for i, n in zip(order, counts, strict=True):
                if n == 0:
                    continue
                t = max(t + (hand[i] if hops else 0.0), ready[i]) + n * per[i]
                hops.append((i, start, start + n, t))
                start += n
            best = (t, hops)
        else:
            for i in pool:
                t = ready[i] + steps * per[i]
                if best is None or t < best[0] - 1e-12:
                    best = (t, [(i, 0, steps, t)])
            for i in pool:
                for j in pool:
                    if i == j or per[j] >= per[i]:
                        continue
                    k0 = (ready[j] - ready[i] - hand[j]) / per[i]
                    for k in {math.floor(k0), math.ceil(k0)}:
                        k = min(max(k, 1), steps - 1)
                        t1 = ready[i] + k * per[i]
                        t2 = max(t1 + hand[j], ready[j]) + (steps - k) * per[j]
                        if best is None or t2 < best[0] - 1e-12:
                            best = (t2, [(i, 0, k, t1), (j, k, steps, t2)])
        assert best is not None
        shares = tuple(
            Share(
                cands[i].peer.name,
                cands[i].peer.addr,
                cands[i].peer.is_self,
                (),
                (a, b),
                t,
                (b - a) * per[i],
            )
            for i, a, b, t in best[1]
        )
        return Plan(
            mode="chain",
            shares=shares,
            policy=rec.policy,
            requested_policy=policy,
            provider=rec.provider,
            fallback=rec.fallback,
            predicted_makespan_s=best[0],
            candidates=len(cands),
        )


def parallel_options(work: Work) -> ParallelOptions:
    return ParallelOptions(work.segments, work.tolerance_db, work.exact, work.coarse_evals)


def parallel_layout(
    origin: Cand, remotes: Sequence[Cand], work: Work, segments: int, origin_holds: bool = True
) -> tuple[tuple[int, ...], float, int]:
    """Bounds, predicted make-span and assumed iterations of pipelined Parareal over
    ``segments`` segments of steps [0, S-1): segment n held by ``[origin, *remotes][n % m]``
    (``[*remotes][n % m]`` when not ``origin_holds``), coarse solves and the last step at the
    origin (``peer.core.parallel_plan.simulate``)."""
    costs = parallel_costs(origin, remotes, work)
    learned = (
        work.measured.iterations_for(segments, work.tolerance_db, work.exact)
        if work.measured is not None
        else None
    )
    iters = work.iterations or min(
        learned or assumed_iterations(parallel_options(work), segments), max(segments, 1)
    )
    if origin_holds:
        holder = [s % (len(remotes) + 1) for s in range(segments)]
    else:
        holder = [1 + s % len(remotes) for s in range(segments)]
    bounds, t = best_bounds(max(work.steps - 1, 1), holder, costs, iters)
    return bounds, t, iters


def parallel_guard(work: Work) -> float:
    """The factor auto puts on parallel's prediction (``peer.core.parallel_costs``; 1 without
    measurements)."""
    return max(work.measured.guard, 1.0) if work.measured is not None else 1.0


def _fine_step(c: Cand, n: int) -> float:
    """One fine step of ``n`` images at this holder as the runtime runs them: a chain share per
    image (``peer.runtime.parallel``), so ``n`` forwards of one image, not one batch of ``n``
    (the batched model predicted the prototype's parallel requests 2-8x short)."""
    return n * (c.peer.a_s + c.peer.c_s)


def _step_cost(c: Cand, work: Work) -> float:
    """One fine step of the whole request at this holder: measured when past runs timed it."""
    m = work.measured
    if m is not None and c.peer.name in m.step_s:
        return m.step_s[c.peer.name] * work.units
    return _fine_step(c, work.units)


def parallel_costs(origin: Cand, remotes: Sequence[Cand], work: Work) -> Costs:
    """The schedule's costs for these holders: the calibrated model, or what past parallel runs
    measured (``work.measured``, per image). A holder without its own samples is assumed off
    its calibration by the median factor of the holders with samples; a remote without a
    measured hand-off takes the median of the measured remotes'."""
    n = work.units
    holders = [origin, *remotes]
    calib = [_fine_step(c, n) for c in holders]
    batch = origin.peer.a_s + origin.peer.c_s * n  # the coarse solves and last step: batched
    hop_cal = [0.0] + [
        c.peer.rtt_s + 2 * n * work.chain_bytes / max(c.peer.bytes_per_s, 1.0) + SHARE_OVERHEAD_S
        for c in remotes
    ]
    m = work.measured
    if m is None:
        return Costs(calib, hop_cal, work.coarse_evals * batch, batch, [c.wait_s for c in holders])
    factors = [
        m.step_s[c.peer.name] * n / cal
        for c, cal in zip(holders, calib, strict=True)
        if c.peer.name in m.step_s and cal > 0
    ]
    f = float(np.median(factors)) if factors else 1.0
    step_s = [
        m.step_s[c.peer.name] * n if c.peer.name in m.step_s else cal * f
        for c, cal in zip(holders, calib, strict=True)
    ]
    seen = [m.handoff_s[c.peer.name] * n for c in remotes if c.peer.name in m.handoff_s]
    hop_s = [m.handoff_s.get(origin.peer.name, 0.0) * n] + [
        m.handoff_s[c.peer.name] * n
        if c.peer.name in m.handoff_s
        else (float(np.median(seen)) if seen else cal)
        for c, cal in zip(remotes, hop_cal[1:], strict=True)
    ]
    coarse = (
        work.coarse_evals * m.coarse_eval_s * n
        if m.coarse_eval_s is not None
        else work.coarse_evals * batch * f
    )
    last = m.last_s * n if m.last_s is not None else batch * f
    return Costs(step_s, hop_s, coarse, last, [c.wait_s for c in holders])


def parallel_makespan(
    origin: Cand, remotes: Sequence[Cand], work: Work, segments: int, iterations: int
) -> float:
    """Predicted make-span of parallel steps (``parallel_layout``) at ``iterations``."""
    return parallel_layout(origin, remotes, replace(work, iterations=iterations), segments)[1]


def _fill_units(chosen: list[Cand], idx: list[int], units: int) -> dict[int, int]:
    """Exact water-filling over the chosen set (fixed cost counted as wait), then rounding."""
    u = [max(units * (c.unit_s + c.xfer_s_per_unit), 1e-12) for c in chosen]
    w = [c.wait_s + c.fixed_s for c in chosen]
    x, _level = water_fill(u, w)
    return dict(zip(idx, round_units(x, units), strict=True))


def _prune(cands: list[Cand], counts: dict[int, int], units: int) -> dict[int, int]:
    """Drop the smallest remote share while that lowers the rounded make-span."""

    def span(cs: dict[int, int]) -> float:
        return max(cands[i].finish(n) for i, n in cs.items() if n > 0)

    current = {i: n for i, n in counts.items() if n > 0}
    while len(current) > 1:
        remote = [i for i in current if not cands[i].peer.is_self]
        if not remote:
            break
        drop = min(remote, key=lambda i: (current[i], cands[i].peer.name))
        rest = [i for i in current if i != drop]
        alt = {i: n for i, n in _fill_units([cands[i] for i in rest], rest, units).items() if n > 0}
        if span(alt) < span(current) - 1e-9:
            current = alt
        else:
            break
    return current


def _rebalance(cands: list[Cand], counts: dict[int, int], allowed: list[int]) -> dict[int, int]:
    """Move single units off the latest-finishing peer while that lowers the make-span.

    Water-filling is exact for the continuous affine model; this repairs what whole units and
    padded forwards (``Cand.quantum``) do to it. Only peers the policy chose may gain units.
    """
    cur = {i: counts.get(i, 0) for i in allowed}
    cur.update(counts)
    for _ in range(sum(cur.values()) + len(cur)):
        span_of = {i: cands[i].finish(n) for i, n in cur.items() if n > 0}
        worst = max(span_of, key=lambda i: (span_of[i], cands[i].peer.name))
        span = span_of[worst]
        best_j, best_span = -1, span
        for j, n in cur.items():
            if j == worst:
                continue
            rest = max(
                [cands[j].finish(n + 1), cands[worst].finish(cur[worst] - 1)]
                + [v for k, v in span_of.items() if k not in (j, worst)]
            )
            if rest < best_span - 1e-9:
                best_j, best_span = j, rest
        if best_j < 0:
            break
        cur[worst] -= 1
        cur[best_j] += 1
    return {i: n for i, n in cur.items() if n > 0}


TILE_COVER_LIMIT = 0.5  # see _auto_offers


def _auto_offers(mode: str, applicable: Sequence[str], work: Work) -> bool:
    """Where fused bands apply and the masked tiles' windows cover at least
    ``TILE_COVER_LIMIT`` of the canvas, auto does not offer independent tiles: they change the
    image (27.7 dB against the untiled repair over scratches, 19.6-21.0 dB in a 25% hole; fused
    bands 46.8 / 41.9 dB) and their make-span predictions proved unreliable there (bench shares,
    4 x 0.5 core, 128x128, 50 steps: auto's two tile picks ran 2.83x and 1.10x local, predicted
    at a third of it; its six fused picks ran 0.41-0.47x local). A few tiles around a small mask
    are still offered (fused bands would denoise the whole canvas), ``mode: "tile"`` stays
    available, and auto offers tiles where fused bands do not apply (text pipelines, canvases
    under two bands)."""
    if mode != "tile" or "fused" not in applicable:
        return True
    return work.units * work.tile_area < TILE_COVER_LIMIT * work.area_units


def _no_bias(kind: str, mode: str) -> float:
    return 1.0


def _with_alternatives(plan: Plan, preds: dict[str, float]) -> Plan:
    return Plan(
        mode=plan.mode,
        shares=plan.shares,
        policy=plan.policy,
        requested_policy=plan.requested_policy,
        provider=plan.provider,
        fallback=plan.fallback,
        predicted_makespan_s=plan.predicted_makespan_s,
        candidates=plan.candidates,
        alternatives=preds,
        detail=plan.detail,
    )
