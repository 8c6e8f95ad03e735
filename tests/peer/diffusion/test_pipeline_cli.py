"""`amcoedge model make-tiny-sd`, `model check-pipeline` and `bench pipeline` on a tiny pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peer.cli import main


def test_make_check_and_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipe = tmp_path / "inpaint"
    assert main(["model", "make-tiny-sd", str(pipe), "--inpaint"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made == {"dir": str(pipe), "inpaint": True, "size": 32, "sd15_shape": False}
    assert json.loads((pipe / "model_index.json").read_text())["_class_name"] == (
        "StableDiffusionInpaintPipeline"
    )

    out = tmp_path / "check.json"
    assert (
        main(["model", "check-pipeline", "--model", str(pipe), "--steps", "2", "--json", str(out)])
        == 0
    )
    check = json.loads(out.read_text())
    assert check["batch_identical"] is True and check["steps_identical"] is True
    assert check["inpaint"]["tiles_identical"] is True and check["kind"] == "inpaint"
    capsys.readouterr()

    assert main(["bench", "pipeline", "--model", str(pipe)]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["size"] == "32x32" and bench["latent"] == "8x8"
    assert set(bench["step_guided_s"]) == {"1", "2"}
    assert bench["affine_fit"]["c_s"] > 0 and bench["vae_decode_s"] > 0
    assert (
        bench["text_encode_s"] > 0 and bench["peak_rss_mb"] >= bench["peak_rss_mb_after_load"] > 0
    )


def test_bad_dirs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "check-pipeline", "--model", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["model", "make-tiny-sd", str(tmp_path / "full")]) == 2
