"""The denoiser engines: choice, the ONNX export and its cache, and what the onnx engine promises."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from peer.cli import main
from peer.diffusion import (
    Backend,
    ChainStateError,
    InvalidRequestError,
    ModelLoadError,
    load_backend,
)
from peer.diffusion.onnx_engine import CACHE_ENV, cache_dirs, export_key
from peer.diffusion.unet import resolve_model_dir, weights_digest


@pytest.mark.parametrize("bad", ["gpu", "ONNX", "", None, 1])
def test_bad_engine_is_a_clear_error(tiny_dir: Path, bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="engine must be one of auto, torch, onnx"):
        load_backend(tiny_dir, device="cpu", engine=bad)  # type: ignore[arg-type]


def test_torch_is_the_default_engine(tiny: Backend) -> None:
    info = tiny.engine_info()
    assert (tiny.engine, tiny.provider) == ("torch", "torch-cpu")
    assert info["engine"] == "torch" and info["onnx_model"] is None
    assert "+" not in tiny.model_id
    assert tiny.batch_quantum == 2  # eager forwards are padded to an even batch


def test_onnx_engine_matches_torch_to_the_last_bits(tiny: Backend, tiny_onnx: Backend) -> None:
    assert (tiny_onnx.engine, tiny_onnx.provider) == ("onnx", "CPUExecutionProvider")
    assert tiny_onnx.model_id == tiny.model_id + "+onnx-cpu"
    assert tiny_onnx.batch_quantum == 1  # no padding: batch invariance holds without it
    info = tiny_onnx.engine_info()
    assert 0.0 < info["onnx_probe_max_abs_diff"] < 1e-4
    x = torch.randn((5, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a = tiny._eps(x, 250, [1, 2, None, 4, 5])
        b = tiny_onnx._eps(x, 250, [1, 2, None, 4, 5])
    assert a.shape == b.shape == (5, 1, 16, 16)
    assert 0.0 < float((a - b).abs().max()) < 1e-4


def test_io_binding_gives_the_same_bits(tiny_onnx: Backend) -> None:
    from peer.diffusion.onnx_engine import OnnxDenoiser

    den = tiny_onnx._denoiser
    assert isinstance(den, OnnxDenoiser) and den.io_binding is False  # CPU default
    bound = OnnxDenoiser(den._session, torch.device("cpu"), 1, True, io_binding=True)
    x = torch.randn((3, 1, 16, 16), generator=torch.Generator().manual_seed(8))
    cls = torch.tensor([1, 2, 3])
    assert torch.equal(bound(x, 77, cls), den(x, 77, cls))
    assert not torch.equal(bound(x, 77, cls), den(x, 78, cls))


@pytest.mark.parametrize("side", [32, 48])
def test_onnx_export_has_dynamic_height_and_width(
    tiny: Backend, tiny_onnx: Backend, side: int
) -> None:
    x = torch.randn((3, 1, side, side), generator=torch.Generator().manual_seed(side))
    with torch.inference_mode():
        a, b = tiny._eps(x, 40, [3] * 3), tiny_onnx._eps(x, 40, [3] * 3)
        alone = torch.cat([tiny_onnx._eps(x[i : i + 1], 40, [3]) for i in range(3)])
    assert float((a - b).abs().max()) < 1e-4
    assert torch.equal(alone, b)


def test_engines_do_not_mix_in_a_chain(tiny: Backend, tiny_onnx: Backend) -> None:
    st = tiny.run_steps(tiny.start_chain(3, 1, 6, "ddpm"), 3)
    with pytest.raises(ChainStateError, match="model"):
        tiny_onnx.run_steps(st, 6)
    st2 = tiny_onnx.run_steps(tiny_onnx.start_chain(3, 1, 6, "ddpm"), 3)
    with pytest.raises(ChainStateError, match="model"):
        tiny.run_steps(st2, 6)


def test_onnx_chain_relays_across_thread_counts(tiny_dir: Path, tiny_onnx: Backend) -> None:
    """Measured: the CPU provider's bits do not depend on the thread count (checked at load)."""
    two = load_backend(tiny_dir, device="cpu", threads=2, engine="onnx")
    assert two.engine_info()["onnx_thread_invariant"] is True
    assert two.model_id == tiny_onnx.model_id
    st = tiny_onnx.run_steps(tiny_onnx.start_chain(7, 5, 8, "ddpm"), 4)
    done = two.run_steps(st, 8)
    assert done.latent == tiny_onnx.run_steps(st, 8).latent


