"""Traces on disk (``policy.fleet.traces``) and training episodes drawn from them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from policy.fleet import heuristics
from policy.fleet.heuristics import Choice
from policy.fleet.randomise import RandomiseConfig, randomised_trace
from policy.fleet.sim import RequestCtx, Trace, run
from policy.fleet.traces import TraceFileError, load_traces, save_traces
from policy.fleet.train import TrainConfig, train


def _greedy(ctx: RequestCtx, rng: np.random.Generator) -> Choice:
    return heuristics.greedy(ctx.arr, ctx.units, rng)


def _traces() -> list[Trace]:
    plain = randomised_trace(1, RandomiseConfig(n_requests=40))
    hosted = randomised_trace(2, RandomiseConfig(n_requests=30, host_prob=1.0))
    n = plain.cfg.n_peers
    crashes: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    crashes[n - 1] = [(1.0, math.inf)]  # down to the end, as a replay of a crash writes it
    events = replace(plain, crashes=crashes, cost_events=((2.0, 0, 2.5),))
    return [events, hosted]


def test_traces_round_trip_and_replay_identically(tmp_path: Path) -> None:
    traces = _traces()
    path = tmp_path / "t.npz"
    save_traces(path, traces, {"scenario": "test"})
    got, meta = load_traces(path)
    assert meta == {"scenario": "test"} and len(got) == 2
    for a, b in zip(traces, got, strict=True):
        assert a.cfg == b.cfg and a.crashes == b.crashes and a.cost_events == b.cost_events
        assert a.host_cores == b.host_cores and a.demand_events == b.demand_events
        ra, rb = run(a, _greedy, seed=0), run(b, _greedy, seed=0)
        assert np.array_equal(ra.makespan, rb.makespan)


def test_bad_traces_files_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match="no such file"):
        load_traces(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(TraceFileError, match="not a traces file"):
        load_traces(junk)
    no_header = tmp_path / "nh.npz"
    np.savez(no_header, x=np.zeros(3))
    with pytest.raises(TraceFileError, match="no header"):
        load_traces(no_header)
    good = tmp_path / "good.npz"
    save_traces(good, _traces()[:1], {})
    with np.load(good) as z:
        data = {k: z[k] for k in z.files}

    def broken(name: str, **change: np.ndarray) -> Path:
        p = tmp_path / f"{name}.npz"
        np.savez(p, **{**data, **change})
        return p

    with pytest.raises(TraceFileError, match="times must be"):
        load_traces(broken("unsorted", **{"0/times": data["0/times"][::-1].copy()}))
    with pytest.raises(TraceFileError, match=r"bw must be"):
        load_traces(broken("bw", **{"0/bw": np.zeros((2, 3))}))
    with pytest.raises(TraceFileError, match="missing"):
        load_traces(_drop(tmp_path, data))
    doc = json.loads(bytes(data["header"]).decode())
    doc["format"] = "other/9"
    header = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    with pytest.raises(TraceFileError, match="format is not"):
        load_traces(broken("fmt", header=header))


def _drop(tmp_path: Path, data: dict[str, np.ndarray]) -> Path:
    p = tmp_path / "dropped.npz"
    kept = {k: v for k, v in data.items() if k != "0/times"}
    np.savez(p, **kept)  # type: ignore[arg-type]
    return p


def test_training_draws_episodes_from_replay_files(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    save_traces(path, _traces(), {})
    tc = TrainConfig(
        minutes=10.0,
        episodes=3,
        seed=1,
        requests_per_run=60,
        steps_per_run=2,
        batch_per_run=8,
        replays=(str(path),),
        replay_frac=1.0,
        runtime_semantics=True,
    )
    ckpt = train(tc, tmp_path / "out", progress=False)
    # every episode was one of the two traces (their peer counts and request counts)
    sizes = {(t.cfg.n_peers,) for t in _traces()}
    assert {(e["n"],) for e in ckpt["log"]} <= sizes
    assert ckpt["train"]["replays"] == [str(path)] and ckpt["train"]["replay_frac"] == 1.0
    with pytest.raises(ValueError, match="needs replays"):
        train(replace(tc, replays=()), tmp_path / "none", progress=False)


def test_cli_train_refuses_a_bad_traces_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peer.cli import main

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    out = tmp_path / "out"
    args = ["policy", "train", "--out", str(out), "--episodes", "1", "--quiet"]
    assert main([*args, "--replays", str(junk), "--replay-frac", "1"]) == 2
    assert "not a traces file" in capsys.readouterr().err
    assert main([*args, "--replay-frac", "0.5"]) == 2
    assert "--replay-frac needs --replays" in capsys.readouterr().err
