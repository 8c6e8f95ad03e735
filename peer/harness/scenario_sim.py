"""``amcoedge scenario sim FILE`` and ``amcoedge scenario compare REAL SIM``.

``sim`` replays a scenario file (peers, quotas, links, workload, events) in the fleet simulator
(:mod:`policy.fleet.sim`) with the same seeded schedule :func:`peer.harness.scenario.schedule`
draws for ``scenario run``, and writes the same ``results.json`` keys and table, so the two can
be set side by side by ``compare``.

The cost model, stated:

- **Compute.** One denoising step of ``x`` images on peer ``j`` costs ``k_j (a + c x)`` seconds.
  ``(a, c)`` is the engine's own calibration on this machine (``Backend.calibrate``: one thread,
  batches 1/2/4/8, the same fit the runtime makes at start), measured once and kept in a JSON
  file (``--costs``). ``k_j = 1 / min(quota_j, threads)`` x ``threads`` (a CPU quota of ``q``
  cores slows a single-thread peer by ``1/q``; no quota: 1). A ``quota`` event multiplies the
  peer's cost by the ratio of the two factors from then on. ``--fit REAL`` replaces ``k_j`` by
  the ratio of the compute seconds a real run measured on that peer to what ``(a, c)`` predicts
  for the same shares (this folds in the machine's contention, which the quota model cannot
  know), and reports both.
- **The host.** The peers of a scenario share one machine. With ``--host-cores`` (default
  ``fit``) the replay runs them on a host of ``C`` cores (:mod:`policy.fleet.host`: each busy
  peer asks for its quota, the cores are water-filled among the busy peers as the kernel's fair
  scheduler does, every share is played out as an event simulation), and the origin sees each
  peer's cost as the runtime's cost tracker does (the calibration scaled by an EWMA of its
  shares' wall over calibrated seconds) and the waits the host projects. ``fit`` takes ``C``
  from the real run: the value that best makes each peer's full-pace cost one constant over
  its shares, given which peers computed at the same time (``sim.params.host_fit`` states the
  spread with and without); where the run shows no contention, ``C`` is a core per peer (no
  contention, the costs still learned as the runtime learns them, e.g. after a quota change);
  without ``--fit``, this machine's core count. ``none`` turns the host off (every peer its
  own machine, the true costs seen at once).
- **Overheads.** A remote share pays ``setup_s`` (RPC, (de)serialisation, dispatch) plus its
  bytes over the link; every request pays ``overhead_s`` on top of its shares (HTTP, planning,
  PNG encoding: the client's wall time over the origin's make-span). With ``--fit`` both are the
  means the real run measured (``setup_s`` from the remote shares' end - start - queue -
  compute, ``overhead_s`` per origin from wall - make-span), else the defaults below. Means,
  not medians: the table compares means, and under load the overheads have a long tail
  (greedy's on farlink.toml: mean 0.119 s, median 0.028 s).
- **Views.** Remote waits are read from a view ``--view-age`` seconds old on average (uniform
  phase, drained forward to now) plus the origin's own dispatches since (its ledger); its own
  queue exact. The runtime refreshes load just before deciding, so the default is small.
- **Failures.** A crashed (or stopped) peer is out from the event until it serves again
  (``restart_s`` after its restart: with ``--fit``, the median of the real run's restarts, a
  restart it never saw serve counting as never); origins drop it ``detect_s`` after the crash,
  and a share sent to it meanwhile is re-planned onto the origin once membership notices.
- **Not modelled** (listed in ``results.json`` ``sim.unmodelled`` when a file uses them):
  link-rate events, partitions (link_down counts as the peer being down), the steps-mode chain
  (one image's chain runs where the policy puts it).
- **Repairs** are tiles, as the runtime plans them: the scenario's canvas (a mask over its
  central half) in native-size windows with a 4-pixel halo, the masked ones only, each run
  once per class of the shipped model (an unlabelled repair averages every class,
  ``Runner.rows``): a request of ``tiles x classes`` forward rows that the recruiter splits
  (at row, not whole-tile, granularity) with the step cost of a batch of that many images.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from peer.harness import headroom
from peer.harness.records import request_figures
from peer.harness.scenario import Scenario, ScenarioError, load_scenario, schedule

DEFAULT_SETUP_S = 0.01  # per remote share: RPC, msgpack, dispatch
DEFAULT_OVERHEAD_S = 0.02  # per request: HTTP, plan, PNG encode, client
DEFAULT_VIEW_AGE_S = 0.02  # fresh load refreshed with one round trip before deciding
DEFAULT_DETECT_S = 2.0
DEFAULT_RESTART_S = 6.0
NEVER_BACK_S = 1e6  # a restart the real run never saw serve: out for the rest of the replay
BYTES_PER_IMAGE = 512.0  # the planner's default bytes per unit, both ways
LOOPBACK_BYTES_PER_S = 1e9
POLICY_TO_RECRUITER = {
    "onnx": "learned",
    "greedy": "greedy",
    "random": "random",
    "equal": "equal",
    "local": "local",
}


class SimScenarioError(ScenarioError):
    code = "bad_sim_input"


@dataclass(frozen=True, slots=True)
class EngineCosts:
    """The engine's per-step cost on this machine: ``a_s + c_s * images`` seconds."""

    a_s: float
    c_s: float
    engine: str = "onnx"
    threads: int = 1
    source: str = "measured"


