from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policy.ort import OrtError, OrtModel, ort_version


@pytest.fixture()
def linear_onnx(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "lin.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 3),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b"}},
            dynamo=False,
        )
    return path


def test_runs_and_reports_the_provider_in_use(linear_onnx: Path) -> None:
    m = OrtModel(linear_onnx)
    assert m.provider == "CPUExecutionProvider"
    assert m.providers[0] == m.provider
    assert m.input_names == ["x"] and m.output_names == ["y"]
    (y,) = m.run({"x": np.ones((4, 3), dtype=np.float32)})
    assert y.shape == (4, 2)
    assert ort_version() != "missing"


def test_missing_and_broken_models(tmp_path: Path) -> None:
    with pytest.raises(OrtError):
        OrtModel(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(OrtError):
        OrtModel(bad)


def test_bad_feed_raises(linear_onnx: Path) -> None:
    m = OrtModel(linear_onnx)
    with pytest.raises(OrtError):
        m.run({"x": np.ones((4, 5), dtype=np.float32)})
    with pytest.raises(OrtError):
        m.run({"nope": np.ones((4, 3), dtype=np.float32)})
