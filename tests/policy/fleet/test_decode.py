from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.fleet.actions import ACTIONS, GREEDY_AWARE_ACTION, N_HEDGES, action_mask, decode
from policy.fleet.features import CandidateArrays, build_features, request_scale
from policy.fleet.heuristics import greedy_aware


@st.composite
def fleets(draw: st.DrawFn) -> tuple[CandidateArrays, int]:
    n = draw(st.integers(1, 64))
    seed = draw(st.integers(0, 2**31 - 1))
    units = draw(st.integers(1, 32))
    rng = np.random.default_rng(seed)
    me = np.zeros(n)
    me[int(rng.integers(n))] = 1.0
    arr = CandidateArrays(
        is_self=me,
        wait=rng.exponential(1.0, n) * (rng.random(n) < 0.7),
        age=rng.uniform(0, 4, n) * (1 - me),
        fixed=rng.uniform(0, 0.5, n),
        unit=rng.uniform(1e-3, 0.3, n),
        xfer=rng.uniform(0, 0.01, n) * (1 - me),
        own=rng.exponential(0.2, n) * (rng.random(n) < 0.3),
    )
    return arr, units


@settings(max_examples=200, deadline=None)
@given(data=fleets(), extra=st.floats(0.0, 5.0), pick=st.integers(0, 10**6))
def test_every_valid_action_decodes_to_a_valid_split(
    data: tuple[CandidateArrays, int], extra: float, pick: int
) -> None:
    arr, units = data
    n = len(arr)
    feats = build_features(arr, units, 10.0)
    assert feats.shape == (n, feats.shape[1]) and np.all(np.isfinite(feats))
    # scores as the network defines them, with an arbitrary non-negative learned correction
    t0 = request_scale(arr, units)
    solo = (arr.wait + arr.own + arr.fixed + units * arr.per_unit) / t0
    score = np.stack(
        [-(solo + h * arr.age / t0) for h in (0.0, 0.5, 1.0, 2.0)] + [-(solo + extra)], axis=1
    ).astype(np.float32)
    assert score.shape[1] == N_HEDGES
    valid = np.flatnonzero(action_mask(n))
    a = int(valid[pick % valid.shape[0]])
    pos, cnt, span = decode(arr, units, a, score)
    shares = cnt / units
    assert np.all(shares > 0) and abs(shares.sum() - 1.0) < 1e-12
    assert len(set(pos.tolist())) == pos.shape[0] and np.all((pos >= 0) & (pos < n))
    cap = ACTIONS[a][0]
    if cap:
        assert pos.shape[0] <= cap
    assert span > 0


@settings(max_examples=60, deadline=None)
@given(data=fleets())
def test_no_hedge_all_peers_is_greedy_aware(data: tuple[CandidateArrays, int]) -> None:
    arr, units = data
    t0 = request_scale(arr, units)
    solo = (arr.wait + arr.own + arr.fixed + units * arr.per_unit) / t0
    score = np.repeat(-solo[:, None], N_HEDGES, axis=1).astype(np.float32)
    pos, cnt, _ = decode(arr, units, GREEDY_AWARE_ACTION, score)
    gpos, gcnt, _ = greedy_aware(arr, units, np.random.default_rng(0))
    assert np.array_equal(pos, gpos) and np.array_equal(cnt, gcnt)
