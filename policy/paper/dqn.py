"""The reference DQN agent (AdaDQN and the DQN baselines) in torch, one per BS.

Acting uses a numpy copy of the evaluation network so that a whole slot's tasks are scored in
one batched forward; the copy is refreshed after every gradient step. The learning rule follows
paper-model.md §2.2: MSE over all outputs with the target equal to the prediction except at the
taken action, y = r + γ·max Q_target(s'), no terminal masking, replay sampled with replacement,
ε = probability of acting greedily, rising by a fixed increment per learn call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

__all__ = ["AgentConfig", "DQNAgent", "build_mlp"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class AgentConfig:
    n_features: int = 6
    n_actions: int = 31
    hidden: int = 20
    layers: int = 3  # hidden layers
    init_std: float = 0.3
    init_bias: float = 0.1
    lr: float = 0.001
    gamma: float = 0.9
    eps_max: float = 0.99
    eps_increment: float = 0.001
    replace_every: int = 100
    memory: int = 500
    batch: int = 32


def build_mlp(cfg: AgentConfig) -> nn.Sequential:
    mods: list[nn.Module] = []
    width_in = cfg.n_features
    for _ in range(cfg.layers):
        mods += [nn.Linear(width_in, cfg.hidden), nn.ReLU()]
        width_in = cfg.hidden
    mods.append(nn.Linear(width_in, cfg.n_actions))
    return nn.Sequential(*mods)


def _init(net: nn.Sequential, cfg: AgentConfig, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                w = rng.normal(0.0, cfg.init_std, size=tuple(m.weight.shape))
                m.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
                m.bias.fill_(cfg.init_bias)


class DQNAgent:
    def __init__(self, cfg: AgentConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.eval_net = build_mlp(cfg)
        self.target_net = build_mlp(cfg)
        _init(self.eval_net, cfg, rng)
        _init(self.target_net, cfg, rng)  # replaced at the first learn call
        self.opt = torch.optim.Adam(self.eval_net.parameters(), lr=cfg.lr)
        self.epsilon = 0.0
        self.learn_steps = 0
        m = cfg.memory
        self.mem_s: F64 = np.zeros((m, cfg.n_features))
        self.mem_a: I64 = np.zeros(m, dtype=np.int64)
        self.mem_r: F64 = np.zeros(m)
        self.mem_s2: F64 = np.zeros((m, cfg.n_features))
        self.mem_count = 0
        self.last_loss = float("nan")
        self._weights: list[tuple[F64, F64]] = []
        self._refresh()

    def _refresh(self) -> None:
        self._weights = [
            (
                m.weight.detach().numpy().astype(np.float64).T.copy(),
                m.bias.detach().numpy().astype(np.float64).copy(),
            )
            for m in self.eval_net
            if isinstance(m, nn.Linear)
        ]

    def q_values(self, states: F64) -> F64:
        """Q-values of the evaluation network, numpy (batch, n_actions)."""
        h = states
        last = len(self._weights) - 1
        for i, (w, bias) in enumerate(self._weights):
            h = h @ w + bias
            if i < last:
                h = np.maximum(h, 0.0)
        return h

    def act(self, states: F64) -> I64:
        """ε-greedy action indices for a batch of states (greedy with probability ε)."""
        k = states.shape[0]
        u = self.rng.random(k)
        actions: I64 = np.asarray(self.rng.integers(0, self.cfg.n_actions, size=k), dtype=np.int64)
        greedy: npt.NDArray[np.bool_] = np.asarray(u < self.epsilon)
        if greedy.any():
            q = self.q_values(states[greedy])
            actions[greedy] = np.argmax(q, axis=1)
        return actions

    def store(self, s: F64, a: I64, r: F64, s2: F64) -> None:
        m = self.cfg.memory
        for i in range(s.shape[0]):
            idx = self.mem_count % m
            self.mem_s[idx] = s[i]
            self.mem_a[idx] = a[i]
            self.mem_r[idx] = r[i]
            self.mem_s2[idx] = s2[i]
            self.mem_count += 1

    def learn(self) -> float:
        cfg = self.cfg
        if self.mem_count == 0:
            return float("nan")
        if self.learn_steps % cfg.replace_every == 0:
            self.target_net.load_state_dict(self.eval_net.state_dict())
        high = min(self.mem_count, cfg.memory)
        idx = self.rng.integers(0, high, size=cfg.batch)  # with replacement
        s = torch.as_tensor(self.mem_s[idx], dtype=torch.float32)
        s2 = torch.as_tensor(self.mem_s2[idx], dtype=torch.float32)
        a = torch.as_tensor(self.mem_a[idx])
        r = torch.as_tensor(self.mem_r[idx], dtype=torch.float32)
        with torch.no_grad():
            q_next = self.target_net(s2).max(dim=1).values
        q_eval = self.eval_net(s)
        target = q_eval.detach().clone()
        target[torch.arange(cfg.batch), a] = r + cfg.gamma * q_next
        loss = torch.mean((target - q_eval) ** 2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.epsilon = (
            self.epsilon + cfg.eps_increment if self.epsilon < cfg.eps_max else cfg.eps_max
        )
        self.learn_steps += 1
        self._refresh()
        self.last_loss = float(loss.item())
        return self.last_loss
