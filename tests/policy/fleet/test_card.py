"""The model card: figures from its inputs only, hand-written notes kept across regeneration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from policy.fleet import card as card_mod
from policy.fleet.card import TARGET_VS_BEST_GREEDY, TARGET_VS_RANDOM, notes_path, write_card

SOURCE = Path(card_mod.__file__).read_text()
CITED = {str(TARGET_VS_BEST_GREEDY), str(TARGET_VS_RANDOM)}  # targets, cited in the card


def _cell(peers: int, load: float, stale: float, learned: float) -> dict[str, Any]:
    def m(ms: float, fail: float) -> dict[str, float]:
        return {"avg_makespan": ms, "failure_rate": fail}

    return {
        "peers": peers,
        "load": load,
        "staleness_s": stale,
        "seeds": [0, 1, 2, 3],
        "requests_per_run": 1234,
        "methods": {
            "learned": m(learned, 0.0137),
            "greedy": m(0.6173, 0.0291),
            "greedy-aware": m(0.5911, 0.0251),
            "random": m(0.7339, 0.0443),
        },
    }


GRID = {
    "cells": [_cell(7, 0.37, 0.0, 0.5519), _cell(13, 0.73, 1.5, 0.6977)],
    "checks": {"max_ratio_vs_best_greedy": 1.1804},
}
META = {
    "command": "amcoedge policy train --out /tmp/x --minutes 11 --seed 9",
    "seed": 9,
    "minutes": 11.0,
    "episodes": 321,
    "exporter": "dynamo",
    "parity_max_abs_diff": {"3": 0.000271},
    "train_config": {
        "requests_per_run": 777,
        "load_range": [0.13, 0.87],
        "stale_max_s": 3.25,
        "fail_penalty": 0.35,
        "cost_clip": 175.0,
    },
}
LATENCY = {
    "onnxruntime": "9.9.9",
    "provider": "CPUExecutionProvider",
    "repeats": 4321,
    "note": "synthetic",
    "sizes": {"17": {"onnx_us_p50": 41.7, "onnx_us_p99": 93.1, "features_us_p50": 27.3}},
}


def _numbers(text: str) -> set[str]:
    """Numeric tokens, not part of a name (float32, p50), except single digits."""
    return {t for t in re.findall(r"(?<![A-Za-z_\d.])\d+(?:\.\d+)?", text) if len(t) > 1}


def test_card_figures_come_from_inputs_and_notes_survive(tmp_path: Path) -> None:
    path = tmp_path / "recruiter.md"
    write_card(path, META, GRID, "| table |\n", LATENCY, "amcoedge policy grid --seeds 4")
    text = path.read_text()
    for token in ("321", "777", "[0.13, 0.87]", "3.25", "0.35", "175.0", "4321", "41.7", "1234"):
        assert token in text, token
    assert "4 seeds per cell" in text and "(synthetic)" in text
    assert "Notes" not in text
    # the learned policy misses 1.02 x best greedy in the second cell only: 0.6977 / 0.5911
    assert "N=13 load=0.73 stale=1.5 (1.180)" in text
    bad = sorted(
        t
        for t in _numbers(text) - CITED
        if re.search(rf"(?<![A-Za-z_\d.]){re.escape(t)}(?![\d])", SOURCE)
    )
    assert not bad, f"figures written in policy/fleet/card.py: {bad}"
    # hand-written notes: read on every regeneration, never overwritten
    notes = notes_path(path)
    assert notes.name == "recruiter.notes.md"
    notes.write_text("- tried a wider head; no better.\n")
    write_card(path, META, GRID, "| table |\n", LATENCY, "cmd")
    write_card(path, META, GRID, "| table |\n", LATENCY, "cmd")
    text = path.read_text()
    assert text.count("- tried a wider head; no better.") == 1
    assert notes.read_text() == "- tried a wider head; no better.\n"


def test_shipped_card_has_its_notes_file() -> None:
    models = Path(card_mod.__file__).resolve().parents[1] / "models"
    card = (models / "recruiter.md").read_text()
    notes = notes_path(models / "recruiter.md").read_text().strip()
    assert notes and notes in card
    assert "2-core" not in card and "busy when measured" not in card


def test_notes_are_refreshed_without_regenerating_the_card(tmp_path: Path) -> None:
    from policy.fleet.card import put_notes

    path = tmp_path / "recruiter.md"
    notes = notes_path(path)
    notes.write_text("- first note.\n")
    write_card(path, META, GRID, "| table |\n", LATENCY, "cmd")
    before = path.read_text()
    notes.write_text("- first note.\n- a second note.\n")
    assert put_notes(path)
    after = path.read_text()
    assert "- a second note." in after and after.count("- first note.") == 1
    # everything outside the Notes section is as it was
    assert after.replace("- a second note.\n", "") == before
    assert (
        not put_notes(tmp_path / "nothing.md")
        if (tmp_path / "nothing.md").write_text("x")
        else True
    )
