"""A fast event-driven simulator of many origins recruiting peers on stale views.

Every peer is a FIFO server. Requests arrive at every peer (Poisson, or the paper's slots);
the origin builds its candidates from its view, asks a recruiter for a split, and the shares are
reserved on the peers' queues at once (FIFO start = max(arrival, queue free time)), so the only
events are arrivals, processed in time order. Compute per denoising step on peer j is affine in
the share's images, ``a_j + c_j * images`` (a batch of 8 costs ~0.32x eight singles); a remote
share also pays a round trip, a setup cost and the transfer of its bytes both ways.

Stale views: origin i last heard about peer j ``age_ij(t) = (t + phase_ij) mod 2S`` seconds ago
(mean ``S``, a gossip refresh every ``2S`` with a random phase), and believes j's queue frees at
the value it had then, aged forward (drained) to now. Its own queue it sees exactly. The work
origin i itself sent to j since then is ``own_pending``. Peers crash for a while; a share sent to
a down peer is lost (the request fails at its deadline) until membership notices the crash
after ``detect_s`` and drops the peer from candidate lists until it recovers.

Runs are seeded: the workload (arrivals, sizes, crashes, view phases) depends only on the
config and seed, so every recruiter in a comparison sees the same trace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from policy.fleet.allocate import IntArray
from policy.fleet.features import CandidateArrays
from policy.fleet.heuristics import Choice
from policy.fleet.host import Job, SharedHost

FloatArray = NDArray[np.float64]

# Measured on this project's 16x16 digits UNet, one thread: 3.84 ms for one image per step,
# 10.19 ms for a batch of 8, so a + 8c = 0.32 * 8 (a + c) with these two constants.
STEP_FIXED_S = 2.93e-3
STEP_PER_IMAGE_S = 0.907e-3

IMAGE_CHOICES = (1, 2, 4, 8, 16)
IMAGE_PROBS = (0.3, 0.2, 0.2, 0.2, 0.1)
STEP_CHOICES = (20, 50)
STEP_PROBS = (0.5, 0.5)
PIXEL_CHOICES = (1.0, 4.0)  # work per image relative to 16x16 (32x32 canvases cost 4x)
PIXEL_PROBS = (0.8, 0.2)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated fleet and workload. Times in seconds, rates per second."""

    n_peers: int = 16
    load: float = 0.6  # offered work (each request as one batch) over total capacity
    staleness_s: float = 0.5  # mean view age of other peers
    n_requests: int = 2000
    warmup_frac: float = 0.05  # leading requests left out of the metrics
    arrivals: Literal["poisson", "slots"] = "poisson"
    slot_s: float = 1.0
    speed_low: float = 0.3  # peer speed relative to the reference CPU, uniform in [low, high]
    speed_high: float = 1.0
    bw_low: float = 20e6  # bytes/s, symmetric pairwise, uniform
    bw_high: float = 100e6
    rtt_s: float = 0.002
    setup_s: float = 0.005  # per remote share: RPC, (de)serialisation, scheduling
    bytes_per_image: float = 50e3  # per 16x16 image, each way, scaled by pixels
    deadline_factor: float = 4.0  # deadline = factor x solo time on a mid-speed idle peer
    deadline_min_s: float = 1.0
    crash_rate: float = 0.001  # crashes per peer-second
    crash_len_s: tuple[float, float] = (2.0, 10.0)
    detect_s: float = 1.0  # membership notices a crash this long after it
    snapshot_s: float = 0.05  # resolution of the stale-view history


PRESETS: dict[str, SimConfig] = {
    "eval": SimConfig(),
    "quick": SimConfig(n_peers=8, n_requests=400),
}


