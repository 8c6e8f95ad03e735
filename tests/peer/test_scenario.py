from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peer.cli import main
from peer.harness.scenario import ScenarioError, load_scenario, parse_scenario, schedule
from peer.harness.scenario_run import run_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def base(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "t",
        "seed": 5,
        "policies": ["onnx", "local"],
        "peers": {"count": 3, "quotas": [1.0, 0.5]},
        "workload": {"duration_s": 20, "rate_per_s": 2.0},
        "events": [
            {"at_s": 5, "action": "crash", "peer": 1},
            {"at_s": 9, "action": "restart", "peer": 1},
            {"at_s": 2, "action": "quota", "peer": 2, "cores": 0.2},
        ],
    }
    d.update(over)
    return d


def test_every_shipped_example_parses() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files
    for f in files:
        sc = load_scenario(f)
        assert sc.peers >= 1 and sc.policies and schedule(sc)


def test_parse_sorts_events_and_fills_defaults() -> None:
    sc = parse_scenario(base())
    assert [e.action for e in sc.events] == ["quota", "crash", "restart"]
    assert sc.deadline_s == 30.0 and sc.threads == 1
    assert sc.kinds[0].mode == "batch" and sc.kinds[0].count == 8


def test_schedule_is_seeded_and_within_the_duration() -> None:
    sc = parse_scenario(base())
    a, b = schedule(sc), schedule(sc)
    assert a == b
    assert all(0 < p.at_s < sc.duration_s for p in a)
    assert [p.at_s for p in a] == sorted(p.at_s for p in a)
    # Poisson(2/s) over 20 s: 40 expected; the seeded draw is far from the tails
    assert 20 <= len(a) <= 60
    other = schedule(parse_scenario(base(seed=6)))
    assert [p.at_s for p in other] != [p.at_s for p in a]


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"bogus": 1}, "unknown key"),
        ({"peers": {"count": 0}}, "peers.count"),
        ({"peers": {"count": 2.5}}, "integer"),
        ({"peers": {"count": 3, "quotas": [1.0, -1]}}, "peers.quotas[1]"),
        ({"workload": {"duration_s": 10}}, "workload.rate_per_s is required"),
        ({"workload": {"duration_s": 10, "rate_per_s": "fast"}}, "must be a number"),
        ({"workload": {"duration_s": 10, "rate_per_s": 1, "kinds": []}}, "kinds"),
        (
            {"workload": {"duration_s": 10, "rate_per_s": 1, "kinds": [{"mode": "warp"}]}},
            "mode",
        ),
        (
            {"workload": {"duration_s": 10, "rate_per_s": 1, "kinds": [{"mode": "steps"}]}},
            "count must be 1",
        ),
        ({"policies": ["onnx", "magic"]}, "unknown policy"),
        ({"policies": ["onnx", "onnx"]}, "once"),
        ({"events": [{"at_s": 1, "action": "explode", "peer": 1}]}, "action"),
        ({"events": [{"at_s": 99, "action": "crash", "peer": 1}]}, "at_s"),
        ({"events": [{"at_s": 1, "action": "crash", "peer": 7}]}, "peer"),
        ({"events": [{"at_s": 1, "action": "crash", "peer": 0}]}, "join seed"),
        ({"events": [{"at_s": 1, "action": "restart", "peer": 1}]}, "not down"),
        (
            {
                "events": [
                    {"at_s": 1, "action": "crash", "peer": 1},
                    {"at_s": 2, "action": "stop", "peer": 1},
                ]
            },
            "already down",
        ),
        ({"events": [{"at_s": 1, "action": "crash", "peer": 1, "cores": 1}]}, "cores"),
        (
            {
                "peers": {"count": 2},
                "events": [{"at_s": 1, "action": "quota", "peer": 1, "cores": 1}],
            },
            "needs peers.quotas",
        ),
    ],
)
def test_bad_scenarios_name_the_problem(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(base(**over))
    assert needle in str(err.value)


def test_cli_rejects_bad_files_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("peers = [")
    assert main(["scenario", "run", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["scenario", "run", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    good = EXAMPLES / "crash.toml"
    assert main(["scenario", "run", str(good), "--policies", "onnx,nope"]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_cli_check_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "run", str(EXAMPLES / "crash.toml"), "--check"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["peers"] == 4 and plan["requests"] > 0 and "8s crash p1" in plan["events"]


@pytest.mark.timeout(180)  # real peer processes: about 10 s alone, stopped at 180 s
def test_a_crash_scenario_runs_on_real_peers_and_accounts_for_every_request(
    tmp_path: Path,
) -> None:
    sc = parse_scenario(
        {
            "name": "e2e",
            "seed": 3,
            "policies": ["greedy"],
            "peers": {"count": 2},
            "workload": {
                "duration_s": 4,
                "rate_per_s": 2.0,
                "kinds": [{"mode": "batch", "count": 2, "steps": 4}],
            },
            "events": [{"at_s": 2, "action": "crash", "peer": 1}],
        }
    )
    res = run_scenario(sc, tmp_path, progress=False)
    run = res["policies"]["greedy"]
    assert "error" not in run, run.get("error")
    planned = len(schedule(sc))
    assert run["requests"] == planned == res["requests"]
    assert run["ok"] + run["failed"] == planned
    assert sorted(r["index"] for r in run["records"]) == list(range(planned))
    # after the crash every request goes to p0, and requests before it were served
    assert all(r["origin"] == "p0" for r in run["records"] if r["sent_s"] > 2.5)
    assert run["ok"] >= planned - 2
    [ev] = run["events_applied"]
    assert ev["action"] == "crash" and ev["result"] == "killed"
    for name in ("results.json", "report.md", "makespan.png"):
        assert (tmp_path / name).is_file()
    assert "| greedy |" in (tmp_path / "report.md").read_text()
