"""Methods: Optimal and greedy against the allocation module, determinism, the DQN agent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.allocation import cwa_clip, makespan, water_fill
from policy.paper.config import DEFAULT, SimError
from policy.paper.dqn import AgentConfig, DQNAgent
from policy.paper.env import PaperEnv
from policy.paper.learners import ADADQN, DQNMethod
from policy.paper.methods import Greedy, Optimal, rules_for
from policy.paper.runner import METHODS, run
from policy.paper.subsets import ALL_SUBSETS, TRIPLES

torch.set_num_threads(1)
SMALL = DEFAULT.with_(tasks=6)


def test_action_tables() -> None:
    assert len(ALL_SUBSETS) == 31 and ALL_SUBSETS[:5] == ((0,), (1,), (2,), (3,), (4,))
    assert (
        ALL_SUBSETS[5] == (0, 1)
        and ALL_SUBSETS[15] == (0, 1, 2)
        and ALL_SUBSETS[30] == (0, 1, 2, 3, 4)
    )
    assert len(TRIPLES) == 10 and TRIPLES[0] == (0, 1, 2)


def _random_env(seed: int, method: str) -> PaperEnv:
    rng = np.random.default_rng(seed)
    env = PaperEnv(DEFAULT, rules_for(method, DEFAULT), rng.uniform(0.1, 0.3, 50))
    env.reset(np.zeros((61, 5, 50)))
    env.q = list(rng.uniform(0, 20, 5))
    env.P = list(rng.uniform(0, 10, 5))
    env.L = list(rng.uniform(0, 0.3, 5))
    return env


@pytest.mark.parametrize("seed", range(10))
def test_optimal_matches_per_subset_cwa(seed: int) -> None:
    env = _random_env(seed, "optimal")
    opt = Optimal()
    opt.bind(env, np.random.default_rng(0))
    b, n, size = seed % 5, seed, 3.3
    U, W = env.task_vectors(b, n, size)
    got = opt.evaluate(np.array(U), np.array(W))
    for i, s in enumerate(ALL_SUBSETS):
        u = [U[j] for j in s]
        w = [W[j] for j in s]
        assert got[i] == pytest.approx(makespan(u, w, cwa_clip(u, w)), rel=1e-9)
    assert opt.decide(0, b, n, size) == ALL_SUBSETS[int(np.argmin(got))]


@pytest.mark.parametrize("seed", range(10))
def test_greedy_is_water_fill_over_all(seed: int) -> None:
    env = _random_env(seed, "greedy")
    g = Greedy()
    g.bind(env, np.random.default_rng(0))
    U, W = env.task_vectors(1, 2, 4.0)
    chosen = g.decide(0, 1, 2, 4.0)
    x, level = water_fill(U, W)
    assert set(chosen) == {j for j in range(5) if x[j] > 0}
    ms, _ = env.offload(1, 2, chosen, 4.0)
    assert ms == pytest.approx(level)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_deterministic_per_seed(method: str) -> None:
    a = run(method, SMALL, 4, seed=3)
    b = run(method, SMALL, 4, seed=3)
    c = run(method, SMALL, 4, seed=4)
    assert a.makespans == b.makespans and a.failures == b.failures
    assert a.makespans != c.makespans  # ρ and arrivals are re-drawn per seed
    assert all(0 < m <= SMALL.deadline for m in a.makespans)


def test_learning_schedule_and_epsilon() -> None:
    res = run("amcoedge", SMALL, 5, seed=0)
    m = res.method_obj
    assert isinstance(m, DQNMethod)
    # 300 slots: learn at slots 210, 220, ..., 300 -> 10 calls per agent
    assert m.learn_calls == 10
    assert all(a.learn_steps == 10 for a in m.agents)
    assert m.agents[0].epsilon == pytest.approx(0.01)
    assert m.agents[0].mem_count > 0


def test_batched_action_equals_single() -> None:
    agent = DQNAgent(ADADQN, np.random.default_rng(0))
    agent.epsilon = 2.0  # always greedy
    states = np.random.default_rng(1).uniform(0, 5, (20, 6))
    batch = agent.act(states)
    single = [int(agent.act(states[i : i + 1])[0]) for i in range(20)]
    assert batch.tolist() == single
    with torch.no_grad():
        ref = agent.eval_net(torch.as_tensor(states, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(agent.q_values(states), ref, atol=1e-5)


def test_dqn_learn_moves_taken_action_towards_target() -> None:
    cfg = AgentConfig(replace_every=1000)
    agent = DQNAgent(cfg, np.random.default_rng(0))
    s = np.tile([[3.0, 0, 0, 0, 0, 0]], (8, 1))
    agent.store(s, np.full(8, 7), np.full(8, -0.2), s)
    q0 = agent.q_values(s[:1])[0].copy()
    for _ in range(300):
        agent.learn()
    q1 = agent.q_values(s[:1])[0]
    y = -0.2 + cfg.gamma * q0.max()  # the target network is the initial one throughout
    assert abs(q1[7] - y) < 0.5 * abs(q0[7] - y)
    assert np.isfinite(q1).all()


def test_unknown_method_and_bad_episodes() -> None:
    with pytest.raises(SimError):
        run("nope", SMALL, 1, 0)
    with pytest.raises(SimError):
        run("local", SMALL, 0, 0)


def test_optimal_drops_task_when_nothing_beats_ten_seconds() -> None:
    env = _random_env(0, "optimal")
    env.q = [1000.0] * 5  # every ES is 20+ s behind
    opt = Optimal()
    opt.bind(env, np.random.default_rng(0))
    assert opt.decide(0, 0, 0, 3.0) == ()
    before = list(env.P)
    ms, failed = env.offload(0, 0, (), 3.0)
    assert failed and ms == 10.0 and before == env.P
    st = env.stats()
    assert st.tasks == 1 and st.failure_rate == 1.0 and st.makespan == pytest.approx(1.0)