@dataclass(frozen=True, slots=True)
class RequestCtx:
    """What a recruiter sees for one request: the candidates and the request."""

    index: int  # request number in the trace
    origin: int
    peers: IntArray  # peer index of each candidate
    arr: CandidateArrays
    units: int
    deadline_s: float
    now: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request (for learning): per chosen candidate, the realised wait."""

    makespan_s: float
    failed: bool
    positions: IntArray
    counts: IntArray
    realised_wait: FloatArray  # queue wait actually met, per chosen candidate (s)
    busy_s: float  # compute seconds the request consumed over all peers


Recruit = Callable[[RequestCtx, np.random.Generator], Choice]
Observer = Callable[[RequestCtx, Outcome], None]


@dataclass(slots=True)
class RunResult:
    makespan: FloatArray
    failed: NDArray[np.bool_]
    decision_us: FloatArray
    n_shares: NDArray[np.int64]
    externality: FloatArray | None = None  # per request: seconds of delay imposed on later jobs
    peer_busy: FloatArray | None = None  # compute seconds per peer over the whole run

    def summary(self) -> dict[str, float]:
        ms = self.makespan
        return {
            "avg_makespan": float(np.mean(ms)),
            "p95_makespan": float(np.percentile(ms, 95)),
            "failure_rate": float(np.mean(self.failed)),
            "decision_us_p50": float(np.percentile(self.decision_us, 50)),
            "decision_us_p99": float(np.percentile(self.decision_us, 99)),
            "avg_shares": float(np.mean(self.n_shares)),
            "requests": float(ms.shape[0]),
        }


@dataclass(frozen=True, slots=True)
class Trace:
    """The seeded workload and fleet: identical for every recruiter in a comparison."""

    cfg: SimConfig
    speed: FloatArray
    bw: FloatArray  # (N, N) bytes/s
    times: FloatArray
    origin_u: FloatArray  # uniform draws used to pick the origin among live peers
    images: IntArray
    steps: IntArray
    pixels: FloatArray
    deadline: FloatArray
    phase: FloatArray  # (N, N) gossip phase
    crashes: list[list[tuple[float, float]]]
    # Replaying a measured cluster (``peer.harness.scenario_sim``); the defaults keep the
    # synthetic fleet: per-peer step costs ``a_s + c_s * images`` instead of the reference
    # constants over ``speed``; ``cost_events`` (time, peer, factor) multiply a peer's step
    # cost from that time on (a CPU quota change); ``overhead_s`` is added to the make-span of
    # every request that peer originates (HTTP, planning, encoding: what the client sees on
    # top of the shares); ``replan_lost`` re-runs a share sent to a down peer on the origin
    # once membership notices (``detect_s``) instead of failing the request.
    a_s: FloatArray | None = None
    c_s: FloatArray | None = None
    cost_events: tuple[tuple[float, int, float], ...] = ()
    overhead_s: FloatArray | None = None
    replan_lost: bool = False
    # One shared host (``policy.fleet.host``): when ``host_cores`` is set, every peer computes on
    # a machine of that many cores, asking for ``demand[j]`` cores while busy (its CPU quota);
    # ``a_s``/``c_s`` are then the costs at full pace, and the host runs every share as an
    # event simulation (FIFO per peer, busy peers sharing the cores): the make-spans are
    # those of the finished run, the waits a recruiter sees those projected at its decision.
    # ``demand_events`` (time, peer, cores) change a peer's demand (a quota change).
    host_cores: float | None = None
    demand: FloatArray | None = None
    demand_events: tuple[tuple[float, int, float], ...] = ()


def _mean_ref_work() -> float:
    m = 0.0
    for k, pk in zip(IMAGE_CHOICES, IMAGE_PROBS, strict=True):
        for s, ps in zip(STEP_CHOICES, STEP_PROBS, strict=True):
            for p, pp in zip(PIXEL_CHOICES, PIXEL_PROBS, strict=True):
                m += pk * ps * pp * s * p * (STEP_FIXED_S + STEP_PER_IMAGE_S * k)
    return m


def make_trace(cfg: SimConfig, seed: int) -> Trace:
    if not 1 <= cfg.n_peers <= 64:
        raise ValueError(f"n_peers must be in 1..64, got {cfg.n_peers}")
    if not cfg.load > 0:
        raise ValueError(f"load must be > 0, got {cfg.load}")
    if cfg.staleness_s < 0:
        raise ValueError(f"staleness_s must be >= 0, got {cfg.staleness_s}")
    rng = np.random.default_rng(
        [seed, cfg.n_peers, round(100 * cfg.load), round(100 * cfg.staleness_s)]
    )
    n = cfg.n_peers
    speed = rng.uniform(cfg.speed_low, cfg.speed_high, n)
    bw = rng.uniform(cfg.bw_low, cfg.bw_high, (n, n))
    bw = np.triu(bw, 1) + np.triu(bw, 1).T + np.eye(n) * cfg.bw_high
    lam = cfg.load * float(np.sum(speed)) / _mean_ref_work()
    r = cfg.n_requests
    if cfg.arrivals == "poisson":
        times = np.cumsum(rng.exponential(1.0 / lam, r))
    else:
        per_slot = lam * cfg.slot_s
        counts = rng.poisson(per_slot, math.ceil(r / max(per_slot, 1e-9)) + 10)
        slots = np.repeat(np.arange(counts.shape[0]), counts)[:r]
        times = slots * cfg.slot_s + np.arange(slots.shape[0]) * 1e-9
    images = rng.choice(np.array(IMAGE_CHOICES), r, p=IMAGE_PROBS).astype(np.int64)
    steps = rng.choice(np.array(STEP_CHOICES), r, p=STEP_PROBS).astype(np.int64)
    pixels = rng.choice(np.array(PIXEL_CHOICES), r, p=PIXEL_PROBS)
    mid = 0.5 * (cfg.speed_low + cfg.speed_high)
    solo = steps * pixels * (STEP_FIXED_S + STEP_PER_IMAGE_S * images) / mid
    deadline = np.maximum(cfg.deadline_min_s, cfg.deadline_factor * solo)
    period = 2.0 * cfg.staleness_s
    phase = rng.uniform(0.0, period, (n, n)) if period > 0 else np.zeros((n, n))
    horizon = float(times[-1]) + 1.0
    crashes: list[list[tuple[float, float]]] = []
    for _ in range(n):
        windows: list[tuple[float, float]] = []
        t = 0.0
        while cfg.crash_rate > 0:
            t += float(rng.exponential(1.0 / cfg.crash_rate))
            if t > horizon:
                break
            length = float(rng.uniform(*cfg.crash_len_s))
            windows.append((t, t + length))
            t += length
        crashes.append(windows)
    return Trace(
        cfg=cfg,
        speed=speed,
        bw=bw,
        times=times,
        origin_u=rng.random(r),
        images=images,
        steps=steps,
        pixels=pixels,
        deadline=deadline,
        phase=phase,
        crashes=crashes,
    )


def _down_at(windows: list[tuple[float, float]], t: float, lag: float) -> bool:
    """Whether the peer is down at ``t`` (lag 0) or known down (crashed at least ``lag`` ago)."""
    for a, b in windows:
        if a + lag <= t < b:
            return True
        if a > t:
            return False
    return False


def run(
    trace: Trace,
    recruit: Recruit,
    seed: int = 0,
    observer: Observer | None = None,
    time_decisions: bool = True,
    track_jobs: bool = False,
) -> RunResult:
    """Drive every request of ``trace`` through ``recruit``; returns per-request metrics."""
    cfg = trace.cfg
    n = cfg.n_peers
    rng = np.random.default_rng([seed, 7919])
    a = STEP_FIXED_S / trace.speed if trace.a_s is None else np.asarray(trace.a_s, dtype=float)
    c = STEP_PER_IMAGE_S / trace.speed if trace.c_s is None else np.asarray(trace.c_s, dtype=float)
    base_a, base_c = a, c
    events = sorted(trace.cost_events)
    next_event = 0
    mult = np.ones(n)
    peer_busy = np.zeros(n)
    qfree = np.zeros(n)
    stale = cfg.staleness_s > 0
    period = 2.0 * cfg.staleness_s
    dt = cfg.snapshot_s
    n_snap = int(float(trace.times[-1]) / dt) + 3
    snaps = np.zeros((n_snap, n)) if stale else np.zeros((1, n))
    filled = 0  # snapshots [0, filled) hold queue-free times as of k * dt
    # per origin: recent dispatches (time, peer, seconds) for own-pending accounting
    recent_t: list[list[float]] = [[] for _ in range(n)]
    recent_p: list[list[int]] = [[] for _ in range(n)]
    recent_s: list[list[float]] = [[] for _ in range(n)]
    r = trace.times.shape[0]
    makespan = np.zeros(r)
    failed = np.zeros(r, dtype=bool)
    dec_us = np.zeros(r)
    n_shares = np.zeros(r, dtype=np.int64)
    lost_req = np.zeros(r, dtype=bool)
    jobs: list[list[tuple[int, float, float, float]]] = [[] for _ in range(n)]
    host = _Host.of(trace, r)
    for q in range(r):
        t = float(trace.times[q])
        if next_event < len(events) and events[next_event][0] <= t:
            while next_event < len(events) and events[next_event][0] <= t:
                _at, peer, factor = events[next_event]
                mult[peer] = factor
                next_event += 1
            a, c = base_a * mult, base_c * mult
        if host is not None:
            host.advance(t, qfree)
        if stale:
            upto = min(int(t / dt) + 1, n_snap)
            if upto > filled:
                snaps[filled:upto] = qfree
                filled = upto
        live = [j for j in range(n) if not _down_at(trace.crashes[j], t, 0.0)]
        if not live:
            makespan[q] = trace.deadline[q]
            failed[q] = True
            continue
        origin = live[min(int(trace.origin_u[q] * len(live)), len(live) - 1)]
        known = np.array(
            [j for j in range(n) if j == origin or not _down_at(trace.crashes[j], t, cfg.detect_s)],
            dtype=np.int64,
        )
        steps = float(trace.steps[q] * trace.pixels[q])
        units = int(trace.images[q])
        remote = known != origin
        # believed waits
        own: FloatArray
        if stale:
            age = np.where(remote, (t + trace.phase[origin, known]) % period, 0.0)
            k_idx = np.clip(((t - age) / dt).astype(np.int64), 0, filled - 1)
            believed = snaps[k_idx, known]
            believed = np.where(remote, believed, qfree[known])
            rt = recent_t[origin]
            if rt:
                tt = np.asarray(rt)
                keep = tt > t - period
                if not keep.all():
                    cut = int(np.argmax(keep)) if keep.any() else len(rt)
                    del rt[:cut], recent_p[origin][:cut], recent_s[origin][:cut]
                    tt = tt[cut:]
            if rt:
                pp = np.asarray(recent_p[origin])
                ss = np.asarray(recent_s[origin])
                since = np.full(n, np.inf)
                since[known] = t - age
                mask = tt > since[pp]
                own_full = np.bincount(pp[mask], weights=ss[mask], minlength=n)
                own = own_full[known].astype(np.float64)
            else:
                own = np.zeros(known.shape[0])
        else:
            age = np.zeros(known.shape[0])
            believed = qfree[known]
            own = np.zeros(known.shape[0])
        wait = np.maximum(believed - t, 0.0)
        xfer = np.where(
            remote, 2.0 * cfg.bytes_per_image * trace.pixels[q] / trace.bw[origin, known], 0.0
        )
        # what the origin believes a step costs: on a shared host, the calibration scaled by
        # each peer's EWMA of its shares' wall over calibrated seconds (as the runtime's cost
        # tracker); else the true costs
        a_seen, c_seen = (a, c) if host is None else (base_a * host.belief, base_c * host.belief)
        fixed = steps * a_seen[known] + np.where(remote, cfg.rtt_s + cfg.setup_s, 0.0)
        arr = CandidateArrays(
            is_self=(~remote).astype(np.float64),
            wait=wait,
            age=age,
            fixed=fixed,
            unit=steps * c_seen[known],
            xfer=xfer,
            own=own,
        )
        ctx = RequestCtx(q, origin, known, arr, units, float(trace.deadline[q]), t)
        if time_decisions:
            t0 = time.perf_counter_ns()
            pos, cnt, _pred = recruit(ctx, rng)
            dec_us[q] = (time.perf_counter_ns() - t0) / 1000.0
        else:
            pos, cnt, _pred = recruit(ctx, rng)
        # execute
        span = 0.0
        lost = False
        busy = 0.0
        realised = np.zeros(pos.shape[0])
        placed: list[tuple[int, float, float, float, float]] = []
        placed_m: list[int] = []
        for m in range(pos.shape[0]):
            i = int(pos[m])
            j = int(known[i])
            x = int(cnt[m])
            work = steps * (a[j] + c[j] * x)
            busy += work
            if j == origin:
                arrive = t
                back = 0.0
            else:
                half = 0.5 * x * xfer[i]
                arrive = t + 0.5 * cfg.rtt_s + cfg.setup_s + half
                back = 0.5 * cfg.rtt_s + half
                if _down_at(trace.crashes[j], arrive, 0.0):
                    if not trace.replan_lost:
                        lost = True
                        continue
                    # the origin re-plans the share onto itself once membership notices
                    j = origin
                    busy -= work
                    work = steps * (a[j] + c[j] * x)
                    busy += work
                    arrive = t + cfg.detect_s
                    back = 0.0
            if stale:
                recent_t[origin].append(t)
                recent_p[origin].append(j)
                recent_s[origin].append(work)
            if host is not None:  # queued on the shared host below, all shares at once
                placed.append((j, arrive, work, back, steps * (base_a[j] + base_c[j] * x)))
                placed_m.append(m)
                continue
            start = max(arrive, float(qfree[j]))
            realised[m] = start - arrive
            qfree[j] = start + work
            peer_busy[j] += work
            if track_jobs:
                jobs[j].append((q, arrive, start, work))
            span = max(span, start + work + back - t)
        if host is not None and placed:
            span, waits = host.dispatch(q, origin, placed, qfree)
            realised[placed_m] = waits
        if trace.overhead_s is not None:
            span += float(trace.overhead_s[origin])
        dl = float(trace.deadline[q])
        if lost:
            span = max(span, dl)
            lost_req[q] = True
        makespan[q] = span
        failed[q] = lost or span > dl
        n_shares[q] = pos.shape[0]
        if observer is not None:
            observer(ctx, Outcome(span, bool(failed[q]), pos, cnt, realised, busy))
    if host is not None:  # the make-spans once every share has run on the shared host
        host.settle(makespan, failed, trace, lost_req, peer_busy)
    skip = int(cfg.warmup_frac * r)
    ext = _externality(jobs, r)[skip:] if track_jobs else None
    if track_jobs and host is not None:  # queueing as run, plus contention on queued shares
        ext = (_externality(host.log(n), r) + host.ext)[skip:]
    return RunResult(makespan[skip:], failed[skip:], dec_us[skip:], n_shares[skip:], ext, peer_busy)


BELIEF_ALPHA = 0.3  # the runtime's ``ewma_alpha`` (peer.core.config)


@dataclass(slots=True)
class _Host:
    """The shared-host state of one run (:class:`policy.fleet.host.SharedHost`)."""

    host: SharedHost
    events: list[tuple[float, int, float]]
    shares: list[list[Job]]  # per request, its shares
    origin: NDArray[np.int64]
    ext: FloatArray  # per request: seconds it pushed other requests' results back
    belief: FloatArray  # per peer: EWMA of its shares' wall / calibrated seconds
    # the last projection: exact until the next arrival or demand change (none came between)
    proj: tuple[dict[int, tuple[float, float]], list[float]] | None = None

    @staticmethod
    def of(trace: Trace, r: int) -> _Host | None:
        if trace.host_cores is None:
            return None
        n = trace.cfg.n_peers
        demand = [1.0] * n if trace.demand is None else [float(d) for d in trace.demand]
        return _Host(
            host=SharedHost(float(trace.host_cores), demand),
            events=sorted(trace.demand_events),
            shares=[[] for _ in range(r)],
            origin=np.zeros(r, dtype=np.int64),
            ext=np.zeros(r),
            belief=np.ones(n),
        )

    def advance(self, t: float, qfree: FloatArray) -> None:
        """Play the host forward to ``t``; ``qfree`` gets each peer's projected end."""
        while self.events and self.events[0][0] <= t:
            at, peer, cores = self.events.pop(0)
            self.host.set_demand(peer, cores, at)
            self.proj = None
        self.host.run_until(t)
        for job in self.host.done:
            if job.nominal > 0:
                ratio = min(max((job.finish - job.start) / job.nominal, 0.05), 50.0)
                self.belief[job.peer] += BELIEF_ALPHA * (ratio - self.belief[job.peer])
        self.host.done.clear()
        if self.proj is None:
            self.proj = self.host.project()
        qfree[:] = self.proj[1]

    def dispatch(
        self,
        q: int,
        origin: int,
        shares: list[tuple[int, float, float, float, float]],
        qfree: FloatArray,
    ) -> tuple[float, FloatArray]:
        """Queue request ``q``'s shares (peer, arrive, full-pace seconds, back, calibrated s).

        Returns the make-span the projection gives it and each share's projected queue wait;
        charges it with how much later the shares already queued now end (over their
        requests' share counts), and leaves each peer's projected end in ``qfree``."""
        before = self.proj[0] if self.proj is not None else self.host.project()[0]
        jobs = [
            self.host.add(Job(q, j, arrive, work, back, nominal))
            for j, arrive, work, back, nominal in shares
        ]
        self.proj = self.host.project()
        after, ends = self.proj
        qfree[:] = ends
        self.origin[q] = origin
        self.shares[q] = jobs
        waits = np.array([after[j.key][0] - j.arrive for j in jobs])
        t = self.host.now
        span = max((after[j.key][1] + j.back for j in jobs), default=t) - t
        delayed = {
            k: after[k][1] - f0
            for k, (_s, f0) in before.items()
            if k in after and after[k][1] > f0 + 1e-12
        }
        if delayed:
            owner = {j.key: j.request for j in self.host.jobs()}
            for k, d in delayed.items():
                rq = owner.get(k)
                if rq is not None and rq != q:
                    self.ext[q] += d / max(len(self.shares[rq]), 1)
        return span, waits

    def log(self, n: int) -> list[list[tuple[int, float, float, float]]]:
        """Per peer, its shares as run: (request, arrive, start, wall seconds), by start."""
        out: list[list[tuple[int, float, float, float]]] = [[] for _ in range(n)]
        for jobs in self.shares:
            for j in jobs:
                out[j.peer].append((j.request, j.arrive, j.start, j.finish - j.start))
        for log in out:
            log.sort(key=lambda e: e[2])
        return out

    def settle(
        self,
        makespan: FloatArray,
        failed: NDArray[np.bool_],
        trace: Trace,
        lost: NDArray[np.bool_],
        busy: FloatArray,
    ) -> None:
        """Every request's make-span once every share has run (plus the origin's overhead)."""
        self.host.run_until(math.inf)
        busy[:] = self.host.busy_s
        for q, jobs in enumerate(self.shares):
            if not jobs:
                continue
            o = 0.0 if trace.overhead_s is None else float(trace.overhead_s[self.origin[q]])
            span = max(j.finish + j.back for j in jobs) - float(trace.times[q]) + o
            dl = float(trace.deadline[q])
            makespan[q] = max(span, dl) if lost[q] else span
            failed[q] = bool(lost[q]) or makespan[q] > dl


