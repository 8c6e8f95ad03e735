"""``amcoedge bench rss``: its defaults are the issue's check, and a small run on real peers
reports every peer's peak and after RSS and every request's outcome."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from peer.cli import build_parser
from peer.harness.rss import LIMIT_MIB, _repair_body, run_bench


def test_defaults_are_the_issues_check() -> None:
    args = build_parser().parse_args(["bench", "rss"])
    assert (args.requests, args.canvas, args.repair_label) == (120, 128, None)
    assert LIMIT_MIB == 1024


def test_the_repair_masks_the_centre_of_the_canvas() -> None:
    body = _repair_body(48, 3, None)
    assert body["mode"] == "tile" and "label" not in body
    with Image.open(io.BytesIO(base64.b64decode(body["mask"]))) as im:
        mask = np.asarray(im) > 0
    assert mask.shape == (48, 48) and mask[12:36, 12:36].all() and mask.sum() == 24 * 24


@pytest.mark.slow
def test_a_small_run_on_real_peers() -> None:
    rep = run_bench(peers=2, requests=6, count=1, steps=2, canvas=48, settle_s=0.5)
    assert rep["available"]
    assert sum(rep["generate_outcomes"].values()) == 6
    assert rep["generate_outcomes"].get("served") == 6
    assert rep["repair"]["status"] == 200 and rep["repair"]["mode"] == "tile"
    assert set(rep["per_peer"]) == {"p0", "p1"}
    for p in rep["per_peer"].values():
        assert p["peak_rss_mib"] >= p["after_mib"] > 100
        assert p["memory"]["budget_mib"] >= 1024
    assert rep["under_limit"] == (rep["max_peak_rss_mib"] < LIMIT_MIB)
