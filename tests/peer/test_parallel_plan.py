"""Parallel steps, pure parts: the request's ``parallel`` options, the schedule simulation the
planner predicts with, forced segment counts, and the held-back fine solves of the core."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from peer.core.config import Limits
from peer.core.errors import BadRequest
from peer.core.parallel_plan import (
    Costs,
    ParallelOptions,
    assumed_iterations,
    best_bounds,
    parse_parallel,
    simulate,
)
from peer.core.planner import PeerState, Planner, Work
from peer.core.recruit import Recruiters
from peer.core.requests import parse_generate
from peer.diffusion.parareal import Finished, PararealCore, RunCoarse, RunFine


def test_parse_parallel_accepts_and_rejects() -> None:
    assert parse_parallel(None, 50) is None
    o = parse_parallel({"segments": 4, "tolerance_db": 35}, 50)
    assert o == ParallelOptions(4, 35.0, False, 2)
    assert parse_parallel({"exact": True}, 50) == ParallelOptions(None, 25.0, True, 2)
    bad = [
        ([1], "invalid_type"),
        ({"segment": 4}, "unknown_field"),
        ({"segments": 0}, "out_of_range"),
        ({"segments": 50}, "out_of_range"),  # at most steps - 1 (and 16)
        ({"segments": True}, "invalid_type"),
        ({"tolerance_db": -1}, "out_of_range"),
        ({"tolerance_db": "35"}, "invalid_type"),
        ({"exact": 1}, "invalid_type"),
        ({"exact": True, "tolerance_db": 30}, "invalid_value"),
        ({"coarse_evals": 9}, "out_of_range"),
    ]
    for value, code in bad:
        with pytest.raises(BadRequest) as exc:
            parse_parallel(value, 50)
        assert exc.value.code == code, value


def test_generate_request_carries_parallel_options() -> None:
    req = parse_generate({"steps": 50, "mode": "parallel", "parallel": {"segments": 3}}, Limits())
    assert req.parallel == ParallelOptions(segments=3)
    assert parse_generate({"steps": 50}, Limits()).parallel is None
    with pytest.raises(BadRequest):
        parse_generate({"steps": 5, "parallel": {"segments": 5}}, Limits())


def test_assumed_iterations() -> None:
    assert assumed_iterations(ParallelOptions(), 4) == 1
    assert assumed_iterations(ParallelOptions(tolerance_db=35.0), 4) == 2
    assert assumed_iterations(ParallelOptions(tolerance_db=60.0), 4) == 4
    assert assumed_iterations(ParallelOptions(exact=True), 3) == 3
    assert assumed_iterations(ParallelOptions(exact=True), 1) == 1


def test_simulate_one_segment_is_the_serial_chain() -> None:
    c = Costs(step_s=[0.01], hop_s=[0.0], coarse_s=0.02, last_s=0.01)
    assert simulate((0, 49), [0], c, 1) == pytest.approx(0.5)


def test_simulate_waits_for_the_origins_backlog_before_the_last_step() -> None:
    # one segment on a remote while the origin's executor has 10 s queued: the remote solve
    # runs at once, the last step at the origin only after that backlog (the prototype's
    # parallel request from a 0.17-core origin was predicted 4.4 s and took 37.7 s)
    c = Costs([0.1, 0.01], [0.0, 0.05], 0.02, 0.1, wait_s=[10.0, 0.0])
    assert simulate((0, 49), [1], c, 1) == pytest.approx(10.0 + 0.1)
    idle = Costs([0.1, 0.01], [0.0, 0.05], 0.02, 0.1, wait_s=[0.0, 0.0])
    assert simulate((0, 49), [1], idle, 1) == pytest.approx(0.05 + 0.49 + 0.1)
    # with two remote segments the coarse solves, then the last step, wait for it as well
    two = Costs([0.1, 0.01, 0.01], [0.0, 0.05, 0.05], 0.02, 0.1, wait_s=[10.0, 0.0, 0.0])
    assert simulate((0, 24, 49), [1, 2], two, 1) >= 10.0 + 0.02 + 0.1


def test_simulate_grows_with_iterations_and_hop_cost() -> None:
    c = Costs([0.01] * 4, [0.0, 0.001, 0.001, 0.001], 0.02, 0.01)
    b = (0, 7, 21, 35, 49)
    one, two, four = (simulate(b, [0, 1, 2, 3], c, k) for k in (1, 2, 4))
    assert one < two < four
    slow = Costs([0.01] * 4, [0.0, 1.0, 1.0, 1.0], 0.02, 0.01)
    assert simulate(b, [0, 1, 2, 3], slow, 1) > one + 0.9  # a remote solve's hop is waited on
    # two segments on one remote worker run one after the other
    assert simulate(b, [0, 1, 1, 1], c, 1) > one


def test_best_bounds_shortens_the_origin_segment() -> None:
    c = Costs([0.01] * 4, [0.0, 0.005, 0.005, 0.005], 0.02, 0.01)
    bounds, t = best_bounds(49, [0, 1, 2, 3], c, 1)
    assert bounds[0] == 0 and bounds[-1] == 49 and len(bounds) == 5
    assert bounds[1] < 49 // 4  # the origin's lane also runs the coarse pass
    assert t <= simulate((0, 13, 25, 37, 49), [0, 1, 2, 3], c, 1)


def _peers(n: int, a_s: float = 0.01) -> list[PeerState]:
    return [
        PeerState(f"p{i}", i == 0, ("h", 1), 0.0, 0.0, a_s, 0.001, 0.0 if i == 0 else 0.001)
        for i in range(n)
    ]


def test_planner_forced_segments_and_exactness() -> None:
    planner = Planner(Recruiters(seed=0))
    peers = _peers(4)
    plan = planner.plan(
        peers,
        Work("generate", 1, 50, deterministic=True, segments=6),
        mode="parallel",
        policy="equal",
    )
    steps = [s.step_range for s in plan.shares]
    assert len(steps) == 6 and steps[0] is not None and steps[0][0] == 0
    assert all(
        a is not None and b is not None and a[1] == b[0] for a, b in itertools.pairwise(steps)
    )
    assert steps[-1] is not None and steps[-1][1] == 49
    assert len({s.peer for s in plan.shares}) >= 3  # six segments go round the peers
    assert plan.detail["segments"] == 6
    free = planner.plan(
        peers, Work("generate", 1, 50, deterministic=True), mode="auto", policy="equal"
    )
    assert free.mode == "parallel" and free.detail["segments"] >= 3
    exact = planner.plan(
        peers,
        Work("generate", 1, 50, deterministic=True, exact=True),
        mode="auto",
        policy="equal",
    )
    assert exact.mode != "parallel"  # to exactness it is predicted slower than one peer
    assert exact.alternatives["parallel"] >= exact.alternatives["local"] - 1e-9


# -- the core's held-back fine solves, on a toy linear problem -------------------------------


def _drive(core: PararealCore, fine: float, coarse: float) -> tuple[Finished, int]:
    """Carry out the core's effects with x -> fine^len x and a cruder coarse map."""
    queue = list(core.start())
    sent = 0
    while queue:
        eff = queue.pop(0)
        if isinstance(eff, Finished):
            return eff, sent
        n = eff.stop - eff.start
        if isinstance(eff, RunFine):
            sent += 1
            queue += core.on_fine(eff.iteration, eff.segment, eff.latent * np.float32(fine**n))
        elif isinstance(eff, RunCoarse):
            queue += core.on_coarse(eff.iteration, eff.segment, eff.latent * np.float32(coarse**n))
    raise AssertionError("no result")


