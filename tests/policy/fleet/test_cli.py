from __future__ import annotations

import json
from pathlib import Path

import pytest

from peer.cli import main
from policy.fleet.bench import onnx_latency
from policy.fleet.evaluate import check_grid, evaluate_grid, markdown_table
from policy.fleet.sim import SimConfig


def test_eval_cli_writes_the_documented_json(tmp_path: Path, tiny_onnx: Path) -> None:
    out = tmp_path / "cell.json"
    rc = main(
        [
            "policy",
            "eval",
            "--peers",
            "5",
            "--load",
            "0.5",
            "--staleness",
            "0.5",
            "--seeds",
            "2",
            "--requests",
            "120",
            "--model",
            str(tiny_onnx),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {
        "learned",
        "greedy",
        "greedy-aware",
        "random",
        "equal",
        "local",
        "all",
    }
    for m in res["methods"].values():
        for key in (
            "avg_makespan",
            "p95_makespan",
            "failure_rate",
            "decision_us_p50",
            "decision_us_p99",
        ):
            assert m[key] >= 0
    assert res["provider"] == "CPUExecutionProvider"


def test_eval_cli_single_peer(tmp_path: Path, tiny_onnx: Path) -> None:
    out = tmp_path / "one.json"
    assert (
        main(
            [
                "policy",
                "eval",
                "--peers",
                "1",
                "--load",
                "0.5",
                "--staleness",
                "0",
                "--seeds",
                "1",
                "--requests",
                "60",
                "--model",
                str(tiny_onnx),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())["methods"]
    # one peer: every method runs everything locally, so they agree
    assert len({round(m["avg_makespan"], 12) for m in res.values()}) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "eval", "--peers", "0", "--load", "0.5", "--staleness", "0"],
        ["policy", "eval", "--peers", "65", "--load", "0.5", "--staleness", "0"],
        ["policy", "eval", "--peers", "4", "--load", "-1", "--staleness", "0"],
        ["policy", "eval", "--peers", "4", "--load", "0.5", "--staleness", "-2"],
        [
            "policy",
            "eval",
            "--peers",
            "4",
            "--load",
            "0.5",
            "--staleness",
            "0",
            "--methods",
            "oracle",
        ],
        ["policy", "eval", "--peers", "4", "--load", "0.5", "--staleness", "0", "--seeds", "0"],
    ],
)
def test_eval_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_grid_and_checks(tiny_onnx: Path) -> None:
    grid = evaluate_grid(
        peers=(3,),
        loads=(0.4,),
        staleness=(0.0, 0.5),
        seeds=(0,),
        methods=("learned", "greedy", "greedy-aware", "random"),
        base=SimConfig(n_requests=80),
        model_path=tiny_onnx,
        progress=False,
    )
    assert len(grid["cells"]) == 2
    checks = grid["checks"]
    assert set(checks) >= {"max_ratio_vs_best_greedy", "max_ratio_vs_random", "pass"}
    assert checks == check_grid(grid["cells"])
    table = markdown_table(grid)
    assert table.count("\n") == 4


def test_onnx_latency_reports_sizes_and_provider(tiny_onnx: Path) -> None:
    res = onnx_latency(sizes=(4, 32), repeats=30, warmup=5, model_path=tiny_onnx)
    assert res["provider"] == "CPUExecutionProvider"
    assert set(res["sizes"]) == {"4", "32"}
    for v in res["sizes"].values():
        assert 0 < v["onnx_us_p50"] <= v["onnx_us_p99"]
