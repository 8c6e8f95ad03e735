"""Training the recruitment network: a DQN-family learner extending AdaDQN to any number of peers.

AdaDQN picks one of the 31 subsets of five servers with a DQN and splits with CWA. Here the
action is an adaptive set size plus a staleness hedge (:mod:`policy.fleet.actions`) over any
number of candidates, scored by a permutation-equivariant Q-network, and the split is exact
water-filling. The learner is fitted Q-iteration from a replay of simulated runs with
epsilon-greedy exploration (decaying from fully random) and a target ``-cost / T0`` per request,
where the cost is the request's own make-span plus the delay its shares imposed on the jobs
queued behind them on their peers (its externality) plus half the deadline when it failed.
Charging the externality into the one-step reward stands in for the discounted future that
AdaDQN's gamma = 0.9 bootstrap estimates, so no bootstrap is used (gamma = 0): the target is the
measured social cost, which is unbiased and far less noisy than bootstrapping across thousands
of interleaved origins. Runs sample N in 1..64, load and staleness at random, seeded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from policy.fleet.actions import (
    ACTIONS,
    AGE_HEDGES,
    CAPS,
    N_ACTIONS,
    action_mask,
    decode,
)
from policy.fleet.allocate import split_units
from policy.fleet.features import FEATURE_NAMES, N_FEATURES, build_features
from policy.fleet.heuristics import Choice
from policy.fleet.network import CLAMP, NetConfig, RecruiterNet
from policy.fleet.randomise import RandomiseConfig, randomised_trace
from policy.fleet.sim import Outcome, RequestCtx, SimConfig, Trace, make_trace, run
from policy.fleet.traces import load_traces

KIND = "fleet-recruiter"
PEER_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
PEER_WEIGHTS = (0.3, 0.4, 0.4, 0.6, 0.6, 1.5, 1.5, 1.5, 1.2, 1.5, 0.4, 0.3)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    minutes: float = 15.0
    episodes: int | None = None  # stop after this many episodes (epsilon then decays by episode)
    seed: int = 0
    requests_per_run: int = 1000
    steps_per_run: int = 12
    batch_runs: int = 4
    batch_per_run: int = 64
    replay_runs: int = 48
    lr: float = 1e-3
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_frac: float = 0.4  # of the budget spent decaying epsilon
    load_range: tuple[float, float] = (0.15, 0.95)
    stale_max_s: float = 2.5
    fresh_prob: float = 0.25
    fail_penalty: float = 0.5  # x deadline added to a failed request's cost
    cost_clip: float = 200.0
    log_cost: bool = False  # regress -log(cost / T0) instead (tried: worse at high load, N=8)
    corr_weight: float = 1.0
    net: NetConfig = field(default_factory=NetConfig)
    # sim-to-real (issue 15): share of episodes drawn by policy.fleet.randomise (real-like
    # clusters around measured costs and overheads); runtime semantics: features built with the
    # deadline unknown (the runtime passes none) and the split re-water-filled over the chosen
    # peers on their unhedged waits (the planner does that); a checkpoint to start from
    randomised_frac: float = 0.0
    host_frac: float = 0.0  # of the randomised episodes, the share on one shared host
    # trace-driven (``policy.fleet.traces``): files of randomised replays of measured scenarios
    # (``amcoedge scenario replays``) and the share of episodes drawn from them (before the
    # randomised / synthetic draw); every file alike, a trace uniformly within it
    replays: tuple[str, ...] = ()
    replay_frac: float = 0.0
    runtime_semantics: bool = False
    init: str | None = None


_SOLO = FEATURE_NAMES.index("solo_finish_over_t0")
_AGE = FEATURE_NAMES.index("view_age_over_t0")
_AWARE = FEATURE_NAMES.index("aware_wait_over_t0")
_LOG_T0 = FEATURE_NAMES.index("log_t0")
Chooser = Callable[
    [NDArray[np.float32], NDArray[np.bool_], np.random.Generator], tuple[int, NDArray[np.float32]]
]


def numpy_forward(
    p: dict[str, NDArray[np.float32]], feats: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The network in numpy, ``(q, score)``: a fast single-request forward for data collection."""
    x = np.clip(feats, -CLAMP, CLAMP)
    h = np.maximum(x @ p["encoder.0.weight"].T + p["encoder.0.bias"], 0.0)
    h = np.maximum(h @ p["encoder.2.weight"].T + p["encoder.2.bias"], 0.0)
    ctx = np.concatenate([h.mean(0), h.max(0)])
    z = np.maximum(p["head.0.weight"] @ ctx + p["head.0.bias"], 0.0)
    q = p["head.2.weight"] @ z + p["head.2.bias"]
    both = np.concatenate([h, np.broadcast_to(ctx, (h.shape[0], ctx.shape[0]))], axis=1)
    c = np.maximum(both @ p["corr.0.weight"].T + p["corr.0.bias"], 0.0)
    corr = np.maximum(c @ p["corr.2.weight"].T + p["corr.2.bias"], 0.0)
    solo = feats[:, _SOLO : _SOLO + 1]
    age = feats[:, _AGE : _AGE + 1] * np.asarray(AGE_HEDGES, dtype=np.float32)
    score = np.concatenate([-(solo + age), -(solo + corr)], axis=1).astype(np.float32)
    return q.astype(np.float32), score


