"""`amcoedge scenario replays`: randomised replays of a scenario fitted to a real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from peer.cli import main
from policy.fleet.traces import load_traces

ROOT = Path(__file__).resolve().parents[2]
BUSY = ROOT / "examples" / "scenarios" / "busy.toml"
REAL = ROOT / "reports" / "sim2real" / "busy" / "real.json"
COSTS = ROOT / "reports" / "sim2real" / "engine_costs.json"


def test_replays_are_fitted_randomised_and_loadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy.npz"
    args = ["scenario", "replays", str(BUSY), "--fit", str(REAL), "--costs", str(COSTS)]
    assert main([*args, "--variants", "4", "--seed", "3", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    traces, meta = load_traces(out)
    assert len(traces) == 4 and meta["scenario"] == printed["scenario"] == "busy-heterogeneous"
    assert all(t.cfg.n_peers == 4 for t in traces)
    # new schedules at other rates: the variants differ in their arrivals and costs
    assert len({t.times.shape[0] for t in traces}) > 1
    assert not np.allclose(np.asarray(traces[0].a_s), np.asarray(traces[1].a_s))
    # the fitted per-peer factors keep their order within the per-peer jitter (1 core vs 0.25)
    for t in traces:
        assert t.a_s is not None and t.a_s[0] < t.a_s[3]
    # the same seed writes the same traces
    again = tmp_path / "again.npz"
    assert main([*args, "--variants", "4", "--seed", "3", "--out", str(again)]) == 0
    assert all(
        np.array_equal(a.times, b.times) for a, b in zip(traces, load_traces(again)[0], strict=True)
    )


def test_replays_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.npz")
    base = ["scenario", "replays", str(BUSY), "--costs", str(COSTS), "--out", out]
    assert main([*base, "--fit", str(REAL), "--variants", "0"]) == 2
    assert "--variants must be" in capsys.readouterr().err
    assert main([*base, "--fit", str(REAL), "--seed", "-1"]) == 2
    assert "--seed must be" in capsys.readouterr().err
    assert main([*base, "--fit", str(tmp_path / "missing.json")]) == 2
    assert "--fit" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main([*base, "--fit", str(bad)]) == 2
    assert "not a JSON object" in capsys.readouterr().err


def test_replays_to_an_unwritable_place_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "missing" / "x.npz")
    args = ["scenario", "replays", str(BUSY), "--fit", str(REAL), "--costs", str(COSTS)]
    assert main([*args, "--variants", "1", "--out", out]) == 2
    assert "--out" in capsys.readouterr().err