def _externality(jobs: list[list[tuple[int, float, float, float]]], r: int) -> FloatArray:
    """Per request, the delay its shares imposed on the requests queued behind them.

    A share of ``w`` seconds pushes back every later job of the same queued chain on its peer
    (each of which waited for its predecessor) by up to ``w``. A later request finishes with
    its slowest share, so a request split over ``k`` shares counts ``1/k`` per delayed share
    (it is delayed about once, not ``k`` times, when an earlier request sits ahead of all its
    shares); ``w`` times that weighted count is charged to the request that sent the share.
    """
    shares = np.zeros(r)
    for log in jobs:
        for q, _arrive, _start, _work in log:
            shares[q] += 1.0
    ext = np.zeros(r)
    for log in jobs:
        chain = 0.0
        for m in range(len(log) - 1, -1, -1):
            q, _arrive, start, work = log[m]
            ext[q] += work * chain
            if m > 0:
                prev_finish = log[m - 1][2] + log[m - 1][3]
                behind = start <= prev_finish + 1e-12 and log[m][1] < prev_finish
                chain = chain + 1.0 / shares[q] if behind else 0.0
    return ext


def with_cell(cfg: SimConfig, n_peers: int, load: float, staleness_s: float) -> SimConfig:
    return replace(cfg, n_peers=n_peers, load=load, staleness_s=staleness_s)
