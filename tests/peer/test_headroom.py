"""`scenario sim --headroom`: every fixed action of the recruiter's action space, best vs greedy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peer.harness.headroom import PREFIX, fixed_actions, report_lines, summary
from peer.harness.scenario import parse_scenario
from peer.harness.scenario_sim import EngineCosts, SimParams, simulate

COSTS = EngineCosts(a_s=0.004, c_s=0.002, source="test")


def _scenario() -> Any:
    return parse_scenario(
        {
            "name": "t",
            "seed": 3,
            "policies": ["greedy", "local"],
            "peers": {"count": 3, "quotas": [1.0, 0.5, 0.25]},
            "workload": {
                "duration_s": 20,
                "rate_per_s": 1.5,
                "kinds": [{"mode": "batch", "count": 8, "steps": 20, "weight": 1}],
            },
        }
    )


def test_fixed_actions_leave_out_the_learned_hedge_and_caps_that_mean_all() -> None:
    three = fixed_actions(3)
    assert len(three) == 3 * 4  # caps 1, 2 and all; four age hedges
    assert PREFIX + "cap=1,hedge=0xage" in three and PREFIX + "cap=all,hedge=2xage" in three
    assert not any("learned" in n or "cap=3" in n for n in three)
    assert len(fixed_actions(5)) == 5 * 4


def test_the_headroom_replay_decodes_each_action_and_finds_the_best() -> None:
    sc = _scenario()
    res = simulate(sc, COSTS, SimParams(), extra=fixed_actions(sc.peers))
    assert set(res["policies"]) == {"greedy", "local"}  # the table keeps the file's policies
    extra = res["extra"]
    one = extra[PREFIX + "cap=1,hedge=0xage"]
    assert one["mean_peers_per_request"] == 1.0  # a cap of one recruits nobody else
    assert extra[PREFIX + "cap=all,hedge=0xage"]["mean_peers_per_request"] > 1.0
    h = summary({**res["policies"], **extra})
    means = [r["makespan_mean_s"] for r in h["actions"].values()]
    assert h["best"]["makespan_mean_s"] == min(means)
    g = res["policies"]["greedy"]["makespan_mean_s"]
    assert h["best_over_greedy"]["mean"] == pytest.approx(h["best"]["makespan_mean_s"] / g, 1e-3)
    # on this cluster (one fast peer, two slow), keeping everything home is not the best action
    assert h["best"]["makespan_mean_s"] < one["makespan_mean_s"]
    text = "\n".join(report_lines(h))
    assert "## Headroom" in text and f"Best fixed action: {h['best']['action']}" in text


def test_cli_headroom_writes_the_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peer.cli import main

    f = tmp_path / "s.toml"
    f.write_text(
        'name = "h"\nseed = 1\npolicies = ["greedy"]\n[peers]\ncount = 2\nquotas = [1.0, 0.5]\n'
        "[workload]\nduration_s = 5\nrate_per_s = 1.0\nkinds = [{ count = 4, steps = 10 }]\n"
    )
    costs = tmp_path / "costs.json"
    costs.write_text('{"a_s": 0.004, "c_s": 0.002, "source": "test"}')
    out = tmp_path / "o"
    assert (
        main(["scenario", "sim", str(f), "--costs", str(costs), "--headroom", "--out", str(out)])
        == 0
    )
    assert "headroom: best fixed action" in capsys.readouterr().out
    assert "## Headroom" in (out / "report.md").read_text()
