"""CLI contract smoke tests and ONNX export parity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from peer.cli import main
from policy.export import ExportError, export_checkpoint, load_checkpoint
from policy.paper.config import DEFAULT
from policy.paper.reproduce import Plan, render, reproduce

torch.set_num_threads(1)


def test_sim_run_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main(
        [
            "sim",
            "run",
            "--method",
            "optimal",
            "--episodes",
            "2",
            "--seed",
            "1",
            "--tasks",
            "8",
            "--deadline",
            "0.5",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    for key in (
        "method",
        "episodes",
        "seed",
        "params",
        "avg_makespan",
        "failure_rate",
        "per_episode",
        "wall_s",
        "decisions_per_s",
    ):
        assert key in data
    assert data["method"] == "optimal" and data["episodes"] == 2 and data["seed"] == 1
    assert data["params"]["tasks"] == 8 and data["params"]["deadline"] == 0.5
    assert len(data["per_episode"]) == 2
    assert set(data["per_episode"][0]) == {"makespan", "failure_rate"}
    assert data["avg_makespan"] == pytest.approx(
        np.mean([e["makespan"] for e in data["per_episode"]])
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["avg_makespan"] == data["avg_makespan"]


def test_sim_run_flags(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    assert (
        main(
            [
                "sim",
                "run",
                "--method",
                "randcoedge",
                "--episodes",
                "1",
                "--tasks",
                "5",
                "--fmax",
                "30",
                "--arrival-prob",
                "0.5",
                "--clean",
                "--json",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    p = json.loads(out.read_text())["params"]
    assert p["capacities"] == [10.0, 15.0, 20.0, 25.0, 30.0]
    assert p["arrival_prob"] == 0.5 and p["clean"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "bogus"],
        ["--method", "local", "--episodes", "0"],
        ["--method", "local", "--arrival-prob", "1.5"],
        ["--method", "local", "--deadline", "-1"],
        ["--method", "local", "--fmax", "nan"],
        ["--method", "local", "--seed", "x"],
    ],
)
def test_sim_run_rejects_bad_input(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sim", "run", *argv])
    assert exc.value.code == 2


def test_sim_run_rejects_fmax_below_10(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "run", "--method", "local", "--fmax", "5", "--quiet"]) == 2
    assert "error" in capsys.readouterr().err


def test_bench_sim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sim", "--episodes", "1", "--methods", "local", "optimal"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["methods"]) == {"local", "optimal"}
    assert data["methods"]["optimal"]["decisions_per_s"] > 0


def test_export_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    ck = tmp_path / "ck.pt"
    assert (
        main(
            [
                "sim",
                "run",
                "--method",
                "amcoedge",
                "--episodes",
                "5",
                "--tasks",
                "6",
                "--save-checkpoint",
                str(ck),
                "--quiet",
            ]
        )
        == 0
    )
    onnx_path = tmp_path / "m.onnx"
    assert main(["policy", "export", "--checkpoint", str(ck), "--out", str(onnx_path)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["opset"] >= 17 and info["exporter"] in ("dynamo", "legacy")
    assert not Path(str(onnx_path) + ".data").exists()
    from policy.export import build_exportable

    ex = build_exportable(load_checkpoint(ck))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 64):
        x = np.random.default_rng(batch).uniform(0, 5, (batch, 6)).astype(np.float32)
        got = sess.run(None, {"state": x})[0]
        with torch.no_grad():
            ref = ex.module(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 5, 31)
        assert float(np.max(np.abs(got - ref))) <= 1e-5


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ExportError):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert (
        main(["policy", "export", "--checkpoint", str(bad), "--out", str(tmp_path / "o.onnx")]) == 2
    )
    other = tmp_path / "other.pt"
    torch.save({"kind": "unknown"}, other)
    with pytest.raises(ExportError, match="unknown checkpoint kind"):
        export_checkpoint(other, tmp_path / "o.onnx")
    nokind = tmp_path / "nokind.pt"
    torch.save({"weights": 1}, nokind)
    with pytest.raises(ExportError, match="no 'kind'"):
        export_checkpoint(nokind, tmp_path / "o.onnx")


def test_reproduce_smoke(tmp_path: Path) -> None:
    plan = Plan(
        sweeps={"deadline": (0.3,), "fmax": (30.0,)},
        methods=("amcoedge", "smcoedge", "randcoedge", "optimal"),
        learned_episodes=2,
        other_episodes=1,
        seeds=(0,),
        quick=True,
    )
    res = reproduce(tmp_path, plan, jobs=1, base=DEFAULT.with_(tasks=5))
    for name in (
        "results.json",
        "report.md",
        "convergence.png",
        "sweep_deadline.png",
        "sweep_fmax.png",
    ):
        assert (tmp_path / name).is_file()
    summary = res["summary"]
    assert isinstance(summary, dict)
    assert [g["value"] for g in summary["gains"]] == [0.3, 30.0]
    assert set(summary["claims"]) == {"amcoedge"}
    report = (tmp_path / "report.md").read_text()
    assert "11.04%" in report and "44.86%" in report and "Quick mode" in report
    # 3 distinct points x 4 methods x 1 seed, one result file per run
    assert len(res["runs"]) == 12  # type: ignore[arg-type]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 12
    assert res["resumed"] == 0
    (tmp_path / "report.md").unlink()
    (tmp_path / "convergence.png").unlink()
    render(tmp_path)
    assert (tmp_path / "report.md").read_text() == report
    assert (tmp_path / "convergence.png").is_file()


def test_reproduce_resumes_finished_runs(tmp_path: Path) -> None:
    plan = Plan(
        sweeps={"deadline": (0.3,)},
        methods=("randcoedge", "optimal"),
        learned_episodes=1,
        other_episodes=1,
        seeds=(0, 1),
        quick=True,
    )
    base = DEFAULT.with_(tasks=4)
    first = reproduce(tmp_path, plan, jobs=1, base=base)
    files = sorted((tmp_path / "runs").glob("*.json"))
    assert len(files) == 8
    # an interruption: two runs lost, one cut off mid-write
    files[0].unlink()
    files[1].unlink()
    files[2].write_text("{trunc")
    second = reproduce(tmp_path, plan, jobs=1, base=base)
    assert second["resumed"] == 5

    def keys(res: dict[str, Any]) -> list[tuple[str, int, float]]:
        return sorted((r["method"], r["seed"], r["params"]["deadline"]) for r in res["runs"])

    assert keys(second) == keys(first)
    third = reproduce(tmp_path, plan, jobs=1, base=base)
    assert third["resumed"] == 8
    assert third["summary"] == second["summary"]


def test_shipped_model_matches_its_checkpoint() -> None:
    import onnxruntime as ort

    from policy.export import build_exportable

    models = Path(__file__).resolve().parents[3] / "policy" / "models"
    ck = load_checkpoint(models / "adadqn.pt")
    assert ck["kind"] == "adadqn" and ck["episodes"] == 500
    ex = build_exportable(ck)
    sess = ort.InferenceSession(str(models / "adadqn.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 5, (32, 6)).astype(np.float32)
    with torch.no_grad():
        ref = ex.module(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(sess.run(None, {"state": x})[0] - ref))) <= 1e-5


def test_sim_run_reports_unwritable_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = str(blocker / "sub" / "r.json")  # parent is a file
    assert (
        main(
            [
                "sim",
                "run",
                "--method",
                "local",
                "--episodes",
                "1",
                "--tasks",
                "3",
                "--json",
                bad,
                "--quiet",
            ]
        )
        == 2
    )
    assert "cannot write" in capsys.readouterr().err
    assert (
        main(
            [
                "sim",
                "run",
                "--method",
                "local",
                "--episodes",
                "1",
                "--save-checkpoint",
                str(tmp_path / "c.pt"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "only for --method amcoedge" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_reproduce_sigterm_stops_its_workers(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "peer.cli", "sim", "reproduce", "--quick"),
            *("--jobs", "2", "--out", str(tmp_path / "out")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [k for k in _children(proc.pid) if "spawn_main" in _cmdline(k)]
        assert len(workers) >= 2, "workers never started"
        proc.terminate()
        proc.wait(timeout=30)
        stop = time.monotonic() + 15
        while time.monotonic() < stop and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