def test_fine_cap_holds_back_the_next_iteration_and_keeps_the_result() -> None:
    x0 = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    bounds = (0, 10, 20, 30, 40)
    loose = _drive(PararealCore(bounds, x0, 5.0), 0.98, 0.97)
    capped = _drive(PararealCore(bounds, x0, 5.0, fine_cap=1), 0.98, 0.97)
    assert loose[0].iterations == capped[0].iterations == 1
    assert np.array_equal(loose[0].latent, capped[0].latent)
    assert capped[1] < loose[1]  # no fine solve of iteration 2 went out
    # a tolerance the first iteration misses: the held solves go out, the result is the same
    loose = _drive(PararealCore(bounds, x0, 80.0), 0.98, 0.9)
    capped = _drive(PararealCore(bounds, x0, 80.0, fine_cap=1), 0.98, 0.9)
    assert loose[0].iterations == capped[0].iterations > 1
    assert np.array_equal(loose[0].latent, capped[0].latent)
    exact = _drive(PararealCore(bounds, x0, None, fine_cap=None), 0.98, 0.9)
    assert exact[0].exact and exact[0].iterations == 4


def test_fine_solves_cost_one_forward_per_image_and_coarse_ones_a_batch() -> None:
    from peer.core.planner import candidates, parallel_costs

    # the runtime sends a chain share per image (each step n forwards of one image) while the
    # coarse solves and the last step run the batch at the origin
    peers = _peers(2, a_s=0.01)  # c = 0.001
    work = Work("generate", 8, 20, deterministic=True)
    cands = candidates(peers, work, "parallel")
    costs = parallel_costs(cands[0], cands[1:], work)
    assert costs.step_s[0] == pytest.approx(8 * (0.01 + 0.001))
    assert costs.coarse_s == pytest.approx(work.coarse_evals * (0.01 + 8 * 0.001))
    assert costs.last_s == pytest.approx(0.01 + 8 * 0.001)
    assert cands[1].unit_s == pytest.approx(8 * 0.011)
