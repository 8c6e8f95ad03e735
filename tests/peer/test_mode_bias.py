"""Per-mode correction of predicted make-spans (``peer.core.costs.ModeBias``)."""

from __future__ import annotations

import math

import pytest

from peer.core.costs import BIAS_LIMITS, BIAS_MIN_RUNS, ModeBias


def test_a_mode_that_runs_slow_is_corrected_after_enough_runs() -> None:
    bias = ModeBias()
    bias.observe("batch", 1.0, 1.3)
    assert bias.factor("batch") == 1.0  # one request is not evidence yet
    for _ in range(BIAS_MIN_RUNS + 10):
        bias.observe("batch", 1.0, 1.3)
    assert bias.factor("batch") == pytest.approx(1.3, rel=1e-6)
    assert bias.factor("tile") == 1.0  # other modes keep their own
    assert bias.to_json()["batch"]["runs"] == BIAS_MIN_RUNS + 11


def test_the_factor_follows_a_change_and_is_bounded() -> None:
    bias = ModeBias()
    for _ in range(10):
        bias.observe("tile", 2.0, 4.0)
    assert bias.factor("tile") == pytest.approx(2.0, rel=0.01)
    for _ in range(15):
        bias.observe("tile", 2.0, 2.0)  # the load went away
    assert bias.factor("tile") == pytest.approx(1.0, abs=0.01)
    for _ in range(30):
        bias.observe("tile", 1.0, 100.0)  # a stall is clipped, not learned as 100x
    assert bias.factor("tile") == pytest.approx(BIAS_LIMITS[1], rel=1e-3)


def test_nonsense_samples_are_ignored() -> None:
    bias = ModeBias()
    for bad in ((0.0, 1.0), (1.0, 0.0), (-1.0, 2.0), (math.nan, 1.0)):
        bias.observe("batch", *bad)
    assert bias.to_json() == {}
