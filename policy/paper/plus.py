"""``amcoedge+``: AdaDQN with the departures that make it reliable, beside the faithful one.

The faithful ``amcoedge`` (learners.py) keeps the reference learning rule. This method keeps
its structure — one Q-network per BS over the same 31 ES subsets, replay, ε-greedy acting, CWA
for the split, the same AMCoEdge environment and reward — and departs from the rule where the
reference rule is the reason the runs spread (see the reproduction report). Each departure is a
field of :class:`PlusConfig`, and :data:`ABLATIONS` names the configuration that undoes it, so
``amcoedge sim analyse ablation`` measures what each one is worth.

1. ``state="load"``: the state is the task's per-ES service time U_j and waiting time W_j
   (paper-model.md §1.4) in the current intra-slot state (start-of-slot queue *plus* the work
   assigned earlier in the slot, and the BS's link backlog), divided by the deadline. The
   reference state [D, Q(t)] sees neither the intra-slot load nor ρ_n; U and W are a fixed
   transformation of (D, ρ_n, Q + P, L_b) with the known capacities and rates. Acting is per task.
   Ablation ``reference-state``: [D/size_max, Q_1..Q_5], acting per task.
2. ``gamma=0``: the target is the task's own reward. The next state of the reference rule is the
   next task, which the action barely changes at ordinary load, so bootstrapping through it adds
   a large, noisy, action-independent term (≈ −M/(1−γ)). Ablation ``gamma-0.9`` (with a
   double-DQN target and a soft-updated target network, so the bootstrap is the best it can be).
3. ``steps_per_slot``: gradient steps per agent per slot (reference: one every 10 slots).
   Ablation ``reference-steps``.
4. ``huber``: Huber loss on the taken action only (reference: MSE). Ablation ``mse``.
5. Exploration: the probability of a random action falls linearly from ``explore_start`` to
   ``explore_end`` over ``explore_episodes`` episodes (reference: ε-greedy probability rising
   0.001 per learn call). Ablation ``reference-exploration`` keeps the reference's per-learn-call
   ramp of the greedy probability.
6. Larger replay (``memory``) and batch, default PyTorch-style initialisation, a learning rate
   decayed linearly to ``lr_final`` over ``lr_episodes`` episodes. Ablation ``constant-lr``.

The five agents are trained as one batched numpy module (weights stacked on a leading agent
axis); they share no parameters and no data, only the optimiser call. A checkpoint holds each agent's
network as a plain ``policy.paper.dqn.build_mlp`` state dict, kind ``adadqn``, so
``amcoedge policy export`` exports it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from policy.paper.config import SimError, SimParams
from policy.paper.dqn import AgentConfig
from policy.paper.env import PaperEnv
from policy.paper.methods import Method
from policy.paper.subsets import ALL_SUBSETS


class FinishedRun(Protocol):
    """What saving a checkpoint needs of a finished run (``policy.paper.runner.RunResult``)."""

    episodes: int
    seed: int
    method_obj: Method | None

    @property
    def params(self) -> SimParams: ...

    @property
    def avg_makespan(self) -> float: ...

    @property
    def failure_rate(self) -> float: ...


__all__ = [
    "ABLATIONS",
    "DEPARTURES",
    "PLUS",
    "PlusConfig",
    "PlusMethod",
    "n_features",
    "save_plus_checkpoint",
]

F64 = npt.NDArray[np.floating[Any]]  # float32 weights and states

TIME_SCALE = 5.0  # load-state times are (seconds / deadline) × this, so typical waits sit near 1
REFERENCE_LEARN_EVERY = 10  # slots between learn calls in the reference rule
REFERENCE_EPS_INCREMENT = 0.001  # reference greedy-probability increment per learn call
REFERENCE_EPS_MAX = 0.99


@dataclass(frozen=True)
class PlusConfig:
    state: str = "load"  # "load" (U_j, W_j per ES) or "reference" ([D, Q(t)])
    hidden: int = 32
    layers: int = 2
    lr: float = 1e-3
    lr_final: float = 1e-4
    lr_episodes: int = 400
    gamma: float = 0.0
    soft_target: float = 0.01  # target net ← (1-k)·target + k·eval after every step (γ > 0)
    huber: bool = True
    steps_per_slot: float = 0.5  # < 1: one step every round(1/steps) slots
    batch: int = 64
    memory: int = 20000
    explore_start: float = 1.0
    explore_end: float = 0.01
    explore_episodes: int = 100
    reference_exploration: bool = False

    def __post_init__(self) -> None:
        if self.state not in ("load", "reference"):
            raise SimError(f"state must be 'load' or 'reference', got {self.state!r}")
        if not 0.0 <= self.gamma < 1.0:
            raise SimError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.hidden < 1 or self.layers < 1 or self.batch < 1 or self.memory < self.batch:
            raise SimError("need hidden, layers, batch >= 1 and memory >= batch")
        if not self.steps_per_slot > 0:
            raise SimError(f"steps_per_slot must be positive, got {self.steps_per_slot}")
        if not 0.0 <= self.explore_end <= self.explore_start <= 1.0:
            raise SimError("need 0 <= explore_end <= explore_start <= 1")


PLUS = PlusConfig()

ABLATIONS: dict[str, PlusConfig] = {
    "full": PLUS,
    "reference-state": replace(PLUS, state="reference"),
    "gamma-0.9": replace(PLUS, gamma=0.9),
    "reference-steps": replace(PLUS, steps_per_slot=1.0 / REFERENCE_LEARN_EVERY),
    "mse": replace(PLUS, huber=False),
    "reference-exploration": replace(PLUS, reference_exploration=True),
    "constant-lr": replace(PLUS, lr_final=PLUS.lr),
}
"""Each entry undoes one departure of :data:`PLUS` (``full`` is PLUS itself)."""


DEPARTURES: dict[str, str] = {
    "reference-state": "state = each ES's service and waiting time for this task in the current "
    "intra-slot state (start-of-slot queue plus work assigned earlier in the slot, link backlog), "
    "over the deadline; acting per task (reference: [D, Q(t)], start-of-slot queues only)",
    "gamma-0.9": f"γ = {PLUS.gamma}: the target is the task's own reward (reference: γ = 0.9 "
    "through the next task's state, which the action barely changes)",
    "reference-steps": f"{PLUS.steps_per_slot} gradient steps per agent per slot, batch "
    f"{PLUS.batch}, replay {PLUS.memory} (reference: one step every {REFERENCE_LEARN_EVERY} "
    "slots after a warm-up, batch 32, replay 500)",
    "mse": "Huber loss on the taken action (reference: MSE)",
    "reference-exploration": f"random-action probability {PLUS.explore_start} → "
    f"{PLUS.explore_end} over the first {PLUS.explore_episodes} episodes (reference: greedy "
    f"probability rising {REFERENCE_EPS_INCREMENT} per learn call from 0)",
    "constant-lr": f"learning rate {PLUS.lr} decayed linearly to {PLUS.lr_final} over "
    f"{PLUS.lr_episodes} episodes (reference: constant)",
}
"""What each ablation undoes, in words (the report's list of departures)."""


def n_features(cfg: PlusConfig, n_es: int = 5) -> int:
    return 2 * n_es if cfg.state == "load" else 1 + n_es


def agent_config(cfg: PlusConfig, n_es: int = 5) -> AgentConfig:
    """The export-side description of one agent's network (``policy.paper.dqn.build_mlp``)."""
    return AgentConfig(
        n_features=n_features(cfg, n_es),
        n_actions=len(ALL_SUBSETS),
        hidden=cfg.hidden,
        layers=cfg.layers,
        lr=cfg.lr,
        gamma=cfg.gamma,
        memory=cfg.memory,
        batch=cfg.batch,
    )


class StackedMLP:
    """A agents' ReLU MLPs with weights stacked on a leading axis, trained with Adam in numpy.

    At these sizes (≤ 64 wide, batch 128) a hand-written step is several times faster than
    torch's per-op overhead; the maths is the textbook one (checked against torch in the tests).
    """

    BETA1 = 0.9
    BETA2 = 0.999
    EPS = 1e-8

    def __init__(self, agents: int, sizes: list[int], rng: np.random.Generator) -> None:
        self.W: list[F64] = []
        self.b: list[F64] = []
        for fan_in, fan_out in pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # PyTorch's nn.Linear default range
            w = rng.uniform(-bound, bound, size=(agents, fan_in, fan_out))
            self.W.append(w.astype(np.float32))
            self.b.append(rng.uniform(-bound, bound, size=(agents, fan_out)).astype(np.float32))
        self._m = [np.zeros_like(p) for p in self.params()]
        self._v = [np.zeros_like(p) for p in self.params()]
        self._t = 0

    def params(self) -> list[F64]:
        return [p for pair in zip(self.W, self.b, strict=True) for p in pair]

    def copy_from(self, other: StackedMLP, k: float = 1.0) -> None:
        """self ← (1-k)·self + k·other (k = 1: hard copy)."""
        for mine, theirs in zip(self.params(), other.params(), strict=True):
            mine *= np.float32(1.0 - k)
            mine += np.float32(k) * theirs

    def forward(self, x: F64) -> F64:
        """(A, n, in) → (A, n, out)."""
        last = len(self.W) - 1
        for i, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            x = np.matmul(x, w) + b[:, None, :]
            if i < last:
                x = np.maximum(x, 0.0)
        return x

    def one(self, agent: int, x: F64) -> F64:
        """Agent ``agent``'s outputs for one input vector."""
        last = len(self.W) - 1
        for i, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            x = x @ w[agent] + b[agent]
            if i < last:
                x = np.maximum(x, 0.0)
        return x

    def step(self, x: F64, a: npt.NDArray[np.int64], y: F64, lr: float, huber: bool) -> float:
        """One Adam step on the loss of the taken actions' outputs; returns the loss."""
        acts = [x]
        last = len(self.W) - 1
        h = x
        for i, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            h = np.matmul(h, w) + b[:, None, :]
            if i < last:
                h = np.maximum(h, 0.0)
                acts.append(h)
        q_a = np.take_along_axis(h, a[:, :, None], axis=2)[:, :, 0]
        diff = q_a - y
        if huber:  # smooth L1 with beta 1, mean over every sample of every agent
            ad = np.abs(diff)
            loss = float(np.mean(np.where(ad < 1.0, 0.5 * diff * diff, ad - 0.5)))
            g = np.clip(diff, -1.0, 1.0) * np.float32(1.0 / diff.size)
        else:
            loss = float(np.mean(diff * diff))
            g = diff * np.float32(2.0 / diff.size)
        dz = np.zeros_like(h)
        np.put_along_axis(dz, a[:, :, None], g[:, :, None], axis=2)
        grads: list[F64] = []
        for i in range(last, -1, -1):
            grads.append(dz.sum(axis=1))  # bias
            grads.append(np.matmul(acts[i].transpose(0, 2, 1), dz))  # weight
            if i > 0:
                dz = np.matmul(dz, self.W[i].transpose(0, 2, 1)) * (acts[i] > 0.0)
        grads.reverse()  # W0, b0, W1, b1, ...
        self._t += 1
        c1 = 1.0 - self.BETA1**self._t
        c2 = 1.0 - self.BETA2**self._t
        for p, gp, m, v in zip(self.params(), grads, self._m, self._v, strict=True):
            m *= np.float32(self.BETA1)
            m += np.float32(1.0 - self.BETA1) * gp
            v *= np.float32(self.BETA2)
            v += np.float32(1.0 - self.BETA2) * gp * gp
            p -= np.float32(lr / c1) * m / (np.sqrt(v / np.float32(c2)) + np.float32(self.EPS))
        return loss

    def agent_state_dict(self, agent: int) -> dict[str, torch.Tensor]:
        """Agent ``agent``'s network as a ``build_mlp`` (nn.Sequential) state dict."""
        sd: dict[str, torch.Tensor] = {}
        for i, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            sd[f"{2 * i}.weight"] = torch.as_tensor(w[agent].T.copy(), dtype=torch.float32)
            sd[f"{2 * i}.bias"] = torch.as_tensor(b[agent].copy(), dtype=torch.float32)
        return sd


class PlusMethod(Method):
    """One agent per BS, acting per task on the load state; see the module docstring."""

    def __init__(self, cfg: PlusConfig = PLUS, name: str = "amcoedge+") -> None:
        self.name = name
        self.cfg = cfg
        self.learn_calls = 0
        self.slot_count = 0
        self.explore = cfg.explore_start
        self.last_loss = float("nan")

    def bind(self, env: PaperEnv, rng: np.random.Generator) -> None:
        super().bind(env, rng)
        cfg = self.cfg
        B = env.B
        self.A = len(ALL_SUBSETS)
        self.F = n_features(cfg, B)
        sizes = [self.F] + [cfg.hidden] * cfg.layers + [self.A]
        self.net = StackedMLP(B, sizes, rng)
        self.target = StackedMLP(B, sizes, rng)
        self.target.copy_from(self.net)
        self.lr = cfg.lr
        M = cfg.memory
        self.mem_s = np.zeros((B, M, self.F), dtype=np.float32)
        self.mem_s2 = np.zeros((B, M, self.F), dtype=np.float32)
        self.mem_a = np.zeros((B, M), dtype=np.int64)
        self.mem_r = np.zeros((B, M), dtype=np.float32)
        self.mem_n = np.zeros(B, dtype=np.int64)
        self._pending: list[tuple[F64, int, float] | None] = [None] * B
        self._state: F64 = np.zeros(self.F)
        self._action = 0
        self._scale = TIME_SCALE / env.tau
        self._greedy_prob = 0.0  # reference exploration: probability of acting greedily

    # ---- acting --------------------------------------------------------------------------
    def begin_episode(self, episode: int) -> None:
        cfg = self.cfg
        frac = min(1.0, episode / cfg.explore_episodes) if cfg.explore_episodes > 0 else 1.0
        self.explore = cfg.explore_start + frac * (cfg.explore_end - cfg.explore_start)
        lfrac = min(1.0, episode / cfg.lr_episodes) if cfg.lr_episodes > 0 else 1.0
        self.lr = cfg.lr + lfrac * (cfg.lr_final - cfg.lr)
        self._pending = [None] * self.env.B

    def plan_slot(self, t: int) -> None:
        env = self.env
        self._u = self.rng.random((env.B, env.N))
        self._rand = self.rng.integers(0, self.A, size=(env.B, env.N))

    def features(self, t: int, b: int, n: int, size: float) -> F64:
        env = self.env
        if self.cfg.state == "load":
            U, W = env.task_vectors(b, n, size)
            return np.asarray(U + W, dtype=np.float32) * np.float32(self._scale)
        x = np.empty(1 + env.B, dtype=np.float32)
        x[0] = size / env.params.size_max
        x[1:] = env.Q[t]
        return x

    def q_values(self, b: int, x: F64) -> F64:
        return self.net.one(b, x)

    def decide(self, t: int, b: int, n: int, size: float) -> tuple[int, ...]:
        x = self.features(t, b, n, size)
        if self.cfg.reference_exploration:
            explore = not self._u[b, n] < self._greedy_prob
        else:
            explore = bool(self._u[b, n] < self.explore)
        a = int(self._rand[b, n]) if explore else int(np.argmax(self.q_values(b, x)))
        self._state = x
        self._action = a
        return ALL_SUBSETS[a]

    def feedback(self, b: int, n: int, ms: float, failed: bool) -> None:
        r = self.env.reward(ms, failed)
        x, a = self._state, self._action
        if self.cfg.gamma == 0.0:
            self._store(b, x, a, r, x)
            return
        prev = self._pending[b]
        if prev is not None:  # the BS's next task is the previous task's next state
            self._store(b, prev[0], prev[1], prev[2], x)
        self._pending[b] = (x, a, r)

    def _store(self, b: int, s: F64, a: int, r: float, s2: F64) -> None:
        i = int(self.mem_n[b] % self.cfg.memory)
        self.mem_s[b, i] = s
        self.mem_s2[b, i] = s2
        self.mem_a[b, i] = a
        self.mem_r[b, i] = r
        self.mem_n[b] += 1

    # ---- learning ------------------------------------------------------------------------
    def end_slot(self, t: int) -> None:
        self.slot_count += 1
        sps = self.cfg.steps_per_slot
        every = max(1, round(1.0 / sps))  # slots between steps when sps < 1
        steps = round(sps) if sps >= 1.0 else int(self.slot_count % every == 0)
        if steps and int(self.mem_n.min()) >= self.cfg.batch:
            for _ in range(steps):
                self._learn()

    def _learn(self) -> None:
        cfg = self.cfg
        B = self.env.B
        high = np.minimum(self.mem_n, cfg.memory)
        idx = (self.rng.random((B, cfg.batch)) * high[:, None]).astype(np.int64)
        rows = np.arange(B)[:, None]
        s = self.mem_s[rows, idx]
        a = self.mem_a[rows, idx]
        y = self.mem_r[rows, idx]
        if cfg.gamma > 0.0:
            s2 = self.mem_s2[rows, idx]
            best = self.net.forward(s2).argmax(axis=2)[:, :, None]  # double DQN
            q_next = np.take_along_axis(self.target.forward(s2), best, axis=2)[:, :, 0]
            y = y + np.float32(cfg.gamma) * q_next
        self.last_loss = self.net.step(s, a, y, self.lr, cfg.huber)
        if cfg.gamma > 0.0:
            self.target.copy_from(self.net, cfg.soft_target)
        self.learn_calls += 1
        if cfg.reference_exploration:
            self._greedy_prob = min(REFERENCE_EPS_MAX, self._greedy_prob + REFERENCE_EPS_INCREMENT)

    def summary(self) -> dict[str, object]:
        return {
            "learn_calls": self.learn_calls,
            "explore": self.explore,
            "last_loss": self.last_loss,
            "plus_config": asdict(self.cfg),
        }


def save_plus_checkpoint(result: FinishedRun, path: Path) -> dict[str, Any]:
    """Save a finished ``amcoedge+`` run as an ``adadqn``-kind checkpoint (export-compatible)."""
    m = result.method_obj
    if not isinstance(m, PlusMethod):
        raise SimError("only an amcoedge+ run can be saved with save_plus_checkpoint")
    ck = {
        "kind": "adadqn",
        "variant": "amcoedge+",
        "config": asdict(agent_config(m.cfg, m.env.B)),
        "plus_config": asdict(m.cfg),
        "time_scale": TIME_SCALE,
        "agents": [m.net.agent_state_dict(b) for b in range(m.env.B)],
        "params": result.params.as_dict(),
        "episodes": result.episodes,
        "seed": result.seed,
        "avg_makespan": result.avg_makespan,
        "failure_rate": result.failure_rate,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, path)
    return ck