@dataclass(slots=True)
class _Run:
    feats: NDArray[np.float32]  # (R, n, F) padded
    mask: NDArray[np.bool_]  # (R, n)
    valid: NDArray[np.bool_]  # (R, A)
    action: NDArray[np.int64]
    target: NDArray[np.float32]
    corr_target: NDArray[np.float32]  # (R, n): realised extra wait over T0, chosen candidates
    corr_mask: NDArray[np.bool_]  # (R, n)


def _sample_config(rng: np.random.Generator, tc: TrainConfig) -> SimConfig:
    w = np.asarray(PEER_WEIGHTS) / sum(PEER_WEIGHTS)
    n = int(rng.choice(np.asarray(PEER_CHOICES), p=w))
    load = float(rng.uniform(*tc.load_range))
    stale = 0.0 if rng.random() < tc.fresh_prob else float(rng.uniform(0.05, tc.stale_max_s))
    return SimConfig(n_peers=n, load=load, staleness_s=stale, n_requests=tc.requests_per_run)


def collect(
    cfg: SimConfig, seed: int, choose: Chooser, tc: TrainConfig, trace: Trace | None = None
) -> tuple[_Run, dict[str, float]]:
    """Run one simulated episode with ``choose`` picking actions; returns its replay block."""
    if trace is None:
        trace = make_trace(cfg, seed)
    cfg = trace.cfg
    rows: dict[int, tuple[NDArray[np.float32], NDArray[np.bool_], int, float]] = {}
    realised: dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]] = {}

    def recruit(ctx: RequestCtx, rng: np.random.Generator) -> Choice:
        f = build_features(ctx.arr, ctx.units, math.inf if tc.runtime_semantics else ctx.deadline_s)
        valid = action_mask(len(ctx.arr))
        a, score = choose(f, valid, rng)
        rows[ctx.index] = (f, valid, a, math.exp(float(f[0, _LOG_T0])))
        pos, cnt, span = decode(ctx.arr, ctx.units, a, score)
        if not tc.runtime_semantics:
            return pos, cnt, span
        arr = ctx.arr
        wait = arr.wait + arr.own
        sub, cnt, span = split_units(wait[pos], arr.fixed[pos], arr.per_unit[pos], ctx.units)
        return pos[sub], cnt, span

    def observe(ctx: RequestCtx, out: Outcome) -> None:
        realised[ctx.index] = (out.positions, out.realised_wait)

    res = run(trace, recruit, seed=seed, observer=observe, time_decisions=False, track_jobs=True)
    # metrics and externality cover the post-warm-up requests; keep the same rows
    skip = trace.times.shape[0] - res.makespan.shape[0]
    if res.externality is None:
        raise RuntimeError("run did not track jobs")
    cost_all = res.makespan + res.externality + tc.fail_penalty * res.failed * trace.deadline[skip:]
    keep = [q for q in range(skip, trace.times.shape[0]) if q in rows]
    r = len(keep)
    n = cfg.n_peers
    feats = np.zeros((r, n, N_FEATURES), dtype=np.float32)
    mask = np.zeros((r, n), dtype=bool)
    valid = np.zeros((r, N_ACTIONS), dtype=bool)
    action = np.zeros(r, dtype=np.int64)
    target = np.zeros(r, dtype=np.float32)
    corr_t = np.zeros((r, n), dtype=np.float32)
    corr_m = np.zeros((r, n), dtype=bool)
    for i, q in enumerate(keep):
        f, v, a, t0 = rows[q]
        k = f.shape[0]
        feats[i, :k] = f
        mask[i, :k] = True
        valid[i] = v
        action[i] = a
        rel = min(max(float(cost_all[q - skip]) / t0, 1e-3), tc.cost_clip)
        target[i] = -math.log(rel) if tc.log_cost else -rel
        pos, waits = realised[q]
        corr_t[i, pos] = np.clip(waits / t0 - f[pos, _AWARE], 0.0, CLAMP)
        corr_m[i, pos] = True
    stats = {
        "avg_makespan": float(np.mean(res.makespan)),
        "failure_rate": float(np.mean(res.failed)),
    }
    return _Run(feats, mask, valid, action, target, corr_t, corr_m), stats


