"""Peers sharing one host's cores (issue 15): the fair-share paces, the event simulation, the
simulator's host mode and fitting the host's cores from a real run's shares."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from peer.harness.scenario_sim import _Share, fit_host_cores
from policy.fleet.features import CandidateArrays
from policy.fleet.heuristics import Choice, greedy
from policy.fleet.host import Job, SharedHost, paces
from policy.fleet.sim import RequestCtx, SimConfig, Trace, make_trace, run


def test_paces_water_fill_capped_by_demand() -> None:
    assert paces([1.0, 1.0], 2.0) == [1.0, 1.0]
    assert paces([1.0, 1.0], 1.0) == [0.5, 0.5]
    # the quota-capped peers keep their quota; the uncapped one gets what is left
    assert paces([1.0, 0.5, 0.25, 0.25], 1.6) == pytest.approx([0.6, 1.0, 1.0, 1.0])
    assert paces([], 1.0) == []


def test_two_peers_on_one_core_take_twice_as_long() -> None:
    h = SharedHost(1.0, [1.0, 1.0])
    a, b = h.add(Job(0, 0, 0.0, 1.0)), h.add(Job(1, 1, 0.0, 1.0))
    h.run_until(math.inf)
    assert (a.finish, b.finish) == pytest.approx((2.0, 2.0))
    assert h.busy_s == pytest.approx([2.0, 2.0])


def test_projection_is_what_happens_without_further_arrivals() -> None:
    h = SharedHost(1.0, [1.0, 1.0])
    a = h.add(Job(0, 0, 0.0, 1.0))
    assert h.project()[0][a.key] == pytest.approx((0.0, 1.0))
    b = h.add(Job(1, 1, 0.5, 1.0))
    proj, ends = h.project()
    # 0.5 s alone, then half pace: a ends at 1.5, b has 0.5 left and runs alone to 2.0
    assert proj[a.key] == pytest.approx((0.0, 1.5)) and proj[b.key] == pytest.approx((0.5, 2.0))
    assert ends == pytest.approx([1.5, 2.0])
    assert math.isnan(a.finish)  # the host itself has not moved
    h.run_until(math.inf)
    assert (a.finish, b.finish) == pytest.approx((1.5, 2.0))


def test_one_peer_serves_its_shares_in_order() -> None:
    h = SharedHost(4.0, [1.0])
    a, b = h.add(Job(0, 0, 0.0, 1.0)), h.add(Job(1, 0, 0.2, 1.0))
    h.run_until(math.inf)
    assert (a.start, a.finish, b.start, b.finish) == pytest.approx((0.0, 1.0, 1.0, 2.0))


def test_a_quota_change_changes_the_pace() -> None:
    h = SharedHost(1.0, [1.0, 1.0])
    a, b = h.add(Job(0, 0, 0.0, 1.0)), h.add(Job(1, 1, 0.0, 4.0))
    h.set_demand(1, 0.25, at=1.0)  # after 1 s at 0.5 each, b asks for a quarter core
    h.run_until(math.inf)
    # from 1 s: b keeps its quarter core, a gets the other 0.75 for its last 0.5 s
    assert a.finish == pytest.approx(1.0 + 0.5 / 0.75)
    # b's last 3.5 core-seconds at a quarter core take 14 s
    assert b.finish == pytest.approx(1.0 + 3.5 / 0.25)


def _local(ctx: RequestCtx, rng: np.random.Generator) -> Choice:
    i = int(np.flatnonzero(ctx.arr.is_self > 0)[0])
    return np.array([i]), np.array([ctx.units]), 0.0


def _pair_trace(host_cores: float | None) -> Trace:
    """Two peers, each gets one local request of 1 s at the same moment."""
    cfg = SimConfig(n_peers=2, n_requests=2, staleness_s=0.0, crash_rate=0.0, warmup_frac=0.0)
    base = make_trace(cfg, 0)
    return replace(
        base,
        times=np.array([0.0, 1e-6]),
        origin_u=np.array([0.0, 0.99]),
        images=np.array([1, 1]),
        steps=np.array([10, 10]),
        pixels=np.array([1.0, 1.0]),
        deadline=np.array([10.0, 10.0]),
        a_s=np.array([0.1, 0.1]),
        c_s=np.array([0.0, 0.0]),
        host_cores=host_cores,
        demand=np.array([1.0, 1.0]),
    )


def test_simulator_host_mode_slows_concurrent_shares() -> None:
    free = run(_pair_trace(None), _local, time_decisions=False)
    assert free.makespan == pytest.approx([1.0, 1.0])
    shared = run(_pair_trace(1.0), _local, time_decisions=False, track_jobs=True)
    assert shared.makespan == pytest.approx([2.0, 2.0], abs=1e-5)
    assert shared.peer_busy is not None and shared.peer_busy == pytest.approx([2.0, 2.0], abs=1e-5)
    # the second request, dispatched while the first computes, pushed it back by ~1 s
    assert shared.externality is not None and shared.externality[1] == pytest.approx(1.0, abs=1e-3)


def test_simulator_host_mode_matches_plain_when_cores_suffice() -> None:
    trace = make_trace(SimConfig(n_peers=4, n_requests=200, staleness_s=0.0, crash_rate=0.0), 3)

    def rec(ctx: RequestCtx, rng: np.random.Generator) -> Choice:
        return greedy(ctx.arr, ctx.units, rng)

    plain = run(trace, rec, time_decisions=False)
    roomy = run(replace(trace, host_cores=64.0), rec, time_decisions=False)
    tight = run(replace(trace, host_cores=2.0), rec, time_decisions=False)
    # a host with room for every peer changes only the order of shares arriving together
    assert np.mean(roomy.makespan) == pytest.approx(np.mean(plain.makespan), rel=0.02)
    assert np.mean(tight.makespan) > 1.5 * np.mean(plain.makespan)


def _shares(pattern: list[tuple[int, float, float, float]]) -> list[_Share]:
    return [_Share(p, t0, t1, pred, 1.0) for p, t0, t1, pred in pattern]


def test_fit_finds_the_cores_that_explain_the_slowdowns() -> None:
    # two single-thread peers: alone a share takes its predicted second; overlapping, two
    pattern: list[tuple[int, float, float, float]] = []
    for k in range(8):
        t = 10.0 * k
        pattern += [(0, t, t + 2.0, 1.0), (1, t, t + 2.0, 1.0)]  # together on one core
        pattern += [(0, t + 3.0, t + 4.0, 1.0), (1, t + 5.0, t + 6.0, 1.0)]  # alone
    fit = fit_host_cores([_shares(pattern)], 2, 8.0)
    assert fit["host_cores"] == pytest.approx(1.0)
    assert fit["log_spread"] < 0.01 < fit["log_spread_uncontended"]


def test_fit_says_none_when_the_run_shows_no_contention() -> None:
    pattern = [(k % 2, 2.0 * k, 2.0 * k + 1.0, 1.0) for k in range(30)]  # never overlapping
    fit = fit_host_cores([_shares(pattern)], 2, 8.0)
    assert fit["host_cores"] is None


def test_candidate_arrays_unchanged_by_host_mode() -> None:
    # the recruiter's inputs keep their shape and meaning (believed costs, projected waits)
    seen: list[CandidateArrays] = []

    def rec(ctx: RequestCtx, rng: np.random.Generator) -> Choice:
        seen.append(ctx.arr)
        return _local(ctx, rng)

    run(_pair_trace(1.0), rec, time_decisions=False)
    assert len(seen) == 2 and seen[1].wait.shape == (2,)
    # the second origin sees the first peer busy until its projected end (~1 s from now)
    assert seen[1].wait[0] == pytest.approx(1.0, abs=1e-3)


def test_randomised_episodes_on_a_shared_host_only_when_asked() -> None:
    from policy.fleet.randomise import RandomiseConfig, randomised_trace

    plain = [randomised_trace(s, RandomiseConfig(n_requests=50)) for s in range(20)]
    assert all(t.host_cores is None for t in plain)
    hosted = [randomised_trace(s, RandomiseConfig(n_requests=50, host_prob=1.0)) for s in range(20)]
    for t in hosted:
        assert t.host_cores is not None and t.demand is not None
        assert 0.5 * t.demand.sum() - 1e-9 <= t.host_cores <= t.demand.sum() + 1e-9
