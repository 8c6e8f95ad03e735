"""The paper environment's queue and backlog updates on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from policy.allocation import cwa_clip, cwa_closed_form
from policy.paper.config import DEFAULT, SimError, SimParams, capacities_up_to
from policy.paper.env import PaperEnv
from policy.paper.methods import rules_for


def make_env(method: str = "amcoedge", params: SimParams = DEFAULT) -> PaperEnv:
    env = PaperEnv(params, rules_for(method, params), np.full(params.tasks, 0.2))
    env.reset(np.zeros((params.slots, 5, params.tasks)))
    return env


def test_local_remote_and_pair_updates() -> None:
    env = make_env()
    ms, failed = env.offload(0, 0, (0,), 2.0)
    assert ms == pytest.approx(2 * 0.2 / 10) and not failed
    assert env.P[0] == pytest.approx(0.4) and env.L[0] == 0.0
    ms, _ = env.offload(0, 1, (1,), 4.0)
    assert ms == pytest.approx(4 / 425 + 0.8 / 20)
    assert env.L[0] == pytest.approx(4 / 425) and env.P[1] == pytest.approx(0.8)
    # pair: local piece waits for ES 0's assigned work, remote piece for the link and ES 1
    U = [3 * 0.2 / 10, 3 / 425 + 0.6 / 20]
    W = [0.4 / 10, 4 / 425 + 0.8 / 20]
    level, x = cwa_closed_form(U, W)
    ms, _ = env.offload(0, 2, (0, 1), 3.0)
    assert ms == pytest.approx(level)
    assert env.P[0] == pytest.approx(0.4 + x[0] * 0.6)
    assert env.P[1] == pytest.approx(0.8 + x[1] * 0.6)
    assert env.L[0] == pytest.approx(4 / 425 + x[1] * 3 / 425)
    # other BSs' backlogs are untouched; ES queues do not drain within the slot
    assert env.L[1:] == [0.0] * 4 and env.q == [0.0] * 5


def test_end_of_slot_drain() -> None:
    env = make_env()
    env.offload(0, 0, (0,), 60.0)  # 12 Gcycles on a 10 GHz ES
    env.offload(1, 0, (1,), 50.0)  # 10 Gcycles on 20 GHz
    env.end_slot(0)
    np.testing.assert_allclose(env.Q[1], [2.0, 0.0, 0.0, 0.0, 0.0])
    assert env.P == [0.0] * 5 and env.L == [0.0] * 5
    # the carried queue delays the next slot's local task
    ms, _ = env.offload(0, 0, (0,), 2.0)
    assert ms == pytest.approx(2.0 / 10 + 0.4 / 10)
    env.end_slot(1)
    np.testing.assert_allclose(env.Q[2], [0.0] * 5)


def test_link_cap_only_after_multi_es_actions() -> None:
    env = make_env()
    for n in range(3):
        env.offload(0, n, (3,), 200.0)  # single remote: L grows past one slot
    assert env.L[0] == pytest.approx(600 / 475)
    env.offload(0, 3, (0, 4), 200.0)
    assert env.L[0] == pytest.approx(1.0)  # multi-ES: capped at Δ
    opt = make_env("optimal")
    opt.offload(0, 0, (3,), 200.0)
    opt.offload(0, 1, (3, 4), 400.0)
    assert opt.L[0] > 1.0  # Optimal never caps


def test_clip_makespan_counts_zero_share_waits() -> None:
    env = make_env()
    first, _ = env.offload(0, 0, (1,), 50.0)  # ES 1 busy 0.5 s, link backlog 50/425 s
    assert first == pytest.approx(50 / 425 + 0.5)
    U = [2 * 0.2 / 10, 2 / 425 + 0.4 / 20]
    W = [0.0, 50 / 425 + 10 / 20]
    x = cwa_clip(U, W)
    assert x[0] == 1.0 and x[1] == 0.0
    ms, failed = env.offload(0, 1, (0, 1), 2.0)
    # the task runs wholly on ES 0 (0.04 s) but the make-span still sees ES 1's wait
    assert ms == pytest.approx(W[1]) and not failed
    st = env.stats()
    assert st.tasks == 2 and st.failure_rate == 0.0
    assert st.makespan == pytest.approx((first + ms) / 2)
    # a failed task is recorded with make-span τ and rewarded -10τ
    ms3, failed3 = env.offload(0, 2, (0,), 100.0)
    assert failed3 and ms3 > 1.0
    st = env.stats()
    assert st.failure_rate == pytest.approx(1 / 3)
    assert st.makespan == pytest.approx((first + ms + 1.0) / 3)
    assert env.reward(ms3, failed3) == pytest.approx(-10.0)
    assert env.reward(ms, failed) == pytest.approx(-ms)


def test_baseline_quirks() -> None:
    env = make_env("randcoedge")
    env.offload(2, 0, (2,), 4.0)  # local only still charges the link
    assert env.L[2] == pytest.approx(4 / 450)
    env.offload(2, 1, (2,), 300.0)
    # waits capped at τ for the baselines
    U, W = env.task_vectors(2, 2, 2.0)
    assert W[2] == pytest.approx(1.0)
    assert env.reward(2.0, True) == pytest.approx(-2.0)
    drl = make_env("drlcoedge")
    U, W = drl.task_vectors(0, 0, 2.0)
    assert U[0] == pytest.approx(2 / 400 + 0.4 / 10)  # local piece pays the transfer
    clean = SimParams(clean=True)
    assert rules_for("randcoedge", clean) == rules_for("amcoedge", clean)


def test_episode_metrics_and_arrivals() -> None:
    p = DEFAULT.with_(tasks=4, arrival_prob=1.0)
    env = PaperEnv(p, rules_for("local", p), np.full(4, 0.2))
    d = env.draw_arrivals(np.random.default_rng(0))
    assert d.shape == (61, 5, 4) and np.all((d >= 2) & (d <= 5))
    p0 = DEFAULT.with_(arrival_prob=0.0)
    env0 = PaperEnv(p0, rules_for("local", p0), np.full(50, 0.2))
    assert not env0.draw_arrivals(np.random.default_rng(0)).any()
    assert env0.stats().tasks == 0


def test_params_validation() -> None:
    with pytest.raises(SimError):
        SimParams(arrival_prob=1.5)
    with pytest.raises(SimError):
        SimParams(deadline=0.0)
    with pytest.raises(SimError):
        SimParams(capacities=(1.0, 2.0))
    with pytest.raises(SimError):
        capacities_up_to(5.0)
    assert capacities_up_to(20.0) == (10.0, 12.5, 15.0, 17.5, 20.0)
    with pytest.raises(SimError):
        rules_for("nope", DEFAULT)
