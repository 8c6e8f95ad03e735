"""The `amcoedge model ...` commands, run in-process on the small random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peer.cli import main


def test_model_info(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "info.json"
    assert (
        main(["model", "info", "--model", str(tiny_dir), "--device", "cpu", "--json", str(out)])
        == 0
    )
    info = json.loads(out.read_text())
    assert info["backend"]["sample_size"] == 16
    assert info["backend"]["num_classes"] == 10
    assert info["card"] is None
    assert '"model_id"' in capsys.readouterr().out


def test_model_score_writes_json_and_grid(tiny_dir: Path, tmp_path: Path) -> None:
    out, grid = tmp_path / "score.json", tmp_path / "grid.png"
    argv = ["model", "score", "--model", str(tiny_dir), "--device", "cpu", "--n", "10"]
    argv += ["--steps", "2", "--batch", "4", "--json", str(out), "--grid", str(grid)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 10 and 0.0 <= res["agreement"] <= 1.0
    assert set(res["per_class"]) == {str(c) for c in range(10)}
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_model_commands_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "info", "--model", str(tmp_path / "absent")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["model", "train-digits", "--out", str(tmp_path / "m"), "--steps", "0"]) == 2


def test_train_digits_runs_a_few_steps(tmp_path: Path) -> None:
    from peer.diffusion import load_backend
    from peer.diffusion.card import read_card

    out = tmp_path / "m"
    argv = ["model", "train-digits", "--out", str(out), "--steps", "2", "--batch-size", "8"]
    assert main(argv) == 0
    card = read_card(out)
    assert card is not None and card["training"]["steps_done"] == 2
    assert (out / "model_card.md").is_file()
    be = load_backend(out, device="cpu")
    assert be.model_id.startswith("m@")
    assert be.generate([1], [1], 2).shape == (1, 16, 16)


def test_training_is_reproducible_for_a_fixed_step_count(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["model", "train-digits", "--out", str(out), "--steps", "3", "--batch-size", "8"]
        assert main([*argv, "--seed", "4"]) == 0
        runs.append((out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    assert runs[0] == runs[1]
