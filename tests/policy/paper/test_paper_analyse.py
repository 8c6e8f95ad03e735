"""sim analyse: each analysis runs end to end on a tiny scenario and records its command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from peer.cli import main
from policy.paper import analyse
from policy.paper.config import DEFAULT
from policy.paper.env import PaperEnv, draw_densities
from policy.paper.methods import rules_for

TINY = DEFAULT.with_(tasks=3, slots=4)


def test_bound_improves_on_the_best_common_subset() -> None:
    res = analyse.bound([0], episodes=1, rounds=2, params=TINY)
    row = res["rows"][0]
    assert row["makespan"] <= row["common_makespan"]
    assert len(row["subsets"]) == 5 and row["ratio_optimal"] == pytest.approx(
        row["makespan"] / row["optimal"]
    )
    # the recorded make-span is what the subsets give on the same arrivals
    rng = np.random.default_rng(0)
    env = PaperEnv(TINY, rules_for("amcoedge", TINY), draw_densities(TINY, rng))
    arrivals = [env.draw_arrivals(rng)]
    subsets = [tuple(s) for s in row["subsets"]]
    assert analyse.static_makespan(env, arrivals, subsets) == pytest.approx(row["makespan"])


@pytest.mark.slow
def test_analyse_cli_writes_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--seeds", "0,1", "--episodes", "1", "--jobs", "1", "--tasks", "3", "--quiet"]
    for name, extra in (
        ("spread", ["--methods", "amcoedge"]),
        ("ablation", ["--variants", "full", "mse"]),
        ("drl-rule", []),
        ("bound", ["--rounds", "1"]),
    ):
        out = tmp_path / f"{name}.json"
        assert main(["sim", "analyse", name, "--out", str(out), *common, *extra]) == 0, name
        data = json.loads(out.read_text())
        assert data["analysis"] == name and data["seeds"] == [0, 1]
        assert data["command"].startswith(f"amcoedge sim analyse {name} --out {out}")
        assert "--tasks 3" in data["command"]
    spread = json.loads((tmp_path / "spread.json").read_text())["summary"]["methods"]["amcoedge"]
    assert len(spread["per_seed"]) == 2 and len(spread["ratio_optimal"]) == 2
    rules = json.loads((tmp_path / "drl-rule.json").read_text())["summary"]
    assert set(rules["rules"]) == {"spec", "older-commit"} and rules["closer"] in rules["rules"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["sim", "analyse", "spread", "--out", str(tmp_path / "x.json"), "--seeds", "1,1"])
    assert exc.value.code == 2 and "distinct" in capsys.readouterr().err


def test_analyse_cli_rejects_repeated_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sim", "analyse", "bound", "--out", str(tmp_path / "x.json"), "--seeds", "2,2"])
    assert exc.value.code == 2 and "distinct" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
