"""Per request kind and mode correction of predicted make-spans (``peer.core.costs.ModeBias``)."""

from __future__ import annotations

import math

import pytest

from peer.core.costs import (
    BIAS_ALPHA,
    BIAS_COUNT_STEPS,
    BIAS_LIMITS,
    BIAS_MIN_RUNS,
    BIAS_REF_STEPS,
    ModeBias,
)

FULL = BIAS_REF_STEPS  # a request that gets the full weight


def test_a_mode_that_runs_slow_is_corrected_after_enough_runs() -> None:
    bias = ModeBias()
    bias.observe("generate", "batch", 1.0, 1.3, FULL)
    assert bias.factor("generate", "batch") == 1.0  # one request is not evidence yet
    for _ in range(BIAS_MIN_RUNS + 10):
        bias.observe("generate", "batch", 1.0, 1.3, FULL)
    assert bias.factor("generate", "batch") == pytest.approx(1.3, rel=1e-6)
    assert bias.factor("generate", "tile") == 1.0  # other modes keep their own
    assert bias.to_json()["generate/batch"]["runs"] == BIAS_MIN_RUNS + 11


def test_a_generates_local_and_a_repairs_local_learn_separate_factors() -> None:
    bias = ModeBias()
    for _ in range(30):
        bias.observe("generate", "local", 1.0, 1.1, FULL)
        bias.observe("repair", "local", 1.0, 2.0, FULL)
    assert bias.factor("generate", "local") == pytest.approx(1.1, rel=1e-6)
    assert bias.factor("repair", "local") == pytest.approx(2.0, rel=1e-6)
    assert bias.factor("repair", "tile") == 1.0
    out = bias.to_json()
    assert set(out) == {"generate/local", "repair/local"}
    assert out["repair/local"] == {"factor": 2.0, "runs": 30}


def test_one_step_warm_ups_barely_move_a_factor_learned_on_full_requests() -> None:
    bias = ModeBias()
    for _ in range(20):
        bias.observe("generate", "local", 1.0, 1.2, FULL)
    trained = bias.factor("generate", "local")
    assert trained == pytest.approx(1.2, rel=1e-6)
    for _ in range(5):  # warm-ups whose fixed overheads make them run 3x their prediction
        bias.observe("generate", "local", 1.0, 3.0, 1)
    moved = bias.factor("generate", "local")
    # each moves the log by at most alpha/20 of the gap: five of them well under 10%
    assert abs(moved / trained - 1.0) < 0.1
    full = ModeBias()  # where the same five at full length would have moved it most of the way
    for _ in range(20):
        full.observe("generate", "local", 1.0, 1.2, FULL)
    for _ in range(5):
        full.observe("generate", "local", 1.0, 3.0, FULL)
    assert full.factor("generate", "local") > 2.0
    # and the weight ramps with the steps: alpha * min(1, steps / BIAS_REF_STEPS)
    half = ModeBias()
    half.observe("generate", "local", 1.0, 1.0, FULL)
    half.observe("generate", "local", 1.0, math.e, BIAS_REF_STEPS // 2)
    assert math.log(half.to_json()["generate/local"]["factor"]) == pytest.approx(
        BIAS_ALPHA / 2, abs=1e-3
    )


def test_only_requests_of_enough_steps_count_towards_the_gate() -> None:
    bias = ModeBias()
    for _ in range(10):  # warm-ups alone never switch a factor on
        bias.observe("repair", "tile", 1.0, 2.0, BIAS_COUNT_STEPS - 1)
    assert bias.factor("repair", "tile") == 1.0
    assert bias.to_json()["repair/tile"]["runs"] == 0
    assert bias.to_json()["repair/tile"]["factor"] == 1.0  # shown as not applied
    bias.observe("repair", "tile", 1.0, 1.5, BIAS_COUNT_STEPS)
    assert bias.factor("repair", "tile") == 1.0  # one counted request is not evidence yet
    for _ in range(BIAS_MIN_RUNS - 1):
        bias.observe("repair", "tile", 1.0, 1.5, BIAS_COUNT_STEPS)
    assert bias.to_json()["repair/tile"]["runs"] == BIAS_MIN_RUNS
    # the first counted request replaced the warm-ups' provisional log: no 2x lingers
    assert bias.factor("repair", "tile") == pytest.approx(1.5, rel=1e-6)


def test_the_factor_follows_a_change_and_is_bounded() -> None:
    bias = ModeBias()
    for _ in range(10):
        bias.observe("repair", "tile", 2.0, 4.0, FULL)
    assert bias.factor("repair", "tile") == pytest.approx(2.0, rel=0.01)
    for _ in range(15):
        bias.observe("repair", "tile", 2.0, 2.0, FULL)  # the load went away
    assert bias.factor("repair", "tile") == pytest.approx(1.0, abs=0.01)
    for _ in range(30):
        bias.observe("repair", "tile", 1.0, 100.0, FULL)  # a stall is clipped, not learned
    assert bias.factor("repair", "tile") == pytest.approx(BIAS_LIMITS[1], rel=1e-3)


def test_nonsense_samples_are_ignored() -> None:
    bias = ModeBias()
    for pred, actual, steps in (
        (0.0, 1.0, FULL),
        (1.0, 0.0, FULL),
        (-1.0, 2.0, FULL),
        (math.nan, 1.0, FULL),
        (1.0, 1.0, 0),
    ):
        bias.observe("generate", "batch", pred, actual, steps)
    assert bias.to_json() == {}
