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

from policy.fleet.actions import ACTIONS, CAPS, HEDGES, N_ACTIONS, action_mask, decode
from policy.fleet.features import FEATURE_NAMES, N_FEATURES, build_features
from policy.fleet.heuristics import Choice
from policy.fleet.network import NetConfig, RecruiterNet
from policy.fleet.sim import RequestCtx, SimConfig, make_trace, run

KIND = "fleet-recruiter"
PEER_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
PEER_WEIGHTS = (0.3, 0.4, 0.4, 0.6, 0.6, 1.5, 1.5, 1.5, 1.2, 1.5, 0.6, 0.6)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    minutes: float = 15.0
    seed: int = 0
    requests_per_run: int = 1200
    steps_per_run: int = 24
    batch_runs: int = 4
    batch_per_run: int = 64
    replay_runs: int = 48
    lr: float = 1e-3
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_frac: float = 0.5  # of the budget spent decaying epsilon
    load_range: tuple[float, float] = (0.15, 0.95)
    stale_max_s: float = 2.5
    fresh_prob: float = 0.25
    fail_penalty: float = 0.5  # x deadline added to a failed request's cost
    cost_clip: float = 200.0
    net: NetConfig = field(default_factory=NetConfig)


def numpy_q(
    params: dict[str, NDArray[np.float32]], feats: NDArray[np.float32]
) -> NDArray[np.float32]:
    """The network's Q-values in numpy (fast single-request forward for data collection)."""
    h = np.maximum(feats @ params["encoder.0.weight"].T + params["encoder.0.bias"], 0.0)
    h = np.maximum(h @ params["encoder.2.weight"].T + params["encoder.2.bias"], 0.0)
    ctx = np.concatenate([h.mean(0), h.max(0)])
    z = np.maximum(params["head.0.weight"] @ ctx + params["head.0.bias"], 0.0)
    out: NDArray[np.float32] = params["head.2.weight"] @ z + params["head.2.bias"]
    return out


@dataclass(slots=True)
class _Run:
    feats: NDArray[np.float32]  # (R, n, F) padded
    mask: NDArray[np.bool_]  # (R, n)
    valid: NDArray[np.bool_]  # (R, A)
    action: NDArray[np.int64]
    target: NDArray[np.float32]


def _sample_config(rng: np.random.Generator, tc: TrainConfig) -> SimConfig:
    w = np.asarray(PEER_WEIGHTS) / sum(PEER_WEIGHTS)
    n = int(rng.choice(np.asarray(PEER_CHOICES), p=w))
    load = float(rng.uniform(*tc.load_range))
    stale = 0.0 if rng.random() < tc.fresh_prob else float(rng.uniform(0.05, tc.stale_max_s))
    return SimConfig(n_peers=n, load=load, staleness_s=stale, n_requests=tc.requests_per_run)


def collect(
    cfg: SimConfig,
    seed: int,
    choose: Callable[[NDArray[np.float32], NDArray[np.bool_], np.random.Generator], int],
    tc: TrainConfig,
) -> tuple[_Run, dict[str, float]]:
    """Run one simulated episode with ``choose`` picking actions; returns its replay block."""
    trace = make_trace(cfg, seed)
    rows: dict[int, tuple[NDArray[np.float32], NDArray[np.bool_], int, float]] = {}

    def recruit(ctx: RequestCtx, rng: np.random.Generator) -> Choice:
        f = build_features(ctx.arr, ctx.units, ctx.deadline_s)
        valid = action_mask(len(ctx.arr))
        a = choose(f, valid, rng)
        t0 = math.exp(float(f[0, FEATURE_NAMES.index("log_t0")]))
        rows[ctx.index] = (f, valid, a, t0)
        return decode(ctx.arr, ctx.units, a)

    res = run(trace, recruit, seed=seed, time_decisions=False, track_jobs=True)
    # metrics and externality cover the post-warm-up requests; keep the same rows
    skip = trace.times.shape[0] - res.makespan.shape[0]
    if res.externality is None:
        raise RuntimeError("run did not track jobs")
    cost_all = res.makespan + res.externality + tc.fail_penalty * res.failed * trace.deadline[skip:]
    keep = [q for q in range(skip, trace.times.shape[0]) if q in rows]
    cost = np.array([cost_all[q - skip] for q in keep])
    r = len(keep)
    n = cfg.n_peers
    feats = np.zeros((r, n, N_FEATURES), dtype=np.float32)
    mask = np.zeros((r, n), dtype=bool)
    valid = np.zeros((r, N_ACTIONS), dtype=bool)
    action = np.zeros(r, dtype=np.int64)
    target = np.zeros(r, dtype=np.float32)
    for i, q in enumerate(keep):
        f, v, a, t0 = rows[q]
        feats[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
        valid[i] = v
        action[i] = a
        target[i] = -min(float(cost[i]) / t0, tc.cost_clip)
    stats = {
        "avg_makespan": float(np.mean(res.makespan)),
        "failure_rate": float(np.mean(res.failed)),
    }
    return _Run(feats, mask, valid, action, target), stats


def _batch(
    runs: list[_Run], rng: np.random.Generator, tc: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    picks = rng.integers(len(runs), size=tc.batch_runs)
    n = max(runs[int(p)].feats.shape[1] for p in picks)
    fs, ms, acts, tgs = [], [], [], []
    for p in picks:
        run_ = runs[int(p)]
        rows = rng.integers(run_.feats.shape[0], size=tc.batch_per_run)
        f = np.zeros((rows.shape[0], n, N_FEATURES), dtype=np.float32)
        m = np.zeros((rows.shape[0], n), dtype=bool)
        f[:, : run_.feats.shape[1]] = run_.feats[rows]
        m[:, : run_.mask.shape[1]] = run_.mask[rows]
        fs.append(f)
        ms.append(m)
        acts.append(run_.action[rows])
        tgs.append(run_.target[rows])
    return (
        torch.from_numpy(np.concatenate(fs)),
        torch.from_numpy(np.concatenate(ms)),
        torch.from_numpy(np.concatenate(acts)),
        torch.from_numpy(np.concatenate(tgs)),
    )


def train(tc: TrainConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train for ``tc.minutes`` of wall time; writes ``recruiter.pt`` and returns the checkpoint."""
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    net = RecruiterNet(tc.net)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr)
    replay: list[_Run] = []
    budget = tc.minutes * 60.0
    start = time.monotonic()
    log: list[dict[str, float]] = []
    bar = tqdm(total=int(budget), unit="s", disable=not progress, desc="train")
    episode = 0
    last_loss = float("nan")
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= budget:
            break
        frac = elapsed / budget
        eps = tc.eps_end + (tc.eps_start - tc.eps_end) * max(0.0, 1.0 - frac / tc.eps_frac)
        params = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}

        def choose(
            f: NDArray[np.float32],
            valid: NDArray[np.bool_],
            g: np.random.Generator,
            eps: float = eps,
            params: dict[str, NDArray[np.float32]] = params,
        ) -> int:
            if g.random() < eps:
                return int(g.choice(np.flatnonzero(valid)))
            q = numpy_q(params, f)
            return int(np.argmax(np.where(valid, q, -np.inf)))

        cfg = _sample_config(rng, tc)
        block, stats = collect(cfg, int(rng.integers(2**31)), choose, tc)
        replay.append(block)
        if len(replay) > tc.replay_runs:
            replay.pop(0)
        net.train()
        for _ in range(tc.steps_per_run):
            f, m, a, y = _batch(replay, rng, tc)
            q = net.q_batch(f, m).gather(1, a.unsqueeze(1)).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(q, y)
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
        "hedges": list(HEDGES),
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
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net
