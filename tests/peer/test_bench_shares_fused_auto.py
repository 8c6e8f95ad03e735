"""bench shares, fused part: the HTTP auto check (what ``mode: auto`` picked for each mask's
repair and its wall time over ``mode: local``'s), on a scripted client (no peers)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from peer.harness import bench_shares as bs


class ScriptedClient:
    """Answers repairs as a finished job; auto picks ``pick`` and takes ``auto_s``."""

    def __init__(self, pick: str, auto_s: float, local_s: float = 2.0) -> None:
        self.pick, self.auto_s, self.local_s = pick, auto_s, local_s
        self.calls: list[tuple[int, str, tuple[int, ...]]] = []

    def repair(self, image: np.ndarray, mask: np.ndarray, **body: Any) -> tuple[Any, float]:
        mode = body["mode"]
        self.calls.append((body["steps"], mode, mask.shape))
        picked = self.pick if mode == "auto" else "local"
        plan = {"mode": picked, "alternatives": {"local": 2.0, "tile": 1.0, "fused": 1.5}}
        job = {"state": "done", "result": {"plan": plan, "images": []}}
        return job, self.auto_s if mode == "auto" else self.local_s


def test_auto_check_reports_picks_and_walls_per_mask() -> None:
    s = bs.Settings(fused_steps=7, tile_repeats=2)
    client = ScriptedClient("fused", auto_s=1.0)
    got = bs.fused_auto_http(client, s)  # type: ignore[arg-type]
    assert got["masks"] == ["scratch", "scratch", "hole25", "hole25"]
    assert got["picked"] == ["fused"] * 4
    assert got["wall_vs_local"] == [0.5] * 4
    assert got["within_10pct_of_local"] is True
    assert got["per_mask"]["hole25"]["alternatives"]["fused"] == 1.5
    # per mask: a 1-step warm-up of auto and local, then auto/local in turn at the fused steps
    side = bs.CANVAS
    assert client.calls[:4] == [
        (1, "auto", (side, side)),
        (1, "local", (side, side)),
        (7, "auto", (side, side)),
        (7, "local", (side, side)),
    ]
    json.dumps(got)


def test_a_slow_non_local_pick_fails_the_check() -> None:
    got = bs.fused_auto_http(ScriptedClient("tile", auto_s=2.4), bs.Settings(tile_repeats=1))  # type: ignore[arg-type]
    assert got["wall_vs_local"] == [1.2, 1.2]
    assert got["within_10pct_of_local"] is False
    local = bs.fused_auto_http(ScriptedClient("local", auto_s=2.4), bs.Settings(tile_repeats=1))  # type: ignore[arg-type]
    assert local["within_10pct_of_local"] is True  # a local pick is local
