"""CWA, water-filling, HECWA and unit rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policy.allocation import (
    AllocationError,
    cwa_clip,
    cwa_closed_form,
    cwa_solve,
    hecwa,
    makespan,
    round_units,
    water_fill,
)

pos = st.floats(min_value=0.01, max_value=10.0, allow_nan=False)
wait = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    k = draw(st.integers(min_value=1, max_value=6))
    return draw(st.lists(pos, min_size=k, max_size=k)), draw(st.lists(wait, min_size=k, max_size=k))


def test_closed_form_matches_solve_on_hand_case() -> None:
    U = [1.0, 2.0]
    W = [0.0, 0.5]
    # x0 + x1 = 1, x0*1 = x1*2 + 0.5 -> x1 = 0.5/3 -> M = 1 - 1/6
    level, x = cwa_closed_form(U, W)
    assert level == pytest.approx(5.0 / 6.0)
    np.testing.assert_allclose(x, [5.0 / 6.0, 1.0 / 6.0])
    np.testing.assert_allclose(cwa_solve(U, W), x)


@given(instances())
@settings(max_examples=200, deadline=None)
def test_closed_form_equals_solve(inst: tuple[list[float], list[float]]) -> None:
    U, W = inst
    level, x = cwa_closed_form(U, W)
    np.testing.assert_allclose(cwa_solve(U, W), x, rtol=1e-7, atol=1e-9)
    assert np.sum(x) == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(x) * U + W, level, rtol=1e-7, atol=1e-9)


def _brute_force(U: list[float], W: list[float], grid: int = 60) -> float:
    """Min over a simplex grid of max_{x_j>0} x_j U_j + W_j."""
    k = len(U)
    best = float("inf")
    for parts in itertools.product(range(grid + 1), repeat=k - 1):
        if sum(parts) > grid:
            continue
        x = [*(p / grid for p in parts), (grid - sum(parts)) / grid]
        m = max(xi * u + w for xi, u, w in zip(x, U, W, strict=True) if xi > 0)
        best = min(best, m)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_water_fill_vs_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    U = list(rng.uniform(0.1, 2.0, k))
    W = list(rng.uniform(0.0, 1.5, k))
    _x, level = water_fill(U, W)
    assert level <= _brute_force(U, W) + 1e-9
    # the grid optimum is close to the exact one
    assert _brute_force(U, W, grid=200 if k < 3 else 60) - level < 0.05 * max(U)


@given(instances())
@settings(max_examples=300, deadline=None)
def test_water_fill_is_optimal(inst: tuple[list[float], list[float]]) -> None:
    U, W = inst
    x, level = water_fill(U, W)
    u, w = np.asarray(U), np.asarray(W)
    assert np.all(x >= 0.0)
    assert np.sum(x) == pytest.approx(1.0)
    used = x > 0
    np.testing.assert_allclose((x * u + w)[used], level, rtol=1e-7, atol=1e-9)
    # KKT: every unused server would start no earlier than the level
    assert np.all(w[~used] >= level - 1e-9)
    # the level is no worse than any single server or the clipped CWA
    assert level <= float(np.min(u + w)) + 1e-9
    xc = cwa_clip(U, W)
    assert level <= float(np.max((xc * u + w)[xc > 0])) + 1e-9
    # and no worse than random feasible splits
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.dirichlet(np.ones(len(U)))
        assert level <= float(np.max(y * u + w)) + 1e-9


def test_clip_differs_from_water_fill_when_a_server_is_busy() -> None:
    U = [1.0, 1.0, 1.0]
    W = [0.0, 0.0, 2.0]
    raw = cwa_solve(U, W)
    assert raw[2] < 0
    xc = cwa_clip(U, W)
    assert xc[2] == 0.0 and np.sum(xc) == pytest.approx(1.0)
    x, level = water_fill(U, W)
    np.testing.assert_allclose(x, [0.5, 0.5, 0.0])
    assert level == pytest.approx(0.5)
    # the paper's make-span still counts the busy server's wait
    assert makespan(U, W, xc) == pytest.approx(2.0)


def test_hecwa_is_inverse_u() -> None:
    np.testing.assert_allclose(hecwa([1.0, 2.0, 4.0]), np.array([4.0, 2.0, 1.0]) / 7.0)
    U = [1.0, 2.0, 4.0]
    prod = [np.prod([U[i] for i in range(3) if i != j]) for j in range(3)]
    np.testing.assert_allclose(hecwa(U, [0.3, 0.1, 0.0]), np.asarray(prod) / sum(prod))


@pytest.mark.parametrize(
    ("U", "W"),
    [
        ([], []),
        ([1.0, 0.0], [0.0, 0.0]),
        ([1.0, -1.0], [0.0, 0.0]),
        ([1.0, float("nan")], [0, 0]),
        ([1.0], [float("nan")]),
        ([1.0, 2.0], [0.0]),
        ([[1.0]], [[0.0]]),
    ],
)
def test_invalid_input_raises(U: list[float], W: list[float]) -> None:
    for fn in (cwa_solve, cwa_clip, water_fill, hecwa):
        with pytest.raises(AllocationError):
            fn(U, W)
    with pytest.raises(AllocationError):
        cwa_closed_form(U, W)


def test_round_units_cases() -> None:
    assert round_units([0.5, 0.5], 3) == [2, 1]
    assert round_units([1 / 3, 1 / 3, 1 / 3], 10) == [4, 3, 3]
    assert round_units([0.2, 0.3, 0.5], 0) == [0, 0, 0]
    assert round_units([0.1, 0.6, 0.3], 7) == [1, 4, 2]
    assert round_units([2.0, 2.0], 5) == [3, 2]
    for bad in ([], [float("nan")], [-0.1, 1.1], [0.0, 0.0]):
        with pytest.raises(AllocationError):
            round_units(bad, 4)
    with pytest.raises(AllocationError):
        round_units([1.0], -1)
    with pytest.raises(AllocationError):
        round_units([1.0], 2.5)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8), st.integers(0, 50)
)
@settings(max_examples=300, deadline=None)
def test_round_units_properties(shares: list[float], units: int) -> None:
    assume(sum(shares) > 0)
    out = round_units(shares, units)
    assert sum(out) == units
    quota = np.asarray(shares) / sum(shares) * units
    assert np.all(np.abs(np.asarray(out) - quota) < 1.0 + 1e-9)
    assert out == round_units(shares, units)
