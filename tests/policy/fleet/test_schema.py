from __future__ import annotations

import math

import pytest

from policy.fleet import Candidate, Decision, DispatchLedger, PolicyError, Request
from policy.fleet.schema import validate_candidates, validate_decision, validate_request


def cand(name: str = "a", **kw: float | bool) -> Candidate:
    base: dict[str, float | bool] = dict(
        is_self=False,
        wait_s=0.1,
        view_age_s=0.5,
        fixed_s=0.02,
        unit_s=0.01,
        xfer_s_per_unit=0.001,
        own_pending_s=0.0,
    )
    base.update(kw)
    return Candidate(name=name, **base)  # type: ignore[arg-type]


def test_ledger_window_sums() -> None:
    led = DispatchLedger()
    led.record("b", seconds=0.3, now=1.0)
    led.record("b", seconds=0.2, now=2.0)
    led.record("c", seconds=1.0, now=2.5)
    assert led.pending("b", since=0.5) == pytest.approx(0.5)
    assert led.pending("b", since=1.0) == pytest.approx(0.2)
    assert led.pending("b", since=2.0) == 0.0
    assert led.pending("c", since=0.0) == pytest.approx(1.0)
    assert led.pending("zz", since=0.0) == 0.0
    led.prune(before=1.5)
    assert led.pending("b", since=0.0) == pytest.approx(0.2)


def test_ledger_rejects_bad_records() -> None:
    led = DispatchLedger()
    led.record("b", seconds=0.3, now=2.0)
    with pytest.raises(PolicyError):
        led.record("b", seconds=0.1, now=1.0)
    with pytest.raises(PolicyError):
        led.record("b", seconds=-1.0, now=3.0)
    with pytest.raises(PolicyError):
        led.record("b", seconds=math.nan, now=3.0)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [cand("a", wait_s=-1.0)],
        [cand("a", unit_s=math.nan)],
        [cand("a", fixed_s=math.inf)],
        [cand("a", unit_s=0.0, xfer_s_per_unit=0.0)],
        [cand("a"), cand("a")],
        [cand("a", is_self=True), cand("b", is_self=True)],
    ],
)
def test_invalid_candidates(bad: list[Candidate]) -> None:
    with pytest.raises(PolicyError):
        validate_candidates(bad)


@pytest.mark.parametrize(
    "req", [Request(units=0), Request(units=2, deadline_s=-1.0), Request(units=True)]
)  # type: ignore[arg-type]
def test_invalid_requests(req: Request) -> None:
    with pytest.raises(PolicyError):
        validate_request(req)


def test_validate_decision() -> None:
    validate_decision(Decision((0, 2), (0.25, 0.75), 1.0, "x"), 3)
    for d in (
        Decision((0, 3), (0.5, 0.5), 1.0, "x"),
        Decision((0, 0), (0.5, 0.5), 1.0, "x"),
        Decision((0, 1), (0.6, 0.6), 1.0, "x"),
        Decision((0, 1), (-0.5, 1.5), 1.0, "x"),
        Decision((), (), 1.0, "x"),
    ):
        with pytest.raises(PolicyError):
            validate_decision(d, 3)
