from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.fleet.allocate import split_units

finite = st.floats(0.0, 5.0, allow_nan=False)
pos = st.floats(0.001, 2.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(finite, finite, pos), min_size=1, max_size=8),
    units=st.integers(1, 24),
)
def test_split_is_valid_and_no_worse_than_best_single(
    rows: list[tuple[float, float, float]], units: int
) -> None:
    w, a, u = (np.array(c) for c in zip(*rows, strict=True))
    positions, counts, span = split_units(w, a, u, units)
    assert counts.sum() == units
    assert np.all(counts > 0)
    assert len(set(positions.tolist())) == len(positions)
    finish = w[positions] + a[positions] + counts * u[positions]
    assert np.isclose(span, finish.max())
    best_single = float(np.min(w + a + units * u))
    # the continuous optimum is below the best single peer; rounding costs at most one unit each
    assert span <= best_single + float(np.max(u)) + 1e-9


def test_matches_brute_force_on_small_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 4))
        units = int(rng.integers(1, 7))
        w, a, u = rng.uniform(0, 1, n), rng.uniform(0, 0.5, n), rng.uniform(0.05, 0.5, n)
        _, _, span = split_units(w, a, u, units)
        best = np.inf
        for counts in itertools.product(range(units + 1), repeat=n):
            if sum(counts) != units:
                continue
            c = np.array(counts)
            used = c > 0
            best = min(best, float(np.max((w + a + c * u)[used])))
        # water-filling then rounding is within one unit step of the integer optimum
        assert span <= best + float(np.max(u)) + 1e-9
        assert span >= best - 1e-9
