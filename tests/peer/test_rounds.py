"""Repeated scenario rounds: rotated order, pooled figures, paired ratios (``scenario run --rounds``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peer.cli import main
from peer.harness import scenario_run
from peer.harness.rounds import paired, pool, report_lines, round_orders, round_table
from peer.harness.scenario import parse_scenario, schedule


def _run(walls: list[float | None], util: float = 0.5, error: str | None = None) -> dict[str, Any]:
    """One policy's run as ``_run_policy`` returns it: a record per request (None: failed)."""
    records = [
        {"index": i, "ok": w is not None, "wall_s": w or 0.0, "peers": ["p0", "p1"]}
        | ({} if w is not None else {"error": "deadline"})
        for i, w in enumerate(walls)
    ]
    ok = [w for w in walls if w is not None]
    run: dict[str, Any] = {
        "requests": len(walls),
        "ok": len(ok),
        "failure_rate": 1 - len(ok) / len(walls) if walls else 0.0,
        "makespan_mean_s": sum(ok) / len(ok) if ok else None,
        "makespan_p95_s": max(ok) if ok else None,
        "utilisation": {"p0": util, "p1": util / 2},
        "replans": 1,
        "lost": 0,
        "retried": 0,
        "records": records,
        "events_applied": [
            {
                "action": "crash",
                "peer": "p1",
                "what": "crash p1",
                "applied_at_s": 1.0,
                "result": "killed",
            }
        ],
        "polls": round(util * 100),
    }
    if error:
        run["error"] = error
    return run


def test_each_round_rotates_the_order_so_every_policy_runs_first_once() -> None:
    assert round_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert round_orders(["a", "b"], 3) == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert round_orders(["a"], 2) == [["a"], ["a"]]


def test_pooling_counts_every_request_of_every_round() -> None:
    per_round = [
        {"onnx": _run([1.0, 2.0], util=0.4), "greedy": _run([2.0, None], util=0.6)},
        {"onnx": _run([3.0, 4.0], util=0.2), "greedy": _run([4.0, 6.0], util=0.8)},
    ]
    got = pool(per_round)
    onnx, greedy = got["onnx"], got["greedy"]
    assert onnx["rounds"] == 2 and onnx["requests"] == 4 and onnx["ok"] == 4
    assert onnx["makespan_mean_s"] == pytest.approx(2.5)
    assert onnx["utilisation"] == {"p0": pytest.approx(0.3), "p1": pytest.approx(0.15)}
    assert [r["round"] for r in onnx["records"]] == [0, 0, 1, 1]
    assert onnx["replans"] == 2 and len(onnx["events_applied"]) == 2
    assert onnx["polls"] == 20  # what the watcher saw in the last round
    # the failed request counts in the pooled failure rate, not in the mean
    assert greedy["failed"] == 1 and greedy["failure_rate"] == pytest.approx(0.25)
    assert greedy["errors"] == {"deadline": 1}
    assert greedy["makespan_mean_s"] == pytest.approx(4.0)
    assert "error" not in greedy


def test_a_round_whose_cluster_failed_is_named_in_the_pooled_result() -> None:
    per_round = [{"onnx": _run([1.0])}, {"onnx": _run([], error="network: no root")}]
    got = pool(per_round)["onnx"]
    assert got["error"] == "round 1: network: no root"
    assert got["requests"] == 1 and got["makespan_mean_s"] == pytest.approx(1.0)


def test_paired_ratios_are_taken_within_each_round() -> None:
    per_round = [
        {"onnx": _run([1.0, 1.0]), "greedy": _run([2.0, 2.0]), "random": _run([4.0, 4.0])},
        {"onnx": _run([3.0, 3.0]), "greedy": _run([2.0, 2.0]), "random": _run([3.0, 3.0])},
        {"onnx": _run([1.0, 1.0]), "greedy": _run([1.0, 1.0]), "random": _run([None, None])},
    ]
    got = paired(per_round, "onnx")
    assert set(got) == {"onnx/greedy", "onnx/random"}
    g = got["onnx/greedy"]["mean"]
    assert g["per_round"] == [0.5, 1.5, 1.0] and g["median"] == 1.0
    assert (g["min"], g["max"], g["rounds_without"]) == (0.5, 1.5, 0)
    r = got["onnx/random"]["mean"]  # random served nothing in round 2: no ratio there
    assert r["per_round"] == [0.25, 1.0] and r["rounds_without"] == 1


def test_the_report_has_a_row_per_round_and_the_paired_ratios() -> None:
    per_round = [{"a": _run([1.0]), "b": _run([2.0])}, {"b": _run([2.0]), "a": _run([3.0])}]
    res = {
        "policies": pool(per_round),
        "rounds": round_table([["a", "b"], ["b", "a"]], per_round),
        "paired": paired(per_round, "a"),
    }
    text = "\n".join(report_lines(res))
    assert "| 0 | a b | 1.000 / 1.000 | 2.000 / 2.000 |" in text
    assert "| 1 | b a | 3.000 / 3.000 | 2.000 / 2.000 |" in text
    assert "| a/b | 1.000 [0.500, 1.500] | 1.000 [0.500, 1.500] |" in text
    assert report_lines({"policies": {}}) == []


def test_scenario_run_with_rounds_runs_each_policy_per_round_in_rotated_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = parse_scenario(
        {
            "name": "rounds",
            "seed": 1,
            "policies": ["onnx", "greedy"],
            "peers": {"count": 2},
            "workload": {"duration_s": 3, "rate_per_s": 1.0, "kinds": [{"count": 1}]},
        }
    )
    n = len(schedule(sc))
    calls: list[tuple[str, str]] = []

    def fake(sc_: Any, plan: Any, policy: str, logs: Path, net: Any) -> dict[str, Any]:
        calls.append((policy, logs.parent.name))
        wall = {"onnx": 1.0, "greedy": 2.0}[policy] * len(calls)
        return _run([wall] * n)

    monkeypatch.setattr(scenario_run, "_run_policy", fake)
    res = scenario_run.run_scenario(sc, tmp_path, progress=False, rounds=2)
    assert calls == [
        ("onnx", "round0"),
        ("greedy", "round0"),
        ("greedy", "round1"),
        ("onnx", "round1"),
    ]
    assert [r["order"] for r in res["rounds"]] == [["onnx", "greedy"], ["greedy", "onnx"]]
    assert res["policies"]["onnx"]["requests"] == 2 * n
    # onnx ran 1st then 4th (walls 1 and 4), greedy 2nd and 3rd (walls 4 and 6)
    assert res["paired"]["onnx/greedy"]["mean"]["per_round"] == [
        0.25,
        pytest.approx(4 / 6, abs=1e-4),
    ]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["paired"] == res["paired"]
    report = (tmp_path / "report.md").read_text()
    assert "## Rounds (2;" in report and "- onnx (round 1): crash p1" in report


def test_cli_rejects_a_bad_rounds_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scenario", "run", "x.toml", "--rounds", "0"])
    assert exc.value.code == 2
    assert "--rounds: must be 1 to 20" in capsys.readouterr().err
