"""The model card's sim-vs-real section: computed from compare JSONs, replaced in place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peer.cli import main
from policy.fleet.card import SIM_REAL_BEGIN, SIM_REAL_END, put_sim_real, sim_real_section


def _cmp(real: float, sim: float) -> dict[str, Any]:
    rel = sim / real - 1.0
    return {
        "scenario": "busy",
        "tolerance": 0.2,
        "real_load_average_1m": 3.0,
        "policies": {
            "greedy": {
                "makespan_mean_s": {"real": real, "sim": sim, "sim_over_real_minus_1": rel},
                "makespan_p95_s": {"real": 2 * real, "sim": 2 * sim},
                "failure_rate": {"real": 0.0, "sim": 0.0},
                "all_requests_mean_s": {"real": real, "sim": sim},
                "mean_peers_per_request": {"real": 2.0, "sim": 2.5},
            }
        },
        "real_ranking": ["greedy"],
        "sim_ranking": ["greedy"],
        "same_ranking": True,
        "all_means_within_tolerance": abs(rel) <= 0.2,
        "largest_discrepancies": ["greedy makespan_mean_s: sim x vs real y"],
    }


def test_section_figures_and_in_place_replacement(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("# card\n\nbody\n")
    put_sim_real(card, sim_real_section([_cmp(0.5, 0.55)], "cmd"))
    text = card.read_text()
    assert text.startswith("# card\n\nbody\n")
    assert "| 0.500 / 0.550 | 1.10 |" in text and "every mean within 20%: yes" in text
    put_sim_real(card, sim_real_section([_cmp(0.5, 0.8)], "cmd"))
    text = card.read_text()
    assert text.count(SIM_REAL_BEGIN) == 1 and text.count(SIM_REAL_END) == 1
    assert "| 0.500 / 0.800 | 1.60 |" in text and "every mean within 20%: no" in text
    assert "0.550" not in text


def test_cli(tmp_path: Path) -> None:
    cmp = tmp_path / "c.json"
    cmp.write_text(json.dumps(_cmp(1.0, 1.1)))
    card = tmp_path / "card.md"
    assert main(["policy", "sim-real", "--card", str(card), str(cmp)]) == 0
    assert "1.000 / 1.100" in card.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["policy", "sim-real", "--card", str(card), str(bad)]) == 2
