"""`scenario sim` and `scenario compare`: the replay trace, the runtime-shaped results, the gaps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peer.cli import main
from peer.harness.scenario import parse_scenario, schedule
from peer.harness.scenario_sim import (
    EngineCosts,
    SimParams,
    SimScenarioError,
    build_trace,
    compare,
    fit_params,
    load_costs,
    quota_factor,
    simulate,
)

COSTS = EngineCosts(a_s=0.004, c_s=0.002, source="test")
RUN_KEYS = {
    "requests",
    "ok",
    "failed",
    "failure_rate",
    "errors",
    "makespan_mean_s",
    "makespan_p50_s",
    "makespan_p95_s",
    "utilisation",
    "mean_peers_per_request",
    "replans",
    "events_applied",
    "quotas",
    "records",
}


def scenario(**over: Any) -> Any:
    d: dict[str, Any] = {
        "name": "t",
        "seed": 3,
        "policies": ["greedy", "random", "local"],
        "peers": {"count": 3, "quotas": [1.0, 0.5, 0.25]},
        "workload": {
            "duration_s": 20,
            "rate_per_s": 1.5,
            "kinds": [{"mode": "batch", "count": 8, "steps": 20, "weight": 1}],
        },
    }
    d.update(over)
    return parse_scenario(d)


def test_quota_factor() -> None:
    assert quota_factor(None, 1) == 1.0
    assert quota_factor(1.0, 1) == 1.0
    assert quota_factor(0.25, 1) == pytest.approx(4.0)
    assert quota_factor(2.0, 1) == 1.0
    assert quota_factor(1.0, 2) == pytest.approx(2.0)


def test_trace_replays_the_schedule_costs_and_events() -> None:
    sc = scenario(
        events=[
            {"at_s": 4, "action": "crash", "peer": 1},
            {"at_s": 9, "action": "restart", "peer": 1},
            {"at_s": 5, "action": "quota", "peer": 2, "cores": 0.5},
        ]
    )
    trace, unmodelled = build_trace(sc, COSTS, SimParams(restart_s=2.0))
    plan = schedule(sc)
    assert np.allclose(trace.times, [r.at_s for r in plan])
    assert np.allclose(trace.origin_u, [r.origin_u for r in plan])
    assert trace.a_s is not None and trace.c_s is not None
    assert np.allclose(trace.a_s, [0.004, 0.008, 0.016])
    assert np.allclose(trace.c_s, [0.002, 0.004, 0.008])
    assert trace.crashes[1] == [(4.0, 11.0)]
    assert trace.cost_events == ((5.0, 2, pytest.approx(0.5)),)
    assert unmodelled == []


def test_sim_results_have_the_run_keys_and_are_deterministic() -> None:
    sc = scenario()
    a = simulate(sc, COSTS, SimParams())
    b = simulate(sc, COSTS, SimParams())
    assert set(a["policies"]) == {"greedy", "random", "local"}
    for r in a["policies"].values():
        assert set(r) >= RUN_KEYS
        assert r["requests"] == len(schedule(sc))
        assert set(r["utilisation"]) == {"p0", "p1", "p2"}
    assert a["policies"]["greedy"]["makespan_mean_s"] == b["policies"]["greedy"]["makespan_mean_s"]
    # local never recruits; greedy does, and is faster than everything-at-home on this cluster
    assert a["policies"]["local"]["mean_peers_per_request"] == 1.0
    assert a["policies"]["greedy"]["makespan_mean_s"] < a["policies"]["local"]["makespan_mean_s"]


def test_slower_costs_and_overheads_make_longer_spans() -> None:
    sc = scenario(policies=["greedy"])
    fast = simulate(sc, COSTS, SimParams(overhead_s=(0.0, 0.0, 0.0)))
    slow = simulate(
        sc, EngineCosts(0.008, 0.004, source="test"), SimParams(overhead_s=(0.0, 0.0, 0.0))
    )
    over = simulate(sc, COSTS, SimParams(overhead_s=(0.1, 0.1, 0.1)))
    f = fast["policies"]["greedy"]["makespan_mean_s"]
    assert slow["policies"]["greedy"]["makespan_mean_s"] > 1.5 * f
    assert over["policies"]["greedy"]["makespan_mean_s"] == pytest.approx(f + 0.1, abs=0.02)


def test_fit_reads_costs_and_overheads_from_a_real_run() -> None:
    sc = scenario()
    steps = 20
    real = {
        "scenario": "t",
        "kinds": [{"mode": "batch", "count": 8, "steps": steps, "weight": 1}],
        "policies": {
            "greedy": {
                "records": [
                    {
                        "ok": True,
                        "kind": 0,
                        "origin": "p0",
                        "wall_s": 0.5,
                        "makespan_s": 0.45,
                        "timing": [
                            {
                                "peer": "p0",
                                "units": 6,
                                "compute_s": 3.0 * steps * (0.004 + 0.002 * 6),
                                "queue_s": 0.0,
                                "start_s": 0.0,
                                "end_s": 0.3,
                            },
                            {
                                "peer": "p1",
                                "units": 2,
                                "compute_s": 5.0 * steps * (0.004 + 0.002 * 2),
                                "queue_s": 0.01,
                                "start_s": 0.0,
                                "end_s": 5.0 * steps * 0.008 + 0.01 + 0.03,
                            },
                        ],
                    }
                ],
                "events_applied": [],
            }
        },
    }
    p = fit_params(real, sc, COSTS, SimParams())
    assert p.scale is not None
    assert p.scale[0] == pytest.approx(3.0)
    assert p.scale[1] == pytest.approx(5.0)
    assert p.scale[2] == pytest.approx(4.0)  # no share there: the quota model
    assert p.setup_s == pytest.approx(0.03)
    assert p.overhead_s is not None and p.overhead_s[0] == pytest.approx(0.05)
    with pytest.raises(SimScenarioError):
        fit_params({"kinds": []}, sc, COSTS, SimParams())


def test_fit_compares_shares_after_a_quota_event_with_the_quota_then_in_force() -> None:
    # p1 runs at 0.5 core, then 0.25 from 10 s: twice as slow after the event. The replay applies
    # the event itself, so the fitted factor is the one before it (it used to be the average,
    # and the replay then slowed the peer down a second time).
    sc = scenario(events=[{"at_s": 10, "action": "quota", "peer": 1, "cores": 0.25}])
    steps = 20
    per = steps * (0.004 + 0.002 * 2)

    def rec(at_s: float, slow: float) -> dict[str, Any]:
        t = {"peer": "p1", "units": 2, "compute_s": slow * per, "queue_s": 0.0}
        return {"ok": True, "kind": 0, "origin": "p1", "at_s": at_s, "timing": [t]}

    real = {
        "scenario": "t",
        "kinds": [{"mode": "batch", "count": 8, "steps": steps, "weight": 1}],
        "policies": {"greedy": {"records": [rec(2.0, 2.5), rec(12.0, 5.0)]}},
    }
    p = fit_params(real, sc, COSTS, SimParams())
    assert p.scale is not None and p.scale[1] == pytest.approx(2.5)


def test_fit_reads_a_relay_share_as_steps_of_the_batch() -> None:
    # a steps/chain share's units are denoising steps of all the images, not images
    sc = scenario()
    real = {
        "scenario": "t",
        "kinds": [{"mode": "chain", "count": 2, "steps": 40, "weight": 1}],
        "policies": {
            "greedy": {
                "records": [
                    {
                        "ok": True,
                        "kind": 0,
                        "origin": "p0",
                        "images": 2,
                        "timing": [
                            {
                                "peer": "p0",
                                "units": 30,
                                "compute_s": 2.0 * 30 * (0.004 + 0.002 * 2),
                            },
                            {
                                "peer": "p1",
                                "units": 10,
                                "compute_s": 3.0 * 10 * (0.004 + 0.002 * 2),
                                "queue_s": 0.0,
                                "start_s": 0.0,
                                "end_s": 1.0,
                            },
                        ],
                    }
                ]
            }
        },
    }
    p = fit_params(real, sc, COSTS, SimParams())
    assert p.scale is not None
    assert p.scale[0] == pytest.approx(2.0) and p.scale[1] == pytest.approx(3.0)


def _res(means: dict[str, float]) -> dict[str, Any]:
    return {
        "scenario": "x",
        "policies": {
            p: {
                "makespan_mean_s": m,
                "makespan_p50_s": m,
                "makespan_p95_s": 2 * m,
                "mean_peers_per_request": 1.5,
                "failure_rate": 0.0,
                "utilisation": {"p0": 0.5, "p1": 0.2},
            }
            for p, m in means.items()
        },
    }


def test_compare_tolerance_ranking_and_discrepancies() -> None:
    real = _res({"onnx": 0.4, "greedy": 0.5, "random": 0.8})
    close = compare(real, _res({"onnx": 0.44, "greedy": 0.52, "random": 0.9}))
    assert close["same_ranking"] and close["all_means_within_tolerance"]
    far = compare(real, _res({"onnx": 0.6, "greedy": 0.5, "random": 0.8}))
    assert not far["same_ranking"]
    assert not far["policies"]["onnx"]["mean_within_tolerance"]
    assert far["largest_discrepancies"][0].startswith("onnx makespan_mean_s")
    with pytest.raises(SimScenarioError):
        compare(real, {"policies": {"equal": {}}})


def test_costs_file(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"a_s": 0.01, "c_s": 0.002}))
    c = load_costs(f, "onnx", 1)
    assert (c.a_s, c.c_s) == (0.01, 0.002)
    f.write_text(json.dumps({"a_s": -1, "c_s": 0.0}))
    with pytest.raises(SimScenarioError):
        load_costs(f, "onnx", 1)
    with pytest.raises(SimScenarioError):
        load_costs(tmp_path / "missing.json", "onnx", 1, measure=False)


def test_cli_sim_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"a_s": 0.004, "c_s": 0.002}))
    toml = tmp_path / "s.toml"
    toml.write_text(
        'name = "cli"\nseed = 1\npolicies = ["greedy", "local"]\n[peers]\ncount = 2\n'
        "quotas = [1.0, 0.5]\n[workload]\nduration_s = 10\nrate_per_s = 1\n"
    )
    out = tmp_path / "sim"
    assert main(["scenario", "sim", str(toml), "--costs", str(costs), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["sim"]["engine_costs"]["a_s"] == 0.004
    assert (out / "report.md").read_text().startswith("# Scenario `cli`")
    cmp_json = tmp_path / "cmp.json"
    rc = main(
        [
            "scenario",
            "compare",
            str(out / "results.json"),
            str(out / "results.json"),
            "--json",
            str(cmp_json),
        ]
    )
    assert rc == 0
    cmp = json.loads(cmp_json.read_text())
    assert cmp["same_ranking"] and cmp["all_means_within_tolerance"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[peers]\ncount = 0\n")
    assert main(["scenario", "sim", str(bad), "--costs", str(costs)]) == 2
    assert main(["scenario", "compare", str(tmp_path / "nope.json"), str(cmp_json)]) == 2
    assert "amcoedge scenario" in capsys.readouterr().err


def test_fit_keeps_a_peer_out_when_its_restart_never_served_in_the_real_run() -> None:
    from peer.harness.scenario_sim import NEVER_BACK_S

    sc = scenario(
        events=[
            {"at_s": 5, "action": "crash", "peer": 1},
            {"at_s": 8, "action": "restart", "peer": 1},
        ]
    )

    def real(restart: dict[str, Any]) -> dict[str, Any]:
        return {
            "scenario": "t",
            "kinds": [{"mode": "batch", "count": 8, "steps": 20, "weight": 1}],
            "policies": {"greedy": {"records": [], "events_applied": [restart]}},
        }

    seen = {"action": "restart", "applied_at_s": 8.0, "ready_at_s": 12.5}
    assert fit_params(real(seen), sc, COSTS, SimParams()).restart_s == pytest.approx(4.5)
    never = {"action": "restart", "applied_at_s": 8.0, "result": "restarted, but exited"}
    p = fit_params(real(never), sc, COSTS, SimParams())
    assert p.restart_s == NEVER_BACK_S
    trace, _ = build_trace(sc, COSTS, p)
    assert trace.crashes[1] == [(5.0, 8.0 + NEVER_BACK_S)]


def test_a_repair_is_replayed_as_its_masked_tiles_times_the_classes() -> None:
    from peer.harness.scenario_sim import repair_rows, repair_tiles

    # 64x64 canvas, 16-pixel windows with a 4-pixel halo (stride 8): 7 x 7 windows, of which
    # the 5 x 5 that touch the central 32x32 mask are repaired, each once per digit class
    assert repair_tiles(64) == 25 and repair_rows() == 10
    sc = scenario(
        workload={
            "duration_s": 10,
            "rate_per_s": 1.0,
            "kinds": [{"request": "repair", "size": 64, "steps": 20, "weight": 1}],
        }
    )
    trace, unmodelled = build_trace(sc, COSTS, SimParams())
    assert set(trace.images.tolist()) == {250} and set(trace.pixels.tolist()) == {1.0}
    assert unmodelled == []
    # the rows split over the peers: greedy recruits, local keeps all 250 at home
    res = simulate(sc, COSTS, SimParams())
    assert res["policies"]["greedy"]["mean_peers_per_request"] > 1.0
    assert res["policies"]["local"]["mean_peers_per_request"] == 1.0


def test_fit_counts_a_repair_shares_tiles_times_the_classes() -> None:
    sc = scenario()
    steps = 20
    rows = 10  # an unlabelled repair runs each tile once per class of the shipped model
    t = {"peer": "p0", "units": 5, "compute_s": 2.0 * steps * (0.004 + 0.002 * 5 * rows)}
    real = {
        "scenario": "t",
        "kinds": [{"request": "repair", "size": 64, "mode": "auto", "steps": steps, "weight": 1}],
        "policies": {
            "greedy": {"records": [{"ok": True, "kind": 0, "origin": "p0", "timing": [t]}]}
        },
    }
    p = fit_params(real, sc, COSTS, SimParams(), fit_host=False)
    assert p.scale is not None and p.scale[0] == pytest.approx(2.0)
