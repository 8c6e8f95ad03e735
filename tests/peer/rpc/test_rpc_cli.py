"""``amcoedge bench rpc``: argument handling and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from peer.rpc import cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    cli.register({"bench": sub})
    return p


def test_sizes_parse() -> None:
    args = parser().parse_args(["rpc", "--sizes", "100,64KiB,1MiB,2k"])
    assert args.sizes == (100, 64 * 1024, 1024 * 1024, 2048)
    with pytest.raises(SystemExit):
        parser().parse_args(["rpc", "--sizes", "lots"])
    with pytest.raises(SystemExit):
        parser().parse_args(["rpc", "--n", "0"])


@pytest.mark.slow
def test_tiny_bench_run_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rpc.json"
    args = parser().parse_args(
        [
            "rpc",
            "--json",
            str(out),
            "--sizes",
            "100,1MiB",
            "--n",
            "30",
            "--n-large",
            "5",
            "--warmup",
            "3",
            "--no-progress",
            "--loop",
            "asyncio",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert [r["payload_bytes"] for r in report["sizes"]] == [100, 1024 * 1024]
    for row in report["sizes"]:
        assert row["rpc_us"]["median"] > 0 and row["raw_us"]["median"] > 0
    assert {"small_ratio_ok", "mb_per_s_ok"} <= report["targets"].keys()
    assert report["rpc_auth"] == "none (no secret)" and report["mac_us_per_mib"] is None


@pytest.mark.slow
def test_tiny_sealed_bench_run(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(
        [
            "rpc",
            "--secret",
            "--sizes",
            "100,70KiB",
            "--n",
            "20",
            "--warmup",
            "2",
            "--no-progress",
            "--loop",
            "asyncio",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rpc_auth"].startswith("secret")
    assert report["mac_us_per_mib"] > 0
    assert [r["payload_bytes"] for r in report["sizes"]] == [100, 70 * 1024]


def test_flood_bench_against_a_local_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"flood-key\n")
    args = parser().parse_args(
        [
            "rpc-flood",
            "--connections",
            "80",
            "--idle-timeout",
            "0.3",
            "--wait",
            "3",
            "--secret-file",
            str(key),
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["probe_ok"] and report["still_open"] == 0
    assert report["peak_held"] <= 64 and report["answered"] >= 64
    # with a key the held connections never authenticate: the handshake timeout (10 s) is
    # longer than the idle one here, so they are closed as idle
    assert report["close_codes"] == {"idle_timeout": report["answered"]}
    assert report["server"]["stats"]["source_cap_rejections"] == report["refused"]
    with pytest.raises(SystemExit):
        parser().parse_args(["rpc-flood", "--target", "nohost"])
