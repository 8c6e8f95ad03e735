"""The report writer prints only figures from its inputs or cited constants, never its own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from policy.paper import report as report_mod
from policy.paper.config import DEFAULT
from policy.paper.report import write_report
from policy.paper.reproduce import Plan, assemble, plan_work, render

WRITER_SOURCE = Path(report_mod.__file__).read_text()
NUMBER = re.compile(r"(?<![A-Za-z_\d.])\d+(?:\.\d+)?")  # not part of a name (float32)


def numbers_in(text: str) -> set[str]:
    """Numeric tokens of the report, except single digits (headings, counts)."""
    return {t for t in NUMBER.findall(text) if len(t) > 1}


def literal_in_source(token: str) -> bool:
    return re.search(rf"(?<![A-Za-z_\d.]){re.escape(token)}(?![\d])", WRITER_SOURCE) is not None


PLAN = Plan(
    sweeps={"deadline": (0.35, 0.85)},
    methods=("amcoedge", "amcoedge+", "smcoedge", "drlcoedge", "randcoedge", "optimal"),
    learned_episodes=37,
    other_episodes=13,
    seeds=(4, 7),
    quick=True,
)
# make-span per method and seed: chosen so that no value is a round number
BASE_MS = {
    "amcoedge": 0.31371,
    "amcoedge+": 0.28113,
    "smcoedge": 0.34917,
    "drlcoedge": 0.36223,
    "randcoedge": 0.39761,
    "optimal": 0.27349,
}


def synthetic_results() -> dict[str, Any]:
    work, index = plan_work(PLAN, DEFAULT)
    rows = []
    for m, p, eps, seed in work:
        shift = 0.00731 * (seed - 4) + 0.0113 * (p.deadline - 0.35)
        ms = BASE_MS[m] + shift
        fail = {"smcoedge": 0.0437, "amcoedge": 0.0219, "amcoedge+": 0.0171}.get(m, 0.0913)
        rows.append(
            {
                "method": m,
                "params": p.as_dict(),
                "episodes": eps,
                "seed": seed,
                "avg_makespan": ms,
                "failure_rate": fail + 0.00113 * seed,
                "curve": [ms + 0.0217 * i / eps for i in range(eps)],
                "fail_curve": [0.0] * eps,
                "tasks": 4321,
                "wall_s": 17.3 + seed,
            }
        )
    return assemble(PLAN, DEFAULT, rows, index, 123.7, 3, 5)


ANALYSES = {
    "spread": {
        "command": "amcoedge sim analyse spread --seeds 21,22",
        "episodes": 41,
        "seeds": [21, 22],
        "summary": {
            "methods": {
                "amcoedge": {
                    "per_seed": [0.24173, 0.26619],
                    "ratio_optimal": [1.1377, 1.2291],
                    "ratio_smcoedge": [0.9713, 0.9837],
                }
            }
        },
    },
    "bound": {
        "command": "amcoedge sim analyse bound --seeds 21",
        "episodes": 3,
        "seeds": [21],
        "rows": [
            {
                "seed": 21,
                "common_subset": [0, 1, 2, 3, 4],
                "common_makespan": 0.24473,
                "subsets": [[1, 2], [3, 4]],
                "makespan": 0.21937,
                "optimal": 0.21419,
                "ratio_optimal": 1.02418,
            }
        ],
    },
}


def check_no_literals(text: str) -> None:
    bad = sorted(t for t in numbers_in(text) if literal_in_source(t))
    assert not bad, f"numbers written in policy/paper/report.py: {bad}"


def test_empty_results_report_has_no_figures_of_its_own() -> None:
    text = write_report({}, {}, [])
    assert "No runs" in text and "Not computed" in text
    check_no_literals(text)


def test_synthetic_results_appear_and_none_is_hard_coded() -> None:
    results = synthetic_results()
    text = write_report(results, ANALYSES, ["convergence.png"])
    check_no_literals(text)
    shift = 0.0113 * (1.0 - 0.35) + 0.00731 * 1.5  # defaults (deadline 1.0), mean of seeds 4, 7
    for m in BASE_MS:
        assert f"| {m} | {BASE_MS[m] + shift:.4f} ± " in text, m
    for token in ("0.2417", "0.2662", "0.2194", "0.2142", "1.024"):  # from the analyses
        assert token in text, token
    assert "seeds [4, 7]" in text and "37 episodes" in text and "13" in text
    assert "124 s" in text  # wall time 123.7 s
    # amcoedge+ against SMCoEdge at deadline 0.35 (seed mean): a per-point row of the table
    first = 1 - (0.28113 + 0.00731 * 1.5) / (0.34917 + 0.00731 * 1.5)
    assert f"| amcoedge+ | deadline | 0.35 | smcoedge | {first:.2%} |" in text
    claims = results["summary"]["claims"]
    assert set(claims) == {"amcoedge", "amcoedge+"}
    assert "holds" in text


def test_synthetic_claim_values_match_hand_computation() -> None:
    s = synthetic_results()["summary"]
    ms = s["claims"]["amcoedge"]["makespan"]
    # per point and seed: 1 - (0.31371 + x) / (0.34917 + x); smallest at the largest shift x
    shifts = [0.00731 * (sd - 4) + 0.0113 * (dl - 0.35) for sd in (4, 7) for dl in (0.35, 0.85)]
    per = [1 - (0.31371 + x) / (0.34917 + x) for x in shifts]
    assert min(ms["per_seed"]) == pytest.approx(min(per))
    fr = s["claims"]["amcoedge"]["failure"]
    assert fr["points"] == 2
    # failure: best baseline SMCoEdge; mean over seeds 4, 7
    base = 0.0437 + 0.00113 * 5.5
    ours = 0.0219 + 0.00113 * 5.5
    assert fr["value"] == pytest.approx(1 - ours / base)


def test_render_cites_analyses_folder(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(synthetic_results()))
    adir = tmp_path / "analyses"
    adir.mkdir()
    (adir / "bound.json").write_text(json.dumps(ANALYSES["bound"]))
    render(out, adir)
    text = (out / "report.md").read_text()
    assert "0.2194" in text and "amcoedge sim analyse bound --seeds 21" in text
    assert "Not computed: `amcoedge sim analyse spread" in text
    assert (out / "convergence.png").is_file() and (out / "sweep_deadline.png").is_file()
    check_no_literals(text)


def test_estimate_scales_measured_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from peer.cli import main
    from policy.paper.reproduce import estimate_full, full_plan

    plan = full_plan(3)
    rows = [
        {
            "method": m,
            "params": DEFAULT.as_dict(),
            "episodes": 10,
            "seed": 0,
            "wall_s": 2.0 if m != "optimal" else 4.0,
        }
        for m in plan.methods
    ]
    est = estimate_full(rows, plan, jobs=2)
    assert est is not None
    work, _ = plan_work(plan, DEFAULT)
    per_unit = {
        m: (4.0 if m == "optimal" else 2.0) / (10 * DEFAULT.tasks * DEFAULT.arrival_prob)
        for m in plan.methods
    }
    cpu = sum(per_unit[m] * e * p.tasks * p.arrival_prob for m, p, e, _ in work)
    assert est["cpu_s"] == pytest.approx(cpu) and est["wall_s"] == pytest.approx(cpu / 2)
    assert estimate_full(rows[1:], plan, jobs=2) is None  # a method without a measured run
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"runs": rows}))
    assert (
        main(["sim", "reproduce", "--out", str(tmp_path), "--jobs", "2", "--estimate-from", str(f)])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["estimate_full"]["cpu_s"] == pytest.approx(cpu)
    f.write_text(json.dumps({"runs": rows[1:]}))
    assert main(["sim", "reproduce", "--out", str(tmp_path), "--estimate-from", str(f)]) == 2