def test_export_is_cached_by_weights_hash(
    make_tiny_model: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    model = make_tiny_model(tmp_path / "m", seed=1)
    first = load_backend(model, device="cpu", engine="onnx").engine_info()
    assert first["onnx_export"] == "exported"
    assert Path(first["onnx_model"]).parent == cache / "onnx"
    again = load_backend(model, device="cpu", engine="onnx").engine_info()
    assert (again["onnx_export"], again["onnx_model"]) == ("cached", first["onnx_model"])
    sidecar = json.loads(Path(first["onnx_model"]).with_suffix(".json").read_text())
    files = resolve_model_dir(model)
    assert sidecar["key"] == export_key(files, weights_digest(files.weights))
    # new weights in the same directory: a new key, a new export, the new weights' outputs
    make_tiny_model(model, seed=2)
    new = load_backend(model, device="cpu", engine="onnx")
    info = new.engine_info()
    assert info["onnx_export"] == "exported" and info["onnx_model"] != first["onnx_model"]
    ref = load_backend(model, device="cpu", engine="torch")
    x = torch.randn((2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert float((new._eps(x, 9, [1, 2]) - ref._eps(x, 9, [1, 2])).abs().max()) < 1e-4


@pytest.mark.parametrize("damage", ["truncate", "garbage", "sidecar"])
def test_corrupt_cache_is_rebuilt(
    tiny_dir: Path, tiny_onnx: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(Path(tiny_onnx.engine_info()["onnx_model"]).parent, cache / "onnx")
    monkeypatch.setenv(CACHE_ENV, str(cache))
    path = cache / "onnx" / Path(tiny_onnx.engine_info()["onnx_model"]).name
    assert load_backend(tiny_dir, device="cpu", engine="onnx").engine_info()["onnx_export"] == (
        "cached"
    )
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"\x00not an onnx model" * 100)
    else:
        path.with_suffix(".json").write_text("{not json")
    be = load_backend(tiny_dir, device="cpu", engine="onnx")
    assert be.engine_info()["onnx_export"] == "rebuilt"
    assert np.array_equal(be.generate([2], [4], 4), tiny_onnx.generate([2], [4], 4))


def test_cached_file_with_wrong_weights_is_rebuilt(
    tiny_dir: Path,
    tiny_onnx: Backend,
    make_tiny_model: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file that loads but computes another model (sidecar rewritten to match) fails the probe."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    other = make_tiny_model(tmp_path / "other", seed=5)
    wrong = Path(load_backend(other, device="cpu", engine="onnx").engine_info()["onnx_model"])
    good = Path(tiny_onnx.engine_info()["onnx_model"])
    target = cache / "onnx" / good.name
    shutil.copy(wrong, target)
    meta = json.loads(good.with_suffix(".json").read_text())
    meta["sha256"] = json.loads(wrong.with_suffix(".json").read_text())["sha256"]
    target.with_suffix(".json").write_text(json.dumps(meta))
    be = load_backend(tiny_dir, device="cpu", engine="onnx")
    assert be.engine_info()["onnx_export"] == "rebuilt"


def test_unwritable_cache_is_a_clear_error_and_auto_falls_back(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    with pytest.raises(ModelLoadError, match="no writable cache directory"):
        load_backend(tiny_dir, device="cpu", engine="onnx")
    be = load_backend(tiny_dir, device="cpu", engine="auto")
    info = be.engine_info()
    assert be.engine == "torch" and info["requested"] == "auto"
    assert "no writable cache directory" in info["onnx_error"]


def test_cache_location(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    user = tmp_path / "xdg" / "amcoedge" / "onnx"
    assert cache_dirs(resolve_model_dir(tiny_dir)) == [tiny_dir / "onnx", user]
    assert cache_dirs(resolve_model_dir(None)) == [user]  # package data is not written to
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dirs(resolve_model_dir(tiny_dir)) == [tmp_path / "c" / "onnx"]


def test_auto_keeps_the_engine_its_timings_favour(tiny_dir: Path) -> None:
    be = load_backend(tiny_dir, device="cpu", engine="auto")
    ms = be.engine_info()["ms_per_step"]
    assert set(ms) == {"torch", "onnx"}
    assert all(set(v) == {"1", "8"} and min(v.values()) > 0 for v in ms.values())
    faster = "onnx" if sum(ms["onnx"].values()) < sum(ms["torch"].values()) else "torch"
    assert be.engine == faster
    assert be.model_id.endswith("+onnx-cpu") == (faster == "onnx")


def test_calibration_follows_the_engine(tiny_onnx: Backend) -> None:
    before = tiny_onnx.engine_info()["ms_per_step"].get("onnx", {})
    cm = tiny_onnx.calibrate(batch_sizes=(1, 3), repeats=2, warmup=1)
    ms = tiny_onnx.engine_info()["ms_per_step"]
    assert set(ms["onnx"]) >= {"1", "3"} and ms["onnx"] != before
    assert "torch" not in ms
    assert cm.a_s >= 0.0 and cm.c_s > 0.0


def test_model_export_command(
    tiny_dir: Path, tiny_onnx: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "export", "--model", str(tiny_dir), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["onnx_export"] == "cached" and out["model_id"] == tiny_onnx.model_id
    assert main(["model", "export", "--model", str(tiny_dir), "--device", "cpu", "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["onnx_export"] == "rebuilt"
    assert main(["model", "export", "--model", str(tiny_dir / "absent")]) == 2


def test_model_check_reports_bit_identity_per_engine(
    tiny_dir: Path, tiny_onnx: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "check.json"
    argv = ["model", "check", "--model", str(tiny_dir), "--device", "cpu", "--steps", "4"]
    argv += ["--canvas", "32", "--mask", "centre", "--engine", "onnx", "--json", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["summary"]["engine"] == "onnx"
    assert res["summary"]["batch_bit_identical"] is True
    assert res["summary"]["steps_bit_identical"] is True
    assert res["engine"]["model_id"].endswith("+onnx-cpu")
    assert main([*argv[:-4], "--engine", "tensorrt"]) == 2


def test_bench_denoiser_prints_both_engines(
    tiny_dir: Path, tiny_onnx: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "denoiser", "--model", str(tiny_dir), "--batches", "1,3"]
    argv += ["--repeats", "2", "--warmup", "1", "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in res["rows"]] == [1, 3]
    for r in res["rows"]:
        assert r["torch_ms_per_step"] > 0 and r["onnx_ms_per_step"] > 0
        assert r["speedup"] == pytest.approx(r["torch_ms_per_step"] / r["onnx_ms_per_step"], 1e-2)
    assert res["providers"] == {"torch": "torch-cpu", "onnx": "CPUExecutionProvider"}
    path = tmp_path / "b.json"
    assert main([*argv, str(path)]) == 0
    assert json.loads(path.read_text())["threads"] == 1
    for bad in ("0,1", "1,1", "x", ""):
        assert main(["bench", "denoiser", "--model", str(tiny_dir), "--batches", bad]) == 2