@dataclass(frozen=True, slots=True)
class SimParams:
    setup_s: float = DEFAULT_SETUP_S
    overhead_s: tuple[float, ...] | None = None  # per origin; None: DEFAULT_OVERHEAD_S each
    view_age_s: float = DEFAULT_VIEW_AGE_S
    detect_s: float = DEFAULT_DETECT_S
    restart_s: float = DEFAULT_RESTART_S
    scale: tuple[float, ...] | None = None  # per-peer k_j; None: the quota model
    host_cores: float | None = None  # the shared host's cores; None: peers do not contend
    host_fit: Mapping[str, Any] | None = None  # how the fit chose host_cores
    fitted_from: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def measure_engine_costs(engine: str = "onnx", threads: int = 1) -> EngineCosts:
    """Calibrate the shipped model on ``engine`` here, as a peer does at start."""
    from peer.diffusion import load_backend

    be = load_backend(engine=engine, threads=threads)
    cal = be.calibrate(batch_sizes=(1, 2, 4, 8), repeats=5, warmup=2)
    return EngineCosts(float(cal.a_s), float(cal.c_s), str(be.engine), threads, "measured")


def load_costs(path: Path | None, engine: str, threads: int, measure: bool = True) -> EngineCosts:
    """Costs from ``path`` if it exists; else measured here (and written to ``path`` if given)."""
    if path is not None and path.is_file():
        try:
            raw = json.loads(path.read_text())
            costs = EngineCosts(
                float(raw["a_s"]),
                float(raw["c_s"]),
                str(raw.get("engine", engine)),
                int(raw.get("threads", threads)),
                f"file {path}",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SimScenarioError(f"{path}: not a costs file ({exc})") from None
        if not (costs.a_s >= 0 and costs.c_s >= 0 and costs.a_s + costs.c_s > 0):
            raise SimScenarioError(f"{path}: a_s and c_s must be >= 0, not both 0")
        return costs
    if not measure:
        raise SimScenarioError(f"no costs file at {path}")
    costs = measure_engine_costs(engine, threads)
    if path is not None:
        path.write_text(json.dumps(asdict(costs) | {"measured_at": time.time()}, indent=2))
    return costs


def quota_factor(quota: float | None, threads: int) -> float:
    """How much slower than an unthrottled ``threads``-thread peer a quota of ``quota`` cores is."""
    if quota is None:
        return 1.0
    return max(1.0, threads / max(quota, 1e-6))


def demand_of(quota: float | None, threads: int) -> float:
    """The cores a busy peer asks for: its quota, at most its threads (no quota: its threads)."""
    return float(threads) if quota is None else min(quota, float(threads))


def _peak_quotas(sc: Scenario) -> list[float | None]:
    """Each peer's largest quota over the run (its first, or a later ``quota`` event's)."""
    peak = peer_quotas(sc)
    for ev in sc.events:
        if ev.action == "quota" and ev.peer is not None and ev.cores is not None:
            q = peak[ev.peer]
            peak[ev.peer] = ev.cores if q is None else max(q, ev.cores)
    return peak


def peer_quotas(sc: Scenario) -> list[float | None]:
    if sc.quotas is None:
        return [None] * sc.peers
    return [sc.quotas[i] if i < len(sc.quotas) else sc.quotas[-1] for i in range(sc.peers)]


# -- fitting from a real run --------------------------------------------------------------------


UNET_CONFIG = Path(__file__).resolve().parents[1] / "diffusion/assets/digits16/unet/config.json"
TILE_HALO = 4  # ``peer.runtime.node.Node.plan_tiles``


@functools.cache
def repair_rows() -> int:
    """Forward rows per repaired window of an unlabelled repair: the shipped model's classes."""
    cfg = json.loads(UNET_CONFIG.read_text())
    return max(int(cfg.get("num_class_embeds") or 1), 1)


@functools.cache
def repair_tiles(size: int) -> int:
    """Masked windows of a scenario repair of ``size`` (``scenario_run.repair_canvas``)."""
    from peer.diffusion.tiles import plan_tiles
    from peer.harness.scenario_run import repair_canvas

    native = int(json.loads(UNET_CONFIG.read_text())["sample_size"])
    _, mask = repair_canvas(size, 0)
    tiles = plan_tiles(size, size, tile=native, halo=TILE_HALO)
    return max(sum(1 for t in tiles if mask[t.y0 : t.y1, t.x0 : t.x1].any()), 1)


def _kind_steps(real: Mapping[str, Any]) -> list[int]:
    kinds = real.get("kinds")
    if not isinstance(kinds, list) or not kinds:
        raise SimScenarioError("real results: no 'kinds' list")
    return [int(k["steps"]) for k in kinds]


def fit_params(
    real: Mapping[str, Any],
    sc: Scenario,
    costs: EngineCosts,
    base: SimParams,
    fit_host: bool = True,
    max_cores: float = 64.0,
) -> SimParams:
    """Per-peer cost factors and overheads from the records of a real ``scenario run``.

    With ``fit_host`` the shared host's cores are fitted too (:func:`fit_host_cores`, at most
    ``max_cores``), and each peer's factor is its full-pace cost (what its shares would have
    taken had they got every core they asked for); else ``base.host_cores`` is kept."""
    steps_of = _kind_steps(real)
    chains = [str(k.get("mode")) in ("steps", "chain") for k in real["kinds"]]
    # a repair share's ``units`` are tiles, each run once per class
    per_unit = [repair_rows() if k.get("request") == "repair" else 1 for k in real["kinds"]]
    policies = real.get("policies")
    if not isinstance(policies, Mapping) or not policies:
        raise SimScenarioError("real results: no 'policies' table")
    measured = [0.0] * sc.peers
    predicted = [0.0] * sc.peers
    # the replay applies the file's quota events itself (cost events): what a share measured
    # after one is compared with the prediction at the quota then in force, not the first one
    quota_events = sorted(
        (ev.at_s, ev.peer, ev.cores)
        for ev in sc.events
        if ev.action == "quota" and ev.peer is not None and ev.cores is not None
    )
    first_q = peer_quotas(sc)

    def event_factor(p: int, at_s: float) -> float:
        q = first_q[p]
        for t, peer, cores in quota_events:
            if peer == p and t <= at_s:
                q = cores
        return quota_factor(q, sc.threads) / quota_factor(first_q[p], sc.threads)

    def demand_at(p: int, at_s: float) -> float:
        q = first_q[p]
        for t, peer, cores in quota_events:
            if peer == p and t <= at_s:
                q = cores
        return demand_of(q, sc.threads)

    setup: list[float] = []
    over: list[list[float]] = [[] for _ in range(sc.peers)]
    restart: list[float] = []
    runs: list[list[_Share]] = []
    for pol in policies.values():
        shares: list[_Share] = []
        runs.append(shares)
        for ev in pol.get("events_applied", []):
            if ev.get("action") == "restart" and "ready_at_s" in ev:
                restart.append(float(ev["ready_at_s"]) - float(ev["applied_at_s"]))
            elif ev.get("action") == "restart":  # it did not serve again before the run ended
                restart.append(NEVER_BACK_S)
        for rec in pol.get("records", []):
            if not rec.get("ok") or "timing" not in rec:
                continue
            steps = steps_of[int(rec["kind"])]
            origin = str(rec["origin"])
            o = int(origin[1:])
            if "wall_s" in rec and "makespan_s" in rec and 0 <= o < sc.peers:
                over[o].append(float(rec["wall_s"]) - float(rec["makespan_s"]))
            for t in rec["timing"]:
                p = int(str(t["peer"])[1:])
                units = t.get("units")
                comp = t.get("compute_s")
                if not (0 <= p < sc.peers) or not isinstance(units, int) or not comp:
                    continue
                measured[p] += float(comp)
                at = float(rec.get("at_s", 0.0)) + float(t.get("start_s", 0.0))
                if chains[int(rec["kind"])]:  # a relay's share: ``units`` are steps of the batch
                    work = units * (costs.a_s + costs.c_s * int(rec.get("images", 1)))
                else:
                    work = steps * (costs.a_s + costs.c_s * units * per_unit[int(rec["kind"])])
                predicted[p] += work * event_factor(p, at)
                t0 = (
                    float(rec.get("sent_s", rec.get("at_s", 0.0)))
                    + float(t.get("start_s", 0.0))
                    + float(t.get("queue_s", 0.0))
                )
                shares.append(
                    _Share(p, t0, t0 + float(comp), work * event_factor(p, at), demand_at(p, at))
                )
                if t["peer"] != origin:
                    rest = (
                        float(t["end_s"])
                        - float(t["start_s"])
                        - float(t.get("queue_s", 0.0))
                        - float(comp)
                    )
                    setup.append(max(rest, 0.0))
    model = [quota_factor(q, sc.threads) for q in peer_quotas(sc)]
    host_fit: dict[str, Any] | None = None
    host_cores = base.host_cores
    if fit_host:
        host_fit = fit_host_cores(runs, sc.peers, max_cores)
        # no contention shown: a host with a core for every peer (still played out as the
        # runtime sees it: costs learned from what shares took, e.g. after a quota change)
        host_cores = host_fit["host_cores"] or float(
            sum(demand_of(q, sc.threads) for q in _peak_quotas(sc))
        )
    if host_cores is not None:  # full-pace seconds: what each share got of the cores it asked
        measured = [0.0] * sc.peers
        for shares in runs:
            for sh, done in zip(shares, _full_pace(shares, host_cores), strict=True):
                measured[sh.peer] += done
    scale = tuple(
        measured[j] / predicted[j] if predicted[j] > 0 else model[j] for j in range(sc.peers)
    )
    all_over = [x for xs in over for x in xs]
    default_over = statistics.fmean(all_over) if all_over else DEFAULT_OVERHEAD_S
    overhead = tuple(
        max(statistics.fmean(over[j]) if over[j] else default_over, 0.0) for j in range(sc.peers)
    )
    return replace(
        base,
        scale=scale,
        overhead_s=overhead,
        setup_s=statistics.fmean(setup) if setup else base.setup_s,
        restart_s=statistics.median(restart) if restart else base.restart_s,
        host_cores=host_cores,
        host_fit=host_fit,
        fitted_from=str(real.get("scenario", "real run")),
    )


@dataclass(frozen=True, slots=True)
class _Share:
    """One share a real run measured: on ``peer`` from ``t0`` to ``t1`` (compute only)."""

    peer: int
    t0: float
    t1: float
    predicted_s: float  # the calibration's seconds for it at the quota then in force
    demand: float  # cores the peer asked for (its quota then)


def _segments(shares: Sequence[_Share]) -> list[list[tuple[float, tuple[int, ...], int]]]:
    """Per share: (seconds, busy shares' indices, its index among them) per stretch of time.

    Stretches are cut wherever another share of the same run starts or ends."""
    out: list[list[tuple[float, tuple[int, ...], int]]] = []
    for i, sh in enumerate(shares):
        others = [
            k
            for k, o in enumerate(shares)
            if k != i and o.peer != sh.peer and o.t0 < sh.t1 and o.t1 > sh.t0
        ]
        cuts = sorted(
            {sh.t0, sh.t1}
            | {x for k in others for x in (shares[k].t0, shares[k].t1) if sh.t0 < x < sh.t1}
        )
        segs: list[tuple[float, tuple[int, ...], int]] = []
        for a, b in itertools.pairwise(cuts):
            mid = 0.5 * (a + b)
            busy = tuple(sorted({i, *(k for k in others if shares[k].t0 <= mid < shares[k].t1)}))
            segs.append((b - a, busy, busy.index(i)))
        out.append(segs)
    return out


def _full_pace(
    shares: Sequence[_Share],
    cores: float,
    segs: list[list[tuple[float, tuple[int, ...], int]]] | None = None,
) -> list[float]:
    """Per share, the seconds it would have taken at full pace on a host of ``cores``."""
    from policy.fleet.host import paces

    segs = _segments(shares) if segs is None else segs
    cache: dict[tuple[int, ...], list[float]] = {}
    done: list[float] = []
    for s in segs:
        total = 0.0
        for dt, busy, me in s:
            if busy not in cache:
                cache[busy] = paces([shares[k].demand for k in busy], cores)
            total += dt * cache[busy][me]
        done.append(total)
    return done


HOST_CORES_GRID_STEP = 0.05
HOST_MIN_SHARES = 20  # fewer measured shares (less one per peer): contention is not fitted
HOST_MIN_GAIN = 0.02  # the fitted C must explain 2% of the within-peer log spread, else none


def fit_host_cores(
    runs: Sequence[Sequence[_Share]], n_peers: int, max_cores: float
) -> dict[str, Any]:
    """The host's cores that best explain the shares' measured times.

    For a candidate ``C``, each share's full-pace seconds (:func:`_full_pace`) over its
    calibrated seconds should be one constant per peer; ``C`` is the grid value (step 0.05,
    up to ``max_cores``) with the smallest spread of that ratio's log within peers (pooled
    variance), and the answer also states the spread with no contention modelled. With fewer
    than ``HOST_MIN_SHARES`` shares, or a best C that narrows the spread by less than
    ``HOST_MIN_GAIN``, the answer's ``host_cores`` is None: the run does not show contention."""
    segs = [_segments(shares) for shares in runs]

    def spread(cores: float) -> float:
        logs: list[list[float]] = [[] for _ in range(n_peers)]
        for shares, sg in zip(runs, segs, strict=True):
            done = _full_pace(shares, cores, sg)
            for sh, d in zip(shares, done, strict=True):
                if d > 0 and sh.predicted_s > 0:
                    logs[sh.peer].append(math.log(d / sh.predicted_s))
        sq = sum((x - statistics.fmean(xs)) ** 2 for xs in logs if xs for x in xs)
        dof = sum(len(xs) - 1 for xs in logs if xs)
        return math.sqrt(sq / dof) if dof > 0 else 0.0

    most: dict[int, float] = {}
    for shares in runs:
        for sh in shares:
            most[sh.peer] = max(most.get(sh.peer, 0.0), sh.demand)
    top = min(max_cores, max(sum(most.values()), HOST_CORES_GRID_STEP))
    grid = [
        round(HOST_CORES_GRID_STEP * k, 4) for k in range(2, int(top / HOST_CORES_GRID_STEP) + 1)
    ]
    spreads = {c: spread(c) for c in grid}
    flat = spread(math.inf)
    # the largest C among the best (ties: assume the least contention the data allows)
    best = max(spreads, key=lambda c: (-round(spreads[c], 6), c)) if spreads else math.inf
    dof = sum(len(s) for s in runs) - len(most)
    gain = 1.0 - spreads.get(best, flat) / flat if flat > 0 else 0.0
    modelled = dof >= HOST_MIN_SHARES and gain >= HOST_MIN_GAIN
    return {
        "fit": True,
        "host_cores": best if modelled else None,
        "log_spread": round(spreads.get(best, flat), 4),
        "log_spread_uncontended": round(flat, 4),
        "shares": sum(len(s) for s in runs),
        "max_cores": max_cores,
    }


# -- the trace -----------------------------------------------------------------------------------


def build_trace(sc: Scenario, costs: EngineCosts, params: SimParams) -> tuple[Any, list[str]]:
    """The fleet simulator's trace for ``sc``; also the list of what it does not model."""
    from policy.fleet.sim import SimConfig, Trace

    plan = schedule(sc)
    if not plan:
        raise SimScenarioError("the schedule is empty: no request to simulate")
    n = sc.peers
    quotas = peer_quotas(sc)
    model = [quota_factor(q, sc.threads) for q in quotas]
    scale = list(params.scale) if params.scale is not None else model
    if len(scale) != n:
        raise SimScenarioError(f"scale has {len(scale)} entries for {n} peers")
    a = np.array([costs.a_s * k for k in scale])
    c = np.array([costs.c_s * k for k in scale])
    unmodelled: list[str] = []
    bw = np.full((n, n), LOOPBACK_BYTES_PER_S)
    for i, link in enumerate(sc.links):
        rates = [r for r in (link.up_mbit, link.down_mbit) if r is not None]
        if rates:
            bps = min(rates) * 1e6 / 8.0
            bw[i, :] = np.minimum(bw[i, :], bps)
            bw[:, i] = np.minimum(bw[:, i], bps)
    cost_events: list[tuple[float, int, float]] = []
    down_from: dict[int, float] = {}
    windows: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    current_q = list(quotas)
    for ev in sc.events:
        p = ev.peer
        if ev.action == "quota" and p is not None:
            new = quota_factor(ev.cores, sc.threads)
            old = quota_factor(quotas[p], sc.threads)
            cost_events.append((ev.at_s, p, new / old))
            current_q[p] = ev.cores
        elif ev.action in ("crash", "stop", "link_down") and p is not None:
            down_from[p] = ev.at_s
        elif ev.action in ("restart", "link_up") and p is not None and p in down_from:
            delay = params.restart_s if ev.action == "restart" else 0.0
            windows[p].append((down_from.pop(p), ev.at_s + delay))
        else:
            unmodelled.append(f"event {ev.describe()}")
    for p, t0 in down_from.items():
        windows[p].append((t0, math.inf))
    for w in windows:
        w.sort()
    images, steps, pixels = [], [], []
    rows = repair_rows()
    for r in plan:
        k = sc.kinds[r.kind]
        if k.request == "repair":
            images.append(repair_tiles(k.size) * rows)
            pixels.append(1.0)
        else:
            images.append(k.count)
            pixels.append(1.0)
            if k.mode in ("chain", "steps"):
                unmodelled.append("steps-mode chains")
        steps.append(k.steps)
    cfg = SimConfig(
        n_peers=n,
        load=1.0,
        staleness_s=params.view_age_s,
        n_requests=len(plan),
        warmup_frac=0.0,
        rtt_s=0.0,
        setup_s=params.setup_s,
        bytes_per_image=BYTES_PER_IMAGE,
        detect_s=params.detect_s,
        crash_rate=0.0,
        snapshot_s=min(0.05, max(params.view_age_s, 0.005)),
    )
    rng = np.random.default_rng([sc.seed, n, 15])
    period = 2.0 * params.view_age_s
    overhead = params.overhead_s or tuple([DEFAULT_OVERHEAD_S] * n)
    trace = Trace(
        cfg=cfg,
        speed=np.ones(n),
        bw=bw,
        times=np.array([r.at_s for r in plan]),
        origin_u=np.array([r.origin_u for r in plan]),
        images=np.array(images, dtype=np.int64),
        steps=np.array(steps, dtype=np.int64),
        pixels=np.array(pixels),
        deadline=np.full(len(plan), sc.deadline_s),
        phase=rng.uniform(0.0, period, (n, n)) if period > 0 else np.zeros((n, n)),
        crashes=windows,
        a_s=a,
        c_s=c,
        cost_events=tuple(cost_events),
        overhead_s=np.asarray(overhead, dtype=float),
        replan_lost=True,
        host_cores=params.host_cores,
        demand=np.array([demand_of(q, sc.threads) for q in quotas]),
        demand_events=tuple(
            (ev.at_s, ev.peer, min(ev.cores, sc.threads))
            for ev in sc.events
            if ev.action == "quota" and ev.peer is not None and ev.cores is not None
        ),
    )
    return trace, sorted(set(unmodelled))


# -- recruiters as the runtime's planner uses them -----------------------------------------------


def runtime_recruit(
    policy: str, seed: int = 0, model_path: str | None = None
) -> Callable[..., Any]:
    """The simulator's recruit function for a runtime policy name.

    As in ``peer.core.recruit`` + ``peer.core.planner``: the policy picks the peers (deadline
    unknown to it), then the planner water-fills the request over the chosen set on the waits
    with the origin's own dispatches (``equal`` keeps its own split; ``local`` stays home).
    """
    from policy.fleet import heuristics
    from policy.fleet.allocate import split_units
    from policy.fleet.recruiters import make_recruiter

    if policy not in POLICY_TO_RECRUITER:
        raise SimScenarioError(f"unknown policy {policy!r}; known: {sorted(POLICY_TO_RECRUITER)}")
    rec = make_recruiter(POLICY_TO_RECRUITER[policy], seed=seed, model_path=model_path)

    def recruit(ctx: Any, rng: np.random.Generator) -> Any:
        arr = ctx.arr
        if policy == "local":
            return heuristics.local(arr, ctx.units, rng)
        pos, cnt, span = rec.choose(arr, ctx.units, math.inf)
        if policy == "equal":
            return pos, cnt, span
        wait = arr.wait + arr.own
        sub, counts, span = split_units(wait[pos], arr.fixed[pos], arr.per_unit[pos], ctx.units)
        return pos[sub], counts, span

    recruit.fallback = getattr(rec, "fallback", None)  # type: ignore[attr-defined]
    return recruit


# -- running and summarising ---------------------------------------------------------------------


def simulate(
    sc: Scenario,
    costs: EngineCosts,
    params: SimParams,
    model_path: str | None = None,
    seeds: Sequence[int] = (0,),
    extra: Mapping[str, Callable[[int], Callable[..., Any]]] | None = None,
) -> dict[str, Any]:
    """Every policy of ``sc`` on the same trace; ``results.json``-shaped dict. ``extra`` (name
    -> recruit function per seed) are replayed too, under ``extra`` (``peer.harness.headroom``)."""
    from policy.fleet.sim import Outcome, RequestCtx, run

    t_start = time.perf_counter()
    trace, unmodelled = build_trace(sc, costs, params)
    plan = schedule(sc)
    runs: dict[str, Any] = {}
    extra_runs: dict[str, Any] = {}
    makers: list[tuple[str, Callable[[int], Callable[..., Any]], dict[str, Any]]] = [
        (p, lambda seed, p=p: runtime_recruit(p, seed=seed, model_path=model_path), runs)
        for p in sc.policies
    ] + [(name, make, extra_runs) for name, make in (extra or {}).items()]
    for policy, make, into in makers:
        records: list[dict[str, Any]] = []
        busy = np.zeros(sc.peers)
        fallback = None
        for seed in seeds:
            recruit = make(seed)
            fallback = getattr(recruit, "fallback", None)
            seen: dict[int, tuple[int, list[int]]] = {}

            def observe(
                ctx: RequestCtx, out: Outcome, seen: dict[int, tuple[int, list[int]]] = seen
            ) -> None:
                seen[ctx.index] = (ctx.origin, [int(ctx.peers[p]) for p in out.positions])

            res = run(trace, recruit, seed=seed, observer=observe, time_decisions=False)
            if res.peer_busy is not None:
                busy += res.peer_busy
            for q, r in enumerate(plan):
                origin, peers = seen.get(q, (-1, []))
                ok = not bool(res.failed[q])
                rec: dict[str, Any] = {
                    "index": r.index,
                    "seed": seed,
                    "at_s": round(r.at_s, 4),
                    "sent_s": round(r.at_s, 4),
                    "origin": f"p{origin}" if origin >= 0 else None,
                    "kind": r.kind,
                    "images": sc.kinds[r.kind].count,
                    "ok": ok,
                }
                if origin >= 0:  # late ones too, as the real runner records them
                    rec["wall_s"] = round(float(res.makespan[q]), 6)
                if ok:
                    rec["peers"] = [f"p{j}" for j in peers]
                else:
                    rec["error"] = "deadline" if origin >= 0 else "no_peer"
                records.append(rec)
        into[policy] = _summarise(sc, records, busy / len(seeds), len(seeds), fallback)
    model = [quota_factor(q, sc.threads) for q in peer_quotas(sc)]
    out = {
        "scenario": sc.name,
        "seed": sc.seed,
        "peers": sc.peers,
        "quotas": list(sc.quotas) if sc.quotas else None,
        "duration_s": sc.duration_s,
        "rate_per_s": sc.rate_per_s,
        "deadline_s": sc.deadline_s,
        "kinds": [
            {"mode": k.mode, "count": k.count, "steps": k.steps, "weight": k.weight}
            | ({"request": k.request, "size": k.size} if k.request != "generate" else {})
            for k in sc.kinds
        ],
        "events": [{"at_s": e.at_s, "action": e.action, "what": e.describe()} for e in sc.events],
        "network": None,
        "requests": len(plan),
        "policies": runs,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "load_average_1m": None,
        "timeline_png": None,
        "sim": {
            "simulator": "policy.fleet.sim",
            "seeds": list(seeds),
            "engine_costs": asdict(costs),
            "quota_factor": model,
            "cost_factor": list(params.scale) if params.scale is not None else model,
            "params": {k: v for k, v in asdict(params).items() if k != "scale"},
            "overhead_s": list(trace.overhead_s) if trace.overhead_s is not None else None,
            "unmodelled": unmodelled,
        },
    }
    if extra is not None:
        out["extra"] = extra_runs
    return out


def _summarise(
    sc: Scenario,
    records: list[dict[str, Any]],
    busy: np.ndarray,
    n_seeds: int,
    fallback: str | None,
) -> dict[str, Any]:
    figures = request_figures(records)
    span = max([sc.duration_s] + [r["sent_s"] + r.get("wall_s", 0.0) for r in records])
    return {
        **figures,
        # per seed: every seed replays the same requests
        "requests": figures["requests"] // n_seeds,
        "ok": figures["ok"] // n_seeds,
        "failed": figures["failed"] // n_seeds,
        "utilisation": {f"p{j}": round(float(b) / span, 4) for j, b in enumerate(busy)},
        "replans": 0,
        "events_applied": [],
        "quotas": "simulated",
        "fallback": fallback,
        "records": records,
    }


# -- compare -------------------------------------------------------------------------------------

TOLERANCE = 0.20


def _rel(sim: float | None, real: float | None) -> float | None:
    if sim is None or real is None or real <= 0:
        return None
    return sim / real - 1.0


def all_requests_mean(pol: Mapping[str, Any]) -> float | None:
    """Mean wall time over every request that has one, late (deadline-failed) ones included.

    ``makespan_mean_s`` averages the successful requests only, so a policy that lets many
    requests run past the deadline can look as fast as one that serves them all."""
    walls = [float(r["wall_s"]) for r in pol.get("records", []) if "wall_s" in r]
    return statistics.fmean(walls) if walls else None


def compare(real: Mapping[str, Any], sim: Mapping[str, Any]) -> dict[str, Any]:
    """Simulated beside real, per policy; ranking; the largest discrepancies by size."""
    rp, sp = real.get("policies"), sim.get("policies")
    if not isinstance(rp, Mapping) or not isinstance(sp, Mapping):
        raise SimScenarioError("both files need a 'policies' table (results.json of run / sim)")
    common = [p for p in rp if p in sp and "error" not in rp[p] and "error" not in sp[p]]
    if not common:
        raise SimScenarioError(f"no policy in both files: real {list(rp)}, sim {list(sp)}")
    rows: dict[str, Any] = {}
    gaps: list[tuple[float, str]] = []
    for p in common:
        r, s = rp[p], sp[p]
        row: dict[str, Any] = {}
        for key in (
            "makespan_mean_s",
            "makespan_p50_s",
            "makespan_p95_s",
            "mean_peers_per_request",
        ):
            rel = _rel(s.get(key), r.get(key))
            row[key] = {"real": r.get(key), "sim": s.get(key), "sim_over_real_minus_1": rel}
            if rel is not None:
                gaps.append((abs(rel), f"{p} {key}: sim {s[key]:.3f} vs real {r[key]:.3f}"))
        ra, sa = all_requests_mean(r), all_requests_mean(s)
        row["all_requests_mean_s"] = {"real": ra, "sim": sa, "sim_over_real_minus_1": _rel(sa, ra)}
        row["failure_rate"] = {"real": r.get("failure_rate"), "sim": s.get("failure_rate")}
        util: dict[str, Any] = {}
        for peer in sorted(set(r.get("utilisation", {})) | set(s.get("utilisation", {}))):
            ru, su = r.get("utilisation", {}).get(peer), s.get("utilisation", {}).get(peer)
            util[peer] = {"real": ru, "sim": su}
            if ru is not None and su is not None:
                # utilisation is a share of time: its gap counts as an absolute difference
                gaps.append(
                    (abs(su - ru), f"{p} utilisation {peer}: sim {su:.2f} vs real {ru:.2f}")
                )
        row["utilisation"] = util
        rel = row["makespan_mean_s"]["sim_over_real_minus_1"]
        row["mean_within_tolerance"] = rel is not None and abs(rel) <= TOLERANCE
        rows[p] = row

    def rank(res: Mapping[str, Any]) -> list[str]:
        return sorted(common, key=lambda p: res[p].get("makespan_mean_s") or math.inf)

    gaps.sort(key=lambda g: -g[0])
    real_rank, sim_rank = rank(rp), rank(sp)
    params = (sim.get("sim") or {}).get("params") or {}
    return {
        "scenario": real.get("scenario"),
        "sim_model": _sim_model(params),
        "tolerance": TOLERANCE,
        "policies": rows,
        "real_ranking": real_rank,
        "sim_ranking": sim_rank,
        "same_ranking": real_rank == sim_rank,
        "all_means_within_tolerance": all(rows[p]["mean_within_tolerance"] for p in common),
        "largest_discrepancies": [g[1] for g in gaps[:6]],
        "real_load_average_1m": real.get("load_average_1m"),
    }


def _f(x: Any, d: int = 3) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def _sim_model(params: Mapping[str, Any]) -> str:
    what = "costs fitted from the real run" if params.get("fitted_from") else "quota model"
    cores = params.get("host_cores")
    return what + (f", one host of {cores:g} cores" if cores else ", peers uncontended")


def compare_markdown(cmp: Mapping[str, Any]) -> str:
    lines = [
        f"Scenario `{cmp['scenario']}` (real load average {cmp['real_load_average_1m']}): "
        f"simulated beside real; tolerance {cmp['tolerance']:.0%} on the mean.",
        "",
        "| policy | mean real / sim s | sim/real | p95 real / sim s | peers/request real / sim "
        "| failure rate real / sim | all-requests mean real / sim s "
        "| utilisation real | utilisation sim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, row in cmp["policies"].items():
        m, p95, ppr = row["makespan_mean_s"], row["makespan_p95_s"], row["mean_peers_per_request"]
        fr, al = row["failure_rate"], row["all_requests_mean_s"]
        ratio = (
            "–" if m["sim_over_real_minus_1"] is None else f"{1 + m['sim_over_real_minus_1']:.2f}"
        )
        ur = " / ".join(_f(v["real"], 2) for v in row["utilisation"].values())
        us = " / ".join(_f(v["sim"], 2) for v in row["utilisation"].values())
        lines.append(
            f"| {p} | {_f(m['real'])} / {_f(m['sim'])} | {ratio} | {_f(p95['real'])} / "
            f"{_f(p95['sim'])} | {_f(ppr['real'], 2)} / {_f(ppr['sim'], 2)} | "
            f"{_f(fr['real'], 3)} / {_f(fr['sim'], 3)} | {_f(al['real'])} / {_f(al['sim'])} | "
            f"{ur} | {us} |"
        )
    lines += [
        "",
        f"Ranking by mean: real {' < '.join(cmp['real_ranking'])}; "
        f"sim {' < '.join(cmp['sim_ranking'])} ({'same' if cmp['same_ranking'] else 'DIFFERENT'}).",
        f"All means within {cmp['tolerance']:.0%}: {'yes' if cmp['all_means_within_tolerance'] else 'no'}.",
        "",
        "Largest discrepancies:",
        *[f"- {g}" for g in cmp["largest_discrepancies"]],
        "",
    ]
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SimScenarioError(f"{what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SimScenarioError(f"{what} {path}: not a JSON object")
    return data


def cmd_sim(args: Any) -> int:
    from peer.harness.scenario import check_policies
    from peer.harness.scenario_run import print_table, render_report

    try:
        sc = load_scenario(args.file)
        if args.policies:
            names = [p.strip() for p in args.policies.split(",") if p.strip()]
            sc = replace(sc, policies=check_policies(names))
        for p in sc.policies:
            if p not in POLICY_TO_RECRUITER:
                raise SimScenarioError(f"policy {p!r} cannot be simulated")
        if not (0.0 <= args.view_age <= 60.0):
            raise SimScenarioError(f"--view-age must be in [0, 60] s, got {args.view_age}")
        costs = load_costs(Path(args.costs) if args.costs else None, args.engine, sc.threads)
        cores = os.cpu_count() or 1
        host = _host_cores(args.host_cores)
        start: float | None = cores if host == "fit" else (None if host is None else float(host))
        params = SimParams(view_age_s=args.view_age, host_cores=start)
        if args.fit:
            params = fit_params(
                _read_json(args.fit, "--fit"),
                sc,
                costs,
                params,
                fit_host=host == "fit",
                max_cores=float(cores),
            )
        extra = headroom.fixed_actions(sc.peers) if args.headroom else None
        res = simulate(sc, costs, params, args.model, tuple(range(args.seeds)), extra)
        if args.headroom:
            res["headroom"] = headroom.summary({**res["policies"], **res.pop("extra")})
    except ScenarioError as exc:
        print(f"amcoedge scenario sim: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "report.md").write_text(
        "\n".join([render_report(res), *headroom.report_lines(res.get("headroom"))])
    )
    print_table(res)
    best = res.get("headroom", {}).get("best")
    if best:
        over = res["headroom"].get("best_over_greedy") or {}
        print(
            f"headroom: best fixed action {best['action']}: mean {best['makespan_mean_s']:.3f} s"
            + (f", {over['mean']:.3f}x greedy's mean" if over else "")
        )
    print(f"scenario sim: report.md and results.json in {out}/")
    return 0


def cmd_compare(args: Any) -> int:
    try:
        cmp = compare(_read_json(args.real, "real"), _read_json(args.sim, "sim"))
    except ScenarioError as exc:
        print(f"amcoedge scenario compare: {exc}", file=sys.stderr)
        return 2
    md = compare_markdown(cmp)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(cmp, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(md)
    return 0


def _host_cores(text: str) -> float | str | None:
    """``--host-cores``: ``fit`` (from ``--fit``'s run; without one, this machine's cores),
    ``none`` (peers do not contend), or a number of cores."""
    if text in ("fit", "none"):
        return None if text == "none" else "fit"
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0.05 <= v <= 1024:
        raise SimScenarioError(
            f"--host-cores must be fit, none or cores in [0.05, 1024], got {text!r}"
        )
    return v


def _seeds(text: str) -> int:
    v = int(text)
    if not 1 <= v <= 100:
        raise ValueError("seeds must be in 1..100")
    return v


def register(groups: dict[str, Any]) -> None:
    s = groups["scenario"].add_parser(
        "sim", help="replay a scenario file in the fleet simulator (same table and results.json)"
    )
    s.add_argument("file", help="scenario TOML (see examples/scenarios/)")
    s.add_argument("--out", default="scenario-sim-out", help="output directory")
    s.add_argument("--policies", help="comma-separated policies, overriding the file's list")
    s.add_argument(
        "--costs",
        help="engine costs JSON {a_s, c_s}: read if it exists, else measured here and written",
    )
    s.add_argument("--engine", default="onnx", choices=("onnx", "torch"), help="engine to measure")
    s.add_argument("--fit", help="a real run's results.json: per-peer costs and overheads from it")
    s.add_argument("--view-age", type=float, default=DEFAULT_VIEW_AGE_S, help="mean view age s")
    s.add_argument(
        "--host-cores",
        default="fit",
        help="cores the peers share: fit (from --fit's run; else this machine's), none, or N",
    )
    s.add_argument("--model", help="recruiter ONNX for onnx (default: the shipped one)")
    s.add_argument("--seeds", type=_seeds, default=1, help="simulator seeds (policy randomness)")
    s.add_argument(
        "--headroom",
        action="store_true",
        help="also replay every fixed action of the recruiter's action space; best vs greedy",
    )
    s.set_defaults(func=cmd_sim)
    c = groups["scenario"].add_parser(
        "compare", help="set a simulated results.json beside a real one; name the largest gaps"
    )
    c.add_argument("real", help="results.json of `scenario run`")
    c.add_argument("sim", help="results.json of `scenario sim`")
    c.add_argument("--json", help="write the comparison JSON here")
    c.add_argument("--markdown", help="write the Markdown table here")
    c.set_defaults(func=cmd_compare)
