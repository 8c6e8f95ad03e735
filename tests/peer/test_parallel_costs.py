"""Measured parallel-steps costs and the auto guard, on virtual time.

A request's "real" wall time comes from replaying the plan's schedule with the *true* costs of
the moment (``peer.core.parallel_plan.simulate``); the planner sees only calibration plus what
the tracker measured from past runs. Calibration is right for one peer working alone (so batch
and chain, one peer's work here, predict right and lose to local) but optimistic for parallel
steps: it knows nothing of several peers contending for the CPUs, nor of the real hand-off."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from peer.core.parallel_costs import (
    HISTORY,
    PRIOR_GUARD,
    STALE_S,
    MeasuredParallel,
    ParallelCostTracker,
    quantile,
)
from peer.core.parallel_plan import Costs, simulate
from peer.core.planner import Cand, PeerState, Plan, Planner, Work, parallel_layout
from peer.core.recruit import Recruiters

STEPS = 50
LOCAL_STEP = 0.012  # the origin's per-step cost; its CostTracker has it right (local runs)
CALIB_REMOTE = LOCAL_STEP  # what gossip says a remote peer costs per step, alone


@dataclass(frozen=True)
class Truth:
    """What the peers really do at the moment (per step, per fine solve, per coarse eval)."""

    remote_step: float
    handoff: float
    coarse_eval: float = LOCAL_STEP
    iterations: int = 1


QUIET = Truth(remote_step=0.016, handoff=0.008)  # a little contention
LOADED = Truth(remote_step=0.045, handoff=0.04)


def peers() -> list[PeerState]:
    me = PeerState("a", True, ("h", 1), 0.0, 0.0, LOCAL_STEP - 0.001, 0.001)
    return [me] + [
        PeerState(n, False, ("h", 2 + k), 0.0, 0.0, CALIB_REMOTE - 0.001, 0.001, 0.001)
        for k, n in enumerate("bcd")
    ]


def decide(tracker: ParallelCostTracker | None, now: float) -> Plan:
    measured = tracker.snapshot(now) if tracker is not None else None
    work = Work("generate", 1, STEPS, deterministic=True, measured=measured)
    return Planner(Recruiters(seed=0)).plan(peers(), work, mode="auto", policy="greedy")


def run(plan: Plan, truth: Truth, tracker: ParallelCostTracker, now: float) -> float:
    """Carry out ``plan`` 'for real' (the schedule at the true costs); feed the tracker as the
    node does; return the wall time."""
    if plan.mode == "local":
        return STEPS * LOCAL_STEP
    assert plan.mode == "parallel"
    bounds = tuple(int(b) for b in plan.detail["bounds"])  # type: ignore[attr-defined]
    names = sorted({s.peer for s in plan.shares}, key=lambda n: n != "a")
    if "a" not in names:
        names = ["a", *names]
    holder = [names.index(s.peer) for s in plan.shares]
    step = [LOCAL_STEP if n == "a" else truth.remote_step for n in names]
    hop = [0.0 if n == "a" else truth.handoff for n in names]
    costs = Costs(step, hop, 2 * truth.coarse_eval, LOCAL_STEP, [0.0] * len(names))
    wall = simulate(bounds, holder, costs, truth.iterations)
    for s in plan.shares:
        assert s.step_range is not None
        n = s.step_range[1] - s.step_range[0]
        st = step[names.index(s.peer)]
        tracker.observe_fine(s.peer, n, 1, n * st, n * st + hop[names.index(s.peer)], now)
    tracker.observe_coarse(2 * len(bounds), 1, 2 * len(bounds) * truth.coarse_eval, now)
    tracker.observe_last(1, LOCAL_STEP, now)
    tracker.observe_iterations(len(bounds) - 1, 25.0, truth.iterations, now)
    tracker.observe_outcome(
        plan.predicted_makespan_s,
        wall,
        plan.alternatives.get("local"),
        now,
        measured=plan.detail.get("costs") == "measured",
    )
    return wall


def test_without_measurements_the_planner_is_unchanged() -> None:
    cold = decide(None, 0.0)
    assert cold.mode == "parallel" and cold.detail["guard"] == 1.0
    assert cold.detail["costs"] == "calibrated"
    fresh = ParallelCostTracker()
    prior = decide(fresh, 0.0)
    assert prior.detail["guard"] == PRIOR_GUARD
    assert prior.predicted_makespan_s == pytest.approx(cold.predicted_makespan_s)


def test_slow_runs_switch_auto_to_local_and_it_stays_there() -> None:
    tracker = ParallelCostTracker()
    now, picks, walls = 0.0, [], []
    local_s = STEPS * LOCAL_STEP
    for _ in range(12):
        plan = decide(tracker, now)
        picks.append(plan.mode)
        guard_before = tracker.guard(now)
        wall = run(plan, LOADED, tracker, now)
        walls.append(wall)
        if plan.mode == "parallel":
            # optimistic calibration: it is picked, and it loses to local under this load
            assert wall > local_s
            # the next decision is more conservative: the guard would now flip this one
            assert tracker.guard(now) > guard_before
            assert plan.predicted_makespan_s * tracker.guard(now) >= wall - 1e-9
        now += 5.0
    assert picks[0] == "parallel"
    assert picks.count("parallel") <= 2
    first_local = picks.index("local")
    assert all(m == "local" for m in picks[first_local:])
    # the plan states what it learned: measured costs, the guard
    assert decide(tracker, now).alternatives["parallel"] > 0


def test_fast_runs_keep_parallel_and_the_prediction_follows_them() -> None:
    tracker = ParallelCostTracker()
    now = 0.0
    errors = []
    for _ in range(10):
        plan = decide(tracker, now)
        assert plan.mode == "parallel"
        wall = run(plan, QUIET, tracker, now)
        assert wall < STEPS * LOCAL_STEP
        errors.append(wall / plan.predicted_makespan_s)
        now += 5.0
    assert errors[0] > 1.15  # calibration was optimistic
    assert all(abs(e - 1.0) < 0.15 for e in errors[2:])  # measured costs: close after a run
    snap = tracker.snapshot(now)
    assert snap.guard < 1.2
    assert snap.step_s["b"] == pytest.approx(QUIET.remote_step)
    assert decide(tracker, now).detail["costs"] == "measured"


def test_recovery_after_load_drops() -> None:
    tracker = ParallelCostTracker()
    now = 0.0
    for _ in range(6):  # loaded: auto learns to run locally
        run(decide(tracker, now), LOADED, tracker, now)
        now += 5.0
    assert decide(tracker, now).mode == "local"
    picks = []
    for _ in range(30):  # the load drops; requests every 20 s of virtual time
        plan = decide(tracker, now)
        picks.append(plan.mode)
        run(plan, QUIET, tracker, now)
        now += 20.0
    back = picks.index("parallel")
    assert (
        back > 0 and back * 20.0 <= STALE_S + 60.0
    )  # parallel is tried again within the stale horizon
    assert all(m == "parallel" for m in picks[back:])  # and, being fast, it stays


def test_loss_pin_is_cleared_by_a_win_and_doubles_its_half_life_in_a_row() -> None:
    t = ParallelCostTracker(half_life_s=100.0)
    t.observe_outcome(0.1, 0.4, 0.3, 0.0)  # loss: ratio 4
    assert t.guard(0.0) == pytest.approx(4.0)
    assert t.guard(100.0) == pytest.approx(2.0)  # half-life in log space: 4 -> 2
    t.observe_outcome(0.1, 0.4, 0.3, 100.0)  # a second loss in a row
    # 100 s later the pin (ratio 4) has faded over half of its doubled half-life (200 s), not
    # over a whole one (which would give 2); the ratio history alone would give less
    assert t.guard(200.0) == pytest.approx(4.0 ** (0.5**0.5))
    assert quantile([4.0 ** (0.5**2), 4.0**0.5], 0.75) < t.guard(200.0)
    t.observe_outcome(0.3, 0.25, 0.3, 200.0)  # a win
    assert t._loss is None and t._losses_in_row == 0


def test_history_and_staleness_are_bounded() -> None:
    t = ParallelCostTracker()
    for k in range(3 * HISTORY):
        t.observe_fine("b", 10, 1, 0.1 * (k + 1), 0.1 * (k + 1) + 0.01, float(k))
    assert len(t._step["b"].samples) == HISTORY
    snap = t.snapshot(float(3 * HISTORY))
    assert snap.step_s["b"] > 0.01 * 2 * HISTORY  # only the recent samples count
    assert t.snapshot(3 * HISTORY + STALE_S + 1.0).step_s == {}  # stale: back to calibration
    # a solve queued behind this job's own earlier one teaches the step cost, not the hand-off
    t.observe_fine("c", 10, 2, 0.2, 5.0, 0.0, queued=True)
    assert "c" not in t.snapshot(0.0).handoff_s and t.snapshot(0.0).step_s["c"] == 0.01
    # broken samples are ignored
    t.observe_fine("d", 0, 1, 0.1, 0.1, 0.0)
    t.observe_outcome(0.0, 1.0, 1.0, 0.0)
    assert "d" not in t.snapshot(0.0).step_s


def test_learned_iterations_replace_the_assumed_ones() -> None:
    t = ParallelCostTracker()
    for k in (1, 2, 2):
        t.observe_iterations(4, 25.0, k, 0.0)
    t.observe_iterations(4, None, 4, 0.0)  # to exactness: nothing to learn
    snap = t.snapshot(1.0)
    assert snap.iterations_for(4, 25.0, False) == 2
    assert snap.iterations_for(4, 25.0, True) is None
    assert snap.iterations_for(3, 25.0, False) is None
    me, *rest = peers()
    cands = [Cand(p, 0.0, 0.0, 0.0, 0.0) for p in (me, *rest)]
    work = Work("generate", 1, STEPS, deterministic=True, segments=4)
    assert parallel_layout(cands[0], cands[1:], work, 4)[2] == 1  # the constant rule
    learned = Work("generate", 1, STEPS, deterministic=True, segments=4, measured=snap)
    assert parallel_layout(cands[0], cands[1:], learned, 4)[2] == 2


def test_measured_costs_drive_the_prediction() -> None:
    me, *rest = peers()
    cands = [Cand(p, 0.0, 0.0, 0.0, 0.0) for p in (me, *rest)]
    base = Work("generate", 1, STEPS, deterministic=True)
    cold = parallel_layout(cands[0], cands[1:], base, 4)[1]
    # b measured 3x its calibration: c and d (unmeasured) are assumed off by the same factor
    m = MeasuredParallel(step_s={"b": 3 * CALIB_REMOTE}, handoff_s={"b": 0.02})
    warm = Work("generate", 1, STEPS, deterministic=True, measured=m)
    hot = parallel_layout(cands[0], cands[1:], warm, 4)[1]
    assert hot > cold
    only_b = MeasuredParallel(
        step_s={"b": 3 * CALIB_REMOTE, "c": 3 * CALIB_REMOTE, "d": 3 * CALIB_REMOTE},
        handoff_s={"b": 0.02, "c": 0.02, "d": 0.02},
    )
    same = Work("generate", 1, STEPS, deterministic=True, measured=only_b)
    assert parallel_layout(cands[0], cands[1:], same, 4)[1] == pytest.approx(hot)
