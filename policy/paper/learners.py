"""The learned methods: one independent DQN agent per BS (paper-model.md §2, §3).

- ``amcoedge``: AdaDQN, 31 subset actions, 6→20→20→20→31, N(0, 0.3) weights, memory 500,
  target copy every 100 learn calls, penalty −10τ.
- ``drlcoedge``: one ES to pair with the local ES (5 actions; picking b = local only),
  6→20→20→5, N(0, 0.5), memory 1024, target copy every 200, penalty −2τ.
- ``smcoedge``: the 10 triples as actions, 6→20→20→10, otherwise as DRLCoEdge.

State [D, Q(t)] uses the start-of-slot queues, so each agent scores a whole slot in one batch.
A global slot counter drives learning: past 200 slots, every agent learns once every 10 slots.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from policy.paper.dqn import AgentConfig, DQNAgent
from policy.paper.env import PaperEnv
from policy.paper.methods import Method
from policy.paper.subsets import ALL_SUBSETS, TRIPLES

__all__ = ["ADADQN", "DRL", "LEARN_EVERY", "LEARN_START", "SMCO", "DQNMethod"]

LEARN_START = 200  # slots before learning starts
LEARN_EVERY = 10  # slots between learn calls

ADADQN = AgentConfig()
DRL = AgentConfig(n_actions=5, layers=2, init_std=0.5, memory=1024, replace_every=200)
SMCO = replace(DRL, n_actions=10)


class DQNMethod(Method):
    def __init__(self, name: str, cfg: AgentConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.step = 0
        self.learn_calls = 0
        self.agents: list[DQNAgent] = []

    def bind(self, env: PaperEnv, rng: np.random.Generator) -> None:
        super().bind(env, rng)
        B, N = env.B, env.N
        self.agents = [DQNAgent(self.cfg, rng) for _ in range(B)]
        self.tables: list[list[tuple[int, ...]]]
        if self.name == "drlcoedge":
            self.tables = [[(b,) if a == b else (b, a) for a in range(5)] for b in range(B)]
        else:
            table = list(ALL_SUBSETS if self.name == "amcoedge" else TRIPLES)
            self.tables = [table for _ in range(B)]
        self._act = np.zeros((B, N), dtype=np.int64)
        self._rew = np.zeros((B, N))
        self._idx: list[npt.NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)] * B

    def plan_slot(self, t: int) -> None:
        env = self.env
        q = env.Q[t]
        for b, agent in enumerate(self.agents):
            sizes = env.D[t, b]
            idx = np.flatnonzero(sizes)
            self._idx[b] = idx
            if idx.size == 0:
                continue
            states = np.empty((idx.size, 1 + env.B))
            states[:, 0] = sizes[idx]
            states[:, 1:] = q
            self._act[b, idx] = agent.act(states)

    def decide(self, t: int, b: int, n: int, size: float) -> tuple[int, ...]:
        return self.tables[b][self._act[b, n]]

    def feedback(self, b: int, n: int, ms: float, failed: bool) -> None:
        self._rew[b, n] = self.env.reward(ms, failed)

    def end_slot(self, t: int) -> None:
        env = self.env
        if t > 0:  # slot-0 samples are dropped: every queue starts empty
            q_now, q_next = env.Q[t], env.Q[t + 1]
            for b, agent in enumerate(self.agents):
                idx = self._idx[b]
                if idx.size == 0:
                    continue
                s = np.empty((idx.size, 1 + env.B))
                s[:, 0] = env.D[t, b, idx]
                s[:, 1:] = q_now
                s2 = np.empty_like(s)
                last = idx == env.N - 1
                nxt = np.where(last, 0, idx + 1)
                s2[:, 0] = np.where(last, env.D[t + 1, b, 0], env.D[t, b, nxt])
                s2[:, 1:] = q_now
                if last.any():
                    s2[last, 1:] = q_next
                agent.store(s, self._act[b, idx], self._rew[b, idx], s2)
        self.step += 1
        if self.step > LEARN_START and self.step % LEARN_EVERY == 0:
            for agent in self.agents:
                agent.learn()
            self.learn_calls += 1

    def summary(self) -> dict[str, object]:
        return {
            "learn_calls": self.learn_calls,
            "epsilon": [a.epsilon for a in self.agents],
            "last_loss": [a.last_loss for a in self.agents],
        }
