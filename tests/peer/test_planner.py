"""Planner: shares sum, whole units, each mode, auto, fallback to greedy."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.core.errors import PlanError
from peer.core.planner import PeerState, Planner, Work, applicable_modes
from peer.core.recruit import Recruiters
from policy.ort import OrtError


def peer(
    name: str,
    *,
    me: bool = False,
    wait: float = 0.0,
    speed: float = 1.0,
    rtt: float = 0.001,
    pending: float = 0.0,
) -> PeerState:
    return PeerState(
        name=name,
        is_self=me,
        addr=("127.0.0.1", 7000 + len(name)),
        wait_s=wait,
        view_age_s=0.2 if not me else 0.0,
        a_s=0.004 / speed,
        c_s=0.0008 / speed,
        rtt_s=0.0 if me else rtt,
        own_pending_s=pending,
    )


@pytest.fixture
def planner() -> Planner:
    return Planner(Recruiters(seed=0))


def cluster4() -> list[PeerState]:
    return [
        peer("a", me=True, speed=0.25),
        peer("b", speed=1.0),
        peer("c", speed=0.5),
        peer("d", speed=0.25, wait=0.2),
    ]


@pytest.mark.parametrize("policy", ["onnx", "greedy", "random", "equal", "local"])
def test_batch_shares_are_whole_and_sum(planner: Planner, policy: str) -> None:
    plan = planner.plan(cluster4(), Work("generate", 8, 20), mode="batch", policy=policy)
    units = sorted(u for s in plan.shares for u in s.units)
    assert units == list(range(8))
    assert all(len(s.units) >= 1 for s in plan.shares)
    assert len({s.peer for s in plan.shares}) == len(plan.shares)
    # each share's prediction, computed by hand from the peer's cost terms (affine per step,
    # 512 B per image over the default 100 MB/s link, one round trip per remote share)
    by_name = {p.name: p for p in cluster4()}
    for sh in plan.shares:
        p, n = by_name[sh.peer], len(sh.units)
        hand = p.wait_s + 20 * p.a_s + n * 20 * p.c_s
        if not p.is_self:
            hand += p.rtt_s + n * 512 / p.bytes_per_s
        assert sh.predicted_s == pytest.approx(hand, rel=1e-9)
    assert plan.predicted_makespan_s == pytest.approx(max(s.predicted_s for s in plan.shares))


def test_local_policy_keeps_everything_here(planner: Planner) -> None:
    plan = planner.plan(cluster4(), Work("generate", 8, 20), mode="batch", policy="local")
    assert [s.peer for s in plan.shares] == ["a"]
    assert plan.mode == "local"


def test_slow_origin_offloads_to_fast_idle_peer(planner: Planner) -> None:
    plan = planner.plan(cluster4(), Work("generate", 8, 20), mode="batch", policy="greedy")
    by_peer = {s.peer: len(s.units) for s in plan.shares}
    assert by_peer.get("b", 0) >= max(by_peer.values())
    local = planner.plan(cluster4(), Work("generate", 8, 20), mode="local", policy="greedy")
    assert plan.predicted_makespan_s < local.predicted_makespan_s


def test_fixed_cost_keeps_small_requests_local(planner: Planner) -> None:
    """With a large per-share overhead, splitting one image is a loss: stays on one peer."""
    peers = [peer("a", me=True), peer("b", rtt=0.5)]
    plan = planner.plan(peers, Work("generate", 1, 10), mode="batch", policy="greedy")
    assert [s.peer for s in plan.shares] == ["a"]


def test_own_pending_dispatches_count(planner: Planner) -> None:
    fresh = [peer("a", me=True, speed=0.5), peer("b", speed=1.0)]
    herded = [peer("a", me=True, speed=0.5), peer("b", speed=1.0, pending=5.0)]
    p1 = planner.plan(fresh, Work("generate", 8, 20), mode="batch", policy="greedy")
    p2 = planner.plan(herded, Work("generate", 8, 20), mode="batch", policy="greedy")
    assert "b" in {s.peer for s in p1.shares}
    assert {s.peer for s in p2.shares} == {"a"}


def test_steps_chain_hands_off_to_faster_peer(planner: Planner) -> None:
    # the origin can start now but is slow; b is 4x faster and frees up in 0.2 s
    peers = [peer("a", me=True, speed=0.25), peer("b", speed=1.0, wait=0.2)]
    plan = planner.plan(peers, Work("generate", 1, 50), mode="steps", policy="greedy")
    assert plan.mode == "chain"  # asked by its old name
    assert [s.peer for s in plan.shares] == ["a", "b"]
    ranges = [s.step_range for s in plan.shares]
    assert ranges[0] is not None and ranges[1] is not None
    assert ranges[0][0] == 0 and ranges[0][1] == ranges[1][0] and ranges[1][1] == 50
    alone_a = 50 * (0.016 + 0.0032)
    assert plan.predicted_makespan_s < alone_a


def test_chain_takes_several_images(planner: Planner) -> None:
    peers = [peer("a", me=True, speed=0.25), peer("b", speed=1.0, wait=0.2)]
    one = planner.plan(peers, Work("generate", 1, 50), mode="chain", policy="greedy")
    three = planner.plan(peers, Work("generate", 3, 50), mode="chain", policy="greedy")
    assert three.mode == "chain" and [s.peer for s in three.shares] == ["a", "b"]
    assert three.shares[-1].step_range is not None and three.shares[-1].step_range[1] == 50
    # three chains, each its own share: about three times the work of one after the hand-off
    assert 2.0 * one.predicted_makespan_s < three.predicted_makespan_s
    assert "chain" in applicable_modes(Work("generate", 3, 50), 16)


def test_steps_chain_contiguous_for_equal(planner: Planner) -> None:
    plan = planner.plan(cluster4(), Work("generate", 1, 30), mode="steps", policy="equal")
    ranges = [s.step_range for s in plan.shares]
    assert ranges[0] is not None and ranges[0][0] == 0
    for (_a, b), (c, _d) in itertools.pairwise(ranges):  # type: ignore[misc]
        assert b == c
    assert ranges[-1] is not None and ranges[-1][1] == 30


def test_tile_mode_assigns_every_tile_once(planner: Planner) -> None:
    work = Work("repair", 9, 20, tile_area=2.25, area_units=9.0)
    plan = planner.plan(cluster4(), work, mode="tile", policy="onnx", height=48, width=48)
    assert sorted(u for s in plan.shares for u in s.units) == list(range(9))


def test_auto_picks_the_best_predicted_mode(planner: Planner) -> None:
    plan = planner.plan(cluster4(), Work("generate", 1, 20), mode="auto", policy="greedy")
    assert set(plan.alternatives) == {"local", "batch", "chain"}
    # the origin is 4x slower than the idle peer b: one image there beats keeping it here
    assert plan.mode != "local"
    me = cluster4()[0]
    assert plan.alternatives["local"] == pytest.approx(20 * (me.a_s + me.c_s))
    assert plan.predicted_makespan_s < plan.alternatives["local"]
    for mode, predicted in plan.alternatives.items():
        alone = planner.plan(cluster4(), Work("generate", 1, 20), mode=mode, policy="greedy")
        assert alone.predicted_makespan_s == pytest.approx(predicted)
        assert plan.predicted_makespan_s <= predicted + 1e-12


def test_modes_that_do_not_apply_are_refused(planner: Planner) -> None:
    with pytest.raises(PlanError):  # the chain relays one generation's steps, not a repair
        planner.plan(
            cluster4(), Work("repair", 1, 20), mode="chain", policy="greedy", height=32, width=32
        )
    with pytest.raises(PlanError):
        planner.plan(cluster4(), Work("generate", 8, 20), mode="tile", policy="greedy")
    with pytest.raises(PlanError):
        planner.plan(
            cluster4(), Work("repair", 1, 20), mode="tile", policy="greedy", height=16, width=16
        )
    assert applicable_modes(Work("repair", 4, 20), 16, 32, 32) == ["local", "tile"]


def test_view_without_self_is_an_error(planner: Planner) -> None:
    with pytest.raises(PlanError):
        planner.plan([peer("b")], Work("generate", 2, 5), mode="batch", policy="greedy")


def test_onnx_model_missing_falls_back_to_greedy() -> None:
    planner = Planner(Recruiters(seed=0, model_path="/nonexistent/policy.onnx"))
    plan = planner.plan(cluster4(), Work("generate", 8, 20), mode="batch", policy="onnx")
    assert plan.policy.startswith("greedy")  # policy.fleet falls back to greedy-aware
    assert plan.requested_policy == "onnx"
    assert plan.fallback is not None and "unavailable" in plan.fallback


def test_failing_recruiter_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recruiters(seed=0)

    class Broken:
        provider = "CPUExecutionProvider"

        def decide(self, *_: Any) -> Any:
            raise OrtError("session exploded")

    rec._built["onnx"] = Broken()
    plan = Planner(rec).plan(cluster4(), Work("generate", 8, 20), mode="batch", policy="onnx")
    assert plan.policy == "greedy"
    assert plan.fallback is not None and "session exploded" in plan.fallback
    assert sorted(u for s in plan.shares for u in s.units) == list(range(8))


def test_a_bug_in_a_recruiter_is_not_a_fallback() -> None:
    """Only policy faults fall back; our own bugs raise (issue: no silent greedy)."""
    rec = Recruiters(seed=0)

    class Buggy:
        provider = "heuristic"

        def decide(self, *_: Any) -> Any:
            raise TypeError("candidate building bug")

    rec._built["onnx"] = Buggy()
    with pytest.raises(TypeError, match="candidate building bug"):
        Planner(rec).plan(cluster4(), Work("generate", 8, 20), mode="batch", policy="onnx")


@settings(max_examples=60, deadline=None)
@given(
    units=st.integers(1, 40),
    steps=st.integers(1, 60),
    waits=st.lists(st.floats(0, 3), min_size=1, max_size=8),
    speeds=st.lists(st.floats(0.1, 4), min_size=8, max_size=8),
    policy=st.sampled_from(["greedy", "random", "equal", "onnx"]),
)
def test_property_batch_covers_every_unit_once(
    units: int, steps: int, waits: list[float], speeds: list[float], policy: str
) -> None:
    peers = [peer("me", me=True, wait=waits[0], speed=speeds[0])] + [
        peer(f"p{i}", wait=w, speed=speeds[i]) for i, w in enumerate(waits[1:], start=1)
    ]
    plan = Planner(Recruiters(seed=1)).plan(
        peers, Work("generate", units, steps), mode="batch", policy=policy
    )
    assert sorted(u for s in plan.shares for u in s.units) == list(range(units))
    assert all(s.units for s in plan.shares)


def test_padded_forwards_get_even_shares(planner: Planner) -> None:
    """With forwards padded to 2 images, an odd share costs as much as the next even one."""
    peers = [peer("a", me=True, speed=1.0)] + [peer(n, speed=1.0) for n in "bcd"]
    peers[0] = PeerState(**{**peers[0].__dict__, "a_s": 0.04, "c_s": 0.007})
    peers[1:] = [PeerState(**{**p.__dict__, "a_s": 0.04, "c_s": 0.007}) for p in peers[1:]]
    work = Work("generate", 8, 20, quantum=2)
    plan = planner.plan(peers, work, mode="batch", policy="greedy")
    assert sorted(len(s.units) for s in plan.shares) == [2, 2, 2, 2]
    assert sorted(u for s in plan.shares for u in s.units) == list(range(8))


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(1, 80),
    waits=st.lists(st.floats(0, 3), min_size=1, max_size=6),
    speeds=st.lists(st.floats(0.1, 4), min_size=6, max_size=6),
    policy=st.sampled_from(["greedy", "random", "equal", "onnx", "local"]),
)
def test_property_steps_chain_covers_every_step_once(
    steps: int, waits: list[float], speeds: list[float], policy: str
) -> None:
    peers = [peer("me", me=True, wait=waits[0], speed=speeds[0])] + [
        peer(f"p{i}", wait=w, speed=speeds[i]) for i, w in enumerate(waits[1:], start=1)
    ]
    plan = Planner(Recruiters(seed=2)).plan(
        peers, Work("generate", 1, steps), mode="steps", policy=policy
    )
    ranges = [s.step_range for s in plan.shares]
    assert all(r is not None and r[0] < r[1] for r in ranges)
    flat = [(r[0], r[1]) for r in ranges if r is not None]
    assert flat[0][0] == 0 and flat[-1][1] == steps
    assert all(a[1] == b[0] for a, b in itertools.pairwise(flat))
    # nobody runs the steps faster than the fastest peer running them all from now
    fastest = min(p.a_s + p.c_s for p in peers)
    assert plan.predicted_makespan_s >= steps * fastest - 1e-12
    assert plan.predicted_makespan_s == pytest.approx(plan.shares[-1].predicted_s)


def test_the_link_blind_ablation_decides_on_default_links() -> None:
    """``onnx-nolinks`` hands the learned policy every link at the defaults; the split itself
    still prices the measured links."""
    from dataclasses import replace

    from peer.core.planner import DEFAULT_BYTES_PER_S, LINK_BLIND

    peers = cluster4()
    slow = [replace(p, bytes_per_s=2e3) if not p.is_self else p for p in peers]  # 2 kB/s links
    work = Work("generate", 8, 20)
    seen: list[list[float]] = []

    class Spy(Recruiters):
        def decide(self, policy: str, units: int, cands: Any) -> Any:
            seen.append([c.peer.bytes_per_s for c in cands])
            return super().decide(policy, units, cands)

    planner = Planner(Spy(seed=0))
    blind = planner.plan(slow, work, mode="batch", policy=LINK_BLIND)
    assert seen[-1] == [DEFAULT_BYTES_PER_S] * 4
    aware = planner.plan(slow, work, mode="batch", policy="onnx")
    assert seen[-1] == [p.bytes_per_s for p in slow]
    assert blind.requested_policy == LINK_BLIND and aware.requested_policy == "onnx"


def test_a_learned_mode_bias_scales_predictions_and_steers_auto(planner: Planner) -> None:
    work = Work("generate", 1, 20)
    raw = planner.plan(cluster4(), work, mode="auto", policy="greedy")
    raw_alone = planner.plan(cluster4(), work, mode="batch", policy="greedy")
    assert raw.mode != "local" and "bias" not in raw.detail
    # every mode but local has been running 10x its predictions here: auto stays home
    planner.bias = lambda kind, mode: 1.0 if mode == "local" or kind != "generate" else 10.0
    plan = planner.plan(cluster4(), work, mode="auto", policy="greedy")
    assert plan.mode == "local"
    for mode in ("batch", "chain"):
        assert plan.alternatives[mode] == pytest.approx(10.0 * raw.alternatives[mode])
    alone = planner.plan(cluster4(), work, mode="batch", policy="greedy")
    assert alone.predicted_makespan_s == pytest.approx(10.0 * raw.alternatives["batch"])
    assert alone.detail["bias"] == 10.0
    unbiased = {s.peer: s.predicted_s for s in raw_alone.shares}
    assert {s.peer: s.predicted_s / 10.0 for s in alone.shares} == pytest.approx(unbiased)
    # the factor is looked up per request kind: a repair's bias leaves a generate alone
    planner.bias = lambda kind, mode: 10.0 if kind == "repair" else 1.0
    again = planner.plan(cluster4(), work, mode="batch", policy="greedy")
    assert "bias" not in again.detail
    assert again.predicted_makespan_s == pytest.approx(raw.alternatives["batch"])
