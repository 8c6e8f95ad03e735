"""Domain randomisation for sim-to-real training (issue 15) and the training's runtime semantics."""

from __future__ import annotations

import numpy as np

from policy.fleet.features import FEATURE_NAMES
from policy.fleet.heuristics import greedy_aware
from policy.fleet.randomise import (
    LAN_BYTES_PER_S,
    MEASURED,
    PAYLOAD_BYTES,
    PEERS,
    RandomiseConfig,
    randomised_trace,
)
from policy.fleet.sim import run
from policy.fleet.train import TrainConfig, collect

RC = RandomiseConfig(n_requests=120)


def test_seeded_and_within_measured_ranges() -> None:
    a, b = randomised_trace(4, RC), randomised_trace(4, RC)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.a_s, b.a_s)
    other = randomised_trace(5, RC)
    assert not np.array_equal(a.times, other.times)
    for seed in range(20):
        t = randomised_trace(seed, RC)
        assert t.cfg.n_peers in PEERS
        assert t.a_s is not None and t.c_s is not None and t.overhead_s is not None
        # cost factors: contention 1-3x, quota 1-4x, jitter 0.85-1.15
        lo, hi = MEASURED["a_s"]
        assert np.all(t.a_s >= lo * 0.85) and np.all(t.a_s <= hi * 3 * 4 * 1.15)
        ratio = t.c_s / t.a_s
        assert np.allclose(ratio, ratio[0])  # one engine shape per cluster
        assert np.all(np.diff(t.times) > 0)
        assert t.replan_lost


def test_runs_in_the_simulator() -> None:
    res = run(randomised_trace(1, RC), lambda ctx, rng: greedy_aware(ctx.arr, ctx.units, rng))
    assert res.makespan.shape[0] == 120 - int(0.05 * 120)
    assert np.all(res.makespan > 0)
    assert res.peer_busy is not None and res.peer_busy.sum() > 0


def _choose(f, valid, g):  # type: ignore[no-untyped-def]
    return int(np.flatnonzero(valid)[-1]), np.zeros((f.shape[0], 5), dtype=np.float32)


def test_runtime_semantics_hide_the_deadline() -> None:
    trace = randomised_trace(2, RC)
    col = FEATURE_NAMES.index("deadline_over_t0")
    plain, _ = collect(trace.cfg, 2, _choose, TrainConfig(), trace)
    rt, _ = collect(trace.cfg, 2, _choose, TrainConfig(runtime_semantics=True), trace)
    assert np.allclose(rt.feats[rt.mask][:, col], 1.0)  # unknown deadline: the clamp, 10 x T0
    assert not np.allclose(plain.feats[plain.mask][:, col], 1.0)


def test_links_are_drawn_for_some_clusters_and_cost_transfer_time() -> None:
    limited = 0
    for seed in range(40):
        t = randomised_trace(seed, RC)
        assert np.allclose(t.bw, t.bw.T) and np.all(t.bw > 0)
        if np.min(t.bw) < LAN_BYTES_PER_S:
            limited += 1
            assert t.cfg.bytes_per_image in PAYLOAD_BYTES
            assert np.min(t.bw) >= 1e6 / 8.0  # the slowest: 1 Mbit/s
    assert 8 <= limited <= 32  # about half of 40
    never = randomised_trace(3, RandomiseConfig(n_requests=120, links_prob=0.0))
    assert np.all(never.bw == LAN_BYTES_PER_S) and never.cfg.bytes_per_image == 512.0
    # the cluster and workload of a seed do not depend on whether links are drawn
    assert np.array_equal(never.times, randomised_trace(3, RC).times)
