from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peer.cli import main
from peer.harness.scenario import Link, ScenarioError, load_scenario, parse_scenario, schedule
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


def net(**over: Any) -> dict[str, Any]:
    """Four peers, p1..p3 in namespaces, p0 on loopback (this namespace)."""
    peers: dict[str, Any] = {
        "count": 4,
        "network": ["loopback", "netns", "netns", "netns"],
        "links": [{"peer": 1, "rate_mbit": 20}, {"peer": 2, "up_mbit": 5, "down_mbit": 50}],
    }
    peers.update(over.pop("peers", {}))
    d: dict[str, Any] = {
        "peers": peers,
        "workload": {"duration_s": 60, "rate_per_s": 1.0},
        "events": [
            {"at_s": 5, "action": "link", "peer": 1, "rate_mbit": 2},
            {"at_s": 10, "action": "partition", "peers": [3, 2]},
            {"at_s": 20, "action": "heal"},
            {"at_s": 25, "action": "link_down", "peer": 2},
            {"at_s": 30, "action": "link_up", "peer": 2},
            {"at_s": 35, "action": "partition", "peers": [1]},
        ],
    }
    d.update(over)
    return d


def test_network_placement_links_and_link_events_parse() -> None:
    sc = parse_scenario(net())
    assert sc.network == ("loopback", "netns", "netns", "netns")
    assert sc.links[0] == Link() and sc.links[1] == Link(20.0, 20.0)
    assert sc.links[2] == Link(5.0, 50.0) and sc.links[3] == Link()
    assert [e.describe() for e in sc.events] == [
        "5s link p1 up 2 Mbit down 2 Mbit",
        "10s partition p2,p3",
        "20s heal",
        "25s link_down p2",
        "30s link_up p2",
        "35s partition p1",
    ]
    assert parse_scenario(net(peers={"network": "netns"})).network == ("netns",) * 4
    assert parse_scenario(base()).network == ("loopback",) * 3
    only_up = parse_scenario(net(events=[{"at_s": 1, "action": "link", "peer": 3, "up_mbit": 1}]))
    assert only_up.events[0].link == Link(1.0, None)
    assert only_up.events[0].describe() == "1s link p3 up 1 Mbit down unchanged"


def test_repair_kinds_parse() -> None:
    kinds = [
        {"request": "repair", "mode": "tile", "size": 64, "steps": 10},
        {"mode": "batch", "count": 4},
    ]
    sc = parse_scenario(base(workload={"duration_s": 10, "rate_per_s": 1, "kinds": kinds}))
    assert sc.kinds[0].request == "repair" and sc.kinds[0].size == 64 and sc.kinds[0].count == 1
    assert sc.kinds[1].request == "generate" and sc.kinds[1].size == 0


def _wl(kind: dict[str, Any]) -> dict[str, Any]:
    return {"duration_s": 10, "rate_per_s": 1, "kinds": [kind]}


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"peers": {"network": "cloud"}}, "peers.network[0]"),
        ({"peers": {"network": ["netns"]}}, "array of 4"),
        ({"peers": {"links": {"peer": 1}}}, "peers.links must be an array"),
        ({"peers": {"links": [{"peer": 0, "rate_mbit": 5}]}}, "p0 is not in a namespace"),
        ({"peers": {"links": [{"peer": 9, "rate_mbit": 5}]}}, "peers.links[0].peer"),
        ({"peers": {"links": [{"peer": 1}]}}, "peers.links[0].rate_mbit"),
        ({"peers": {"links": [{"peer": 1, "rate_mbit": 0}]}}, "peers.links[0].rate_mbit"),
        ({"peers": {"links": [{"peer": 1, "rate_mbit": 5, "up_mbit": 1}]}}, "not both"),
        ({"peers": {"links": [{"peer": 1, "down_mbit": "fast"}]}}, "down_mbit must be a number"),
        ({"peers": {"links": [{"peer": 1, "rate_mbit": 5, "delay_ms": 9}]}}, "delay_ms"),
        (
            {"peers": {"links": [{"peer": 1, "rate_mbit": 5}, {"peer": 1, "rate_mbit": 6}]}},
            "has a link already",
        ),
        ({"events": [{"at_s": 1, "action": "link", "peer": 1}]}, "events[0].rate_mbit"),
        ({"events": [{"at_s": 1, "action": "link", "peer": 0, "rate_mbit": 1}]}, "p0 is not"),
        ({"events": [{"at_s": 1, "action": "link_down", "peer": 1, "cores": 1}]}, "cores"),
        ({"events": [{"at_s": 1, "action": "partition", "peers": []}]}, "events[0].peers"),
        ({"events": [{"at_s": 1, "action": "partition", "peers": [1, 1]}]}, "once"),
        ({"events": [{"at_s": 1, "action": "partition", "peers": [0]}]}, "p0 is not"),
        ({"events": [{"at_s": 1, "action": "partition", "peers": [1, 2, 3]}]}, "other side"),
        ({"events": [{"at_s": 1, "action": "partition", "peer": 1}]}, "unknown key"),
        ({"events": [{"at_s": 1, "action": "heal"}]}, "no partition to heal"),
        (
            {
                "events": [
                    {"at_s": 1, "action": "partition", "peers": [1]},
                    {"at_s": 2, "action": "partition", "peers": [2]},
                ]
            },
            "already in place",
        ),
        ({"events": [{"at_s": 1, "action": "link_up", "peer": 1}]}, "already up"),
        (
            {
                "events": [
                    {"at_s": 1, "action": "link_down", "peer": 1},
                    {"at_s": 2, "action": "link_down", "peer": 1},
                ]
            },
            "already down",
        ),
        ({"workload": _wl({"request": "upscale"})}, "workload.kinds[0].request"),
        ({"workload": _wl({"request": "repair", "size": 64, "mode": "batch"})}, "for a repair"),
        ({"workload": _wl({"request": "repair", "size": 64, "count": 2})}, "one canvas"),
        ({"workload": _wl({"request": "repair"})}, "workload.kinds[0].size is required"),
        ({"workload": _wl({"request": "repair", "size": 8})}, "workload.kinds[0].size"),
        ({"workload": _wl({"mode": "batch", "size": 64})}, "only applies to request"),
    ],
)
def test_bad_network_scenarios_name_the_key(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(net(**over))
    assert needle in str(err.value)


def test_link_events_need_namespaced_peers() -> None:
    ev = [{"at_s": 1, "action": "heal"}]
    with pytest.raises(ScenarioError, match="needs peers in namespaces"):
        parse_scenario(base(events=ev))


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