def _batch(runs: list[_Run], rng: np.random.Generator, tc: TrainConfig) -> list[torch.Tensor]:
    picks = rng.integers(len(runs), size=tc.batch_runs)
    n = max(runs[int(p)].feats.shape[1] for p in picks)
    parts: list[list[np.ndarray]] = [[] for _ in range(6)]
    for p in picks:
        run_ = runs[int(p)]
        rows = rng.integers(run_.feats.shape[0], size=tc.batch_per_run)
        k = run_.feats.shape[1]
        b = rows.shape[0]
        f = np.zeros((b, n, N_FEATURES), dtype=np.float32)
        m = np.zeros((b, n), dtype=bool)
        ct = np.zeros((b, n), dtype=np.float32)
        cm = np.zeros((b, n), dtype=bool)
        f[:, :k] = run_.feats[rows]
        m[:, :k] = run_.mask[rows]
        ct[:, :k] = run_.corr_target[rows]
        cm[:, :k] = run_.corr_mask[rows]
        arrays: tuple[np.ndarray, ...] = (f, m, run_.action[rows], run_.target[rows], ct, cm)
        for lst, arr in zip(parts, arrays, strict=True):
            lst.append(arr)
    return [torch.from_numpy(np.concatenate(lst)) for lst in parts]


def train(tc: TrainConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train for ``tc.minutes`` of wall time; writes ``recruiter.pt`` and returns the checkpoint."""
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    net = RecruiterNet(tc.net)
    if tc.init is not None:
        net = load_net(torch.load(tc.init, weights_only=False))
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr)
    replay: list[_Run] = []
    replays = [load_traces(f)[0] for f in tc.replays]
    if tc.replay_frac > 0 and not replays:
        raise ValueError("replay_frac > 0 needs replays files")
    budget = tc.minutes * 60.0
    start = time.monotonic()
    log: list[dict[str, float]] = []
    bar = tqdm(total=int(budget), unit="s", disable=not progress, desc="train")
    episode = 0
    last_loss = float("nan")
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= budget or (tc.episodes is not None and episode >= tc.episodes):
            break
        frac = elapsed / budget
        if tc.episodes is not None:
            frac = max(frac, episode / tc.episodes)
        eps = tc.eps_end + (tc.eps_start - tc.eps_end) * max(0.0, 1.0 - frac / tc.eps_frac)
        params = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}

        def choose(
            f: NDArray[np.float32],
            valid: NDArray[np.bool_],
            g: np.random.Generator,
            eps: float = eps,
            params: dict[str, NDArray[np.float32]] = params,
        ) -> tuple[int, NDArray[np.float32]]:
            q, score = numpy_forward(params, f)
            if g.random() < eps:
                return int(g.choice(np.flatnonzero(valid))), score
            return int(np.argmax(np.where(valid, q, -np.inf))), score

        cfg = _sample_config(rng, tc)
        ep_seed = int(rng.integers(2**31))
        trace: Trace | None = None
        if replays and rng.random() < tc.replay_frac:
            pool = replays[int(rng.integers(len(replays)))]
            trace = pool[int(rng.integers(len(pool)))]
        elif rng.random() < tc.randomised_frac:
            trace = randomised_trace(ep_seed, RandomiseConfig(host_prob=tc.host_frac))
        block, stats = collect(cfg, ep_seed, choose, tc, trace)
        if trace is not None:
            cfg = trace.cfg
        replay.append(block)
        if len(replay) > tc.replay_runs:
            replay.pop(0)
        net.train()
        for _ in range(tc.steps_per_run):
            f, m, a, y, ct, cm = _batch(replay, rng, tc)
            q_all, corr = net.batch(f, m)
            q = q_all.gather(1, a.unsqueeze(1)).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(q, y)
            if bool(cm.any()):
                loss = loss + tc.corr_weight * torch.nn.functional.smooth_l1_loss(corr[cm], ct[cm])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            last_loss = float(loss.detach())
        episode += 1
        log.append(
            {
                "episode": episode,
                "eps": eps,
                "loss": last_loss,
                "n": cfg.n_peers,
                "load": cfg.load,
                "stale": cfg.staleness_s,
                **stats,
            }
        )
        bar.n = min(int(time.monotonic() - start), int(budget))
        bar.set_postfix(ep=episode, eps=f"{eps:.2f}", loss=f"{last_loss:.3f}", n=cfg.n_peers)
        bar.refresh()
    bar.close()
    ckpt: dict[str, Any] = {
        "kind": KIND,
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "net": net.config_dict(),
        "feature_names": list(FEATURE_NAMES),
        "actions": [list(a) for a in ACTIONS],
        "caps": list(CAPS),
        "age_hedges": list(AGE_HEDGES),
        "train": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(tc).items()},
        "episodes": episode,
        "log": log,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out_dir / "recruiter.pt")
    return ckpt


def load_net(ckpt: dict[str, Any]) -> RecruiterNet:
    if ckpt.get("kind") != KIND:
        raise ValueError(f"not a {KIND} checkpoint: kind={ckpt.get('kind')!r}")
    net = RecruiterNet(NetConfig(**ckpt["net"]))
    state = dict(ckpt["state_dict"])
    w = state.get("encoder.0.weight")
    if w is not None and w.shape[1] < N_FEATURES:
        # a checkpoint from before input columns were appended (fine-tuning it): the new
        # columns start with zero weights, so the network computes what it did until trained
        state["encoder.0.weight"] = torch.cat(
            [w, torch.zeros(w.shape[0], N_FEATURES - w.shape[1], dtype=w.dtype)], dim=1
        )
    net.load_state_dict(state)
    net.eval()
    return net
