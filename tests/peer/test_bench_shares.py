"""``amcoedge bench shares``: the pure parts (PSNR for JSON, speedup, tile bytes, reports, the
command line), and a slow smoke run on real peer processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgpack
import numpy as np
import pytest

from peer.cli import build_parser, main
from peer.core.shares import TilesShare, encode_reply, encode_share
from peer.harness import bench_shares as bs


def test_psnr_json_marks_identical_images_inf() -> None:
    assert bs.psnr_json(float("inf")) == "inf"
    assert bs.psnr_json(35.12345) == 35.123
    json.dumps({"v": bs.psnr_json(float("inf"))})  # valid JSON, no Infinity


def test_speedup_is_median_over_median() -> None:
    assert bs.speedup([4.0, 100.0, 6.0], [2.0, 3.0, 1.0]) == pytest.approx(6.0 / 2.0)
    with pytest.raises(bs.BenchError):
        bs.speedup([], [1.0])
    with pytest.raises(bs.BenchError):
        bs.speedup([1.0], [0.0])


def test_diff_image_scales_and_clips() -> None:
    a = np.array([[0, 10, 200]], dtype=np.uint8)
    b = np.array([[0, 20, 0]], dtype=np.uint8)
    assert bs.diff_image(a, b).tolist() == [[0, 40, 255]]
    with pytest.raises(bs.BenchError):
        bs.diff_image(a, b[:, :2])


def test_canvas_and_masks() -> None:
    canvas = bs.canvas_of_digits()
    assert canvas.shape == (128, 128) and canvas.dtype == np.uint8
    assert np.array_equal(canvas, bs.canvas_of_digits())  # deterministic
    m = bs.masks()
    assert m["hole25"].mean() == pytest.approx(0.25)
    assert 0 < m["scratch"].mean() < 0.25
    with pytest.raises(bs.BenchError):
        bs.canvas_of_digits(120)


def test_tile_share_bytes_counts_remote_shares_only() -> None:
    canvas = bs.canvas_of_digits()
    mask = bs.masks()["hole25"]
    tiles = bs.repaired_tiles(mask)
    assert len(tiles) > 4
    half = len(tiles) // 2
    plan = {
        "shares": [
            {"peer": "p0", "units": list(range(half))},
            {"peer": "p1", "units": list(range(half, len(tiles)))},
        ]
    }
    got = bs.tile_share_bytes(canvas, mask, plan, "p0", steps=4, seed=7, label=3)
    work = TilesShare(canvas, mask, tuple(tiles[half:]), 4, 7, 3)
    out = [np.zeros((t.height, t.width), dtype=np.uint8) for t in tiles[half:]]
    want = len(msgpack.packb(encode_share(work))) + len(msgpack.packb(encode_reply(work, out)))
    assert got == want
    assert got > canvas.size  # the whole canvas travels with a tile share
    assert bs.tile_share_bytes(canvas, mask, plan, "p1", 4, 7, 3) != got  # origin's share free
    with pytest.raises(bs.BenchError):
        bs.tile_share_bytes(
            canvas, mask, {"shares": [{"peer": "p1", "units": [10**6]}]}, "p0", 4, 7
        )


def test_reports_carry_the_measured_figures() -> None:
    a = np.full((16, 16), 100, dtype=np.uint8)
    b = a.copy()
    b[0, 0] = 110
    par = {"iterations": 2, "exact": False, "change_db": 40.0, "segments": 4}
    r = bs.steps_report(["p0", "p1", "p2", "p3"], [4.0, 4.0], [2.0, 2.5], a, b, par, 50)
    assert r["peers"] == 4 and r["iterations"] == 2 and r["bit_identical"] is False
    assert r["speedup"] == pytest.approx(4.0 / 2.25, abs=1e-3)
    assert isinstance(r["psnr_db_vs_serial"], float)
    assert r["psnr_db_vs_serial"] == pytest.approx(10 * math.log10(255**2 / (100 / 256)), abs=1e-3)
    same = bs.steps_report(["p0"], [1.0], [1.0], a, a, par, 50)
    assert same["psnr_db_vs_serial"] == "inf" and same["bit_identical"] is True
    t = bs.tile_report(["p0", "p1"], [8.0], [2.0], {"scratch": 31.0, "hole25": 28.0}, 4000, 4)
    assert t["bytes_per_step"] == 1000.0 and t["speedup"] == 4.0
    assert t["psnr_db_vs_untiled"] == {"scratch": 31.0, "hole25": 28.0}
    assert "blends at the end" in t["note"]
    json.dumps([r, same, t])


def test_auto_check_flags_slow_parallel_picks_only() -> None:
    got = bs.auto_check(["parallel", "local", "parallel"], [0.5, 1.3, 1.05], [1.0, 1.0, 1.2])
    assert [r["mode"] for r in got["per_repeat"]] == ["parallel", "local", "parallel"]
    assert got["per_repeat"][0]["over_local"] == 0.5
    assert got["per_repeat"][2]["over_local"] == 0.875
    assert got["per_repeat"][2]["over_local_median"] == 1.05
    assert got["parallel_picks"] == 2 and got["within_10pct_of_local"] is True
    slow = bs.auto_check(["parallel"], [1.2], [1.0])
    assert slow["within_10pct_of_local"] is False
    assert slow["worst_parallel_over_local_median"] == 1.2
    never = bs.auto_check(["local", "local"], [2.0, 2.0], [1.0, 1.0])  # local picks are local
    assert never["within_10pct_of_local"] is True and never["parallel_picks"] == 0
    with pytest.raises(bs.BenchError):
        bs.auto_check(["local"], [1.0], [])
    json.dumps(got)


def test_settings_checked() -> None:
    bs.Settings().check()
    for bad in (
        bs.Settings(peers=1),
        bs.Settings(steps=1),
        bs.Settings(repeats=0),
        bs.Settings(quota=0.0),
        bs.Settings(label=10),
        bs.Settings(repair_label=-1),
    ):
        with pytest.raises(bs.BenchError):
            bad.check()


def test_command_registered_and_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["bench", "shares", "--steps", "10"])
    assert args.steps == 10 and args.func is bs._cmd
    assert main(["bench", "shares", "--peers", "1"]) == 2
    assert "--peers" in capsys.readouterr().err
    assert main(["bench", "shares", "--repair-label", "x"]) == 2
    assert "--repair-label" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_on_real_peers(tmp_path: Path) -> None:
    # 2 fused steps: the fused bench and its HTTP auto check run 128x128 repairs on 0.5 core
    s = bs.Settings(peers=2, steps=6, tile_steps=1, repeats=1, fused_steps=2, out=tmp_path)
    report = bs.run(s)
    sp, tile = report["steps_parallel"], report["tile"]
    assert sp["peers"] >= 1 and sp["speedup"] > 0 and sp["iterations"] >= 1
    auto = sp["auto"]
    assert len(auto["per_repeat"]) == 1 and isinstance(auto["within_10pct_of_local"], bool)
    assert sp["tracker_warmup"]["requests"] == bs.TRACKER_WARMUP
    assert sp["plan"]["costs"] == "measured"  # the measured runs plan from measured costs
    assert set(tile["psnr_db_vs_untiled"]) == {"scratch", "hole25"}
    assert tile["bytes_per_step"] >= 0
    picks = tile["auto"]  # POST /v1/repair, mode auto vs local, both masks
    assert set(picks["masks"]) == {"scratch", "hole25"}
    assert set(picks["picked"]) <= {"local", "tile", "fused"}
    assert len(picks["wall_vs_local"]) == len(picks["picked"])
    for path in report["pngs"].values():
        assert Path(path).stat().st_size > 0
