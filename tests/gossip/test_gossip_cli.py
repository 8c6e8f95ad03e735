"""`amcoedge bench gossip` prints the figures as JSON and rejects bad arguments."""

from __future__ import annotations

import json

from peer.cli import main


def test_bench_gossip_small_simulated(tmp_path, capsys):
    out = tmp_path / "g.json"
    rc = main(
        [
            "bench",
            "gossip",
            "--peers",
            "20",
            "--loss",
            "0.05",
            "--seed",
            "3",
            "--steady-s",
            "20",
            "--crashes",
            "2",
            "--meta-changes",
            "3",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved
    assert saved["mode"] == "simulated" and saved["peers"] == 20
    assert saved["join_convergence_s"] is not None
    assert saved["dissemination_s"]["missed"] == 0 and saved["dissemination_s"]["p99"] > 0
    assert saved["crash"]["missed"] == 0 and len(saved["crash"]["all_dead_s"]) == 2
    assert saved["steady"]["false_positives"] == 0
    assert saved["steady"]["bytes_per_peer_per_s"] > 0


def test_bench_gossip_rejects_bad_arguments(capsys):
    assert main(["bench", "gossip", "--peers", "1"]) == 2
    assert main(["bench", "gossip", "--loss", "1.5"]) == 2
    assert main(["bench", "gossip", "--real", "--loss", "0.1", "--peers", "3"]) == 2
    assert "error:" in capsys.readouterr().err
