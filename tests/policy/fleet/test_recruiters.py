from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from policy.fleet import (
    RECRUITERS,
    Candidate,
    Decision,
    PolicyError,
    Request,
    make_recruiter,
)
from policy.fleet.recruiters import LearnedRecruiter


def fleet(n: int, seed: int = 0, with_self: bool = True) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        me = with_self and i == 0
        out.append(
            Candidate(
                name=f"p{i}",
                is_self=me,
                wait_s=float(rng.uniform(0, 2)),
                view_age_s=0.0 if me else float(rng.uniform(0, 2)),
                fixed_s=float(rng.uniform(0.01, 0.3)),
                unit_s=float(rng.uniform(0.01, 0.2)),
                xfer_s_per_unit=0.0 if me else float(rng.uniform(0, 0.01)),
                own_pending_s=float(rng.uniform(0, 0.5)),
            )
        )
    return out


def check(d: Decision, n: int) -> None:
    assert len(d.selected) == len(d.shares) >= 1
    assert all(0 <= i < n for i in d.selected)
    assert len(set(d.selected)) == len(d.selected)
    assert all(s >= 0 for s in d.shares)
    assert sum(d.shares) == pytest.approx(1.0, abs=1e-12)
    assert d.predicted_makespan_s > 0


@pytest.mark.parametrize("name", RECRUITERS)
@pytest.mark.parametrize("n", [1, 2, 5, 17, 64])
@pytest.mark.parametrize("units", [1, 3, 8, 16])
def test_every_recruiter_gives_valid_decisions(
    name: str, n: int, units: int, tiny_onnx: Path
) -> None:
    rec = make_recruiter(name, seed=1, model_path=tiny_onnx)
    for seed in range(3):
        d = rec.decide(Request(units=units, deadline_s=10.0), fleet(n, seed))
        check(d, n)
        # whole units: every share is a multiple of 1/units
        assert np.allclose(np.array(d.shares) * units, np.round(np.array(d.shares) * units))


def test_learned_reports_provider_and_no_fallback(tiny_onnx: Path) -> None:
    rec = make_recruiter("learned", model_path=tiny_onnx)
    assert isinstance(rec, LearnedRecruiter)
    d = rec.decide(Request(units=4), fleet(5))
    assert d.policy == "learned"
    assert d.fallback is None
    assert d.provider == "CPUExecutionProvider"


def test_learned_falls_back_when_model_missing(tmp_path: Path) -> None:
    rec = make_recruiter("learned", model_path=tmp_path / "nope.onnx")
    d = rec.decide(Request(units=4), fleet(5))
    assert d.fallback is not None and "unavailable" in d.fallback
    assert d.policy == "greedy-aware"
    assert d.provider is None
    check(d, 5)


def test_learned_falls_back_when_model_is_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    d = make_recruiter("learned", model_path=bad).decide(Request(units=2), fleet(3))
    assert d.fallback is not None


def test_unknown_recruiter() -> None:
    with pytest.raises(PolicyError):
        make_recruiter("clairvoyant")


@pytest.mark.parametrize("name", RECRUITERS)
def test_invalid_candidates_raise_and_recruiter_keeps_working(name: str, tiny_onnx: Path) -> None:
    rec = make_recruiter(name, model_path=tiny_onnx)
    bad = fleet(3)
    bad[1] = Candidate("p1", False, -1.0, 0.1, 0.1, 0.1)
    with pytest.raises(PolicyError):
        rec.decide(Request(units=2), bad)
    with pytest.raises(PolicyError):
        rec.decide(Request(units=2), [])
    with pytest.raises(PolicyError):
        rec.decide(Request(units=0), fleet(3))
    check(rec.decide(Request(units=2), fleet(3)), 3)


def test_without_self_candidate_local_picks_one_peer() -> None:
    d = make_recruiter("local").decide(Request(units=4), fleet(4, with_self=False))
    assert len(d.selected) == 1 and d.shares == (1.0,)


def test_greedy_aware_counts_own_dispatches() -> None:
    # two identical remote peers; this origin just sent a lot to the first one
    a = Candidate("a", False, 0.0, 1.0, 0.01, 0.1, 0.0, own_pending_s=5.0)
    b = Candidate("b", False, 0.0, 1.0, 0.01, 0.1, 0.0, own_pending_s=0.0)
    g = make_recruiter("greedy").decide(Request(units=2), [a, b])
    ga = make_recruiter("greedy-aware").decide(Request(units=2), [a, b])
    assert set(g.selected) == {0, 1}
    assert ga.selected == (1,)


def test_seeded_recruiters_are_reproducible() -> None:
    c = fleet(9)
    r1 = [make_recruiter("random", seed=5).decide(Request(units=8), c) for _ in range(1)]
    r2 = [make_recruiter("random", seed=5).decide(Request(units=8), c) for _ in range(1)]
    assert r1 == r2


def test_shipped_model_loads_and_decides_for_any_fleet_size() -> None:
    from policy.fleet.recruiters import DEFAULT_MODEL

    assert DEFAULT_MODEL.is_file(), "the trained recruiter ships as package data"
    rec = make_recruiter("learned", seed=0)
    assert isinstance(rec, LearnedRecruiter)
    for n in (1, 2, 5, 17, 64):
        d = rec.decide(Request(units=8, deadline_s=float("inf")), fleet(n, seed=n))
        assert d.fallback is None and d.provider == "CPUExecutionProvider"
        check(d, n)


def test_learned_hands_a_request_outside_its_training_range_to_greedy_aware(
    tiny_onnx: Path,
) -> None:
    from policy.fleet.recruiters import MIN_FIXED_OVER_WORK, OUT_OF_RANGE

    rec = make_recruiter("learned", model_path=tiny_onnx)
    aware = make_recruiter("greedy-aware")

    def cands(fixed: float, unit: float) -> list[Candidate]:
        return [
            Candidate(f"p{i}", i == 0, 0.1 * i, 0.0, fixed, unit * (1 + i), 0.0) for i in range(5)
        ]

    # a 64x64 repair: 25 tiles x 10 classes of per-unit work beside one fixed cost per step
    tiles = cands(fixed=0.06, unit=0.44)
    assert MIN_FIXED_OVER_WORK > 0.06 / (25 * 0.44)  # on every candidate, the fastest too
    d = rec.decide(Request(units=25), tiles)
    assert d.fallback == OUT_OF_RANGE and d.policy == "greedy-aware" and d.provider is None
    g = aware.decide(Request(units=25), tiles)
    assert (d.selected, d.shares) == (g.selected, g.shares)
    # a batch of 8 images is inside it: the network decides
    d = rec.decide(Request(units=8), cands(fixed=0.06, unit=0.045))
    assert d.fallback is None and d.policy == "learned"
    # ... also when some peers' calibration puts their fixed cost near zero
    noisy = cands(fixed=0.06, unit=0.045)
    noisy[1:4] = [replace(c, fixed_s=1e-5) for c in noisy[1:4]]
    d = rec.decide(Request(units=8), noisy)
    assert d.fallback is None and d.policy == "learned"
