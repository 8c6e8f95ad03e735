"""Fused tiles in the planner (pure): the band layout matches ``plan_bands``, the stated rules
for the halo, the exchange period and the warm-up, and ``auto`` picks fused only where it is
predicted to beat local and tile."""

from __future__ import annotations

import numpy as np
import pytest

from peer.core.errors import PlanError
from peer.core.fused_plan import (
    MAX_SYNC_EVERY,
    Canvas,
    Holder,
    band_windows,
    best_layout,
    halo_for,
    predict,
    sync_every_for,
    warmup_steps,
)
from peer.core.planner import PeerState, Planner, Work, applicable_modes
from peer.core.recruit import Recruiters
from peer.diffusion.checks import centre_mask, scratch_mask
from peer.diffusion.fused import plan_bands

SIDE = 128


def rows_of(mask: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in mask.mean(axis=1))


def canvas(mask: np.ndarray, steps: int = 50) -> Canvas:
    h, w = mask.shape
    return Canvas(h, w, steps, area=h * w / 256.0, row_masked=rows_of(mask), open_bytes=2 * h * w)


def peer(name: str, *, me: bool = False, rtt: float = 0.001, bw: float = 1e8) -> PeerState:
    return PeerState(
        name=name,
        is_self=me,
        addr=("127.0.0.1", 7000 + ord(name[0])),
        wait_s=0.0,
        view_age_s=0.0 if me else 0.2,
        a_s=0.004,
        c_s=0.0008,
        rtt_s=0.0 if me else rtt,
        bytes_per_s=bw,
    )


def repair_work(mask: np.ndarray, tiles: int, steps: int = 50) -> Work:
    """A repair as ``run_repair`` builds it for the digits model (labelled: one row per window;
    16 x 16 tile windows at a stride of 8: the bench's scratch mask touches 109 of them, its
    25% hole 81)."""
    h, w = mask.shape
    return Work(
        kind="repair",
        units=tiles,
        steps=steps,
        bytes_per_unit=64,
        share_bytes=2 * h * w,
        area_units=h * w / 256.0,
        tile_area=1.0,
        fused=canvas(mask, steps),
    )


@pytest.mark.parametrize(
    ("height", "parts", "halo", "quantum"),
    [(128, 4, 16, 1), (128, 3, 16, 1), (64, 5, 4, 4), (96, 2, 8, 8), (128, 1, 0, 1)],
)
def test_band_windows_are_plan_bands(height: int, parts: int, halo: int, quantum: int) -> None:
    want = [tuple(b.to_wire()) for b in plan_bands(height, parts, halo, quantum)]
    assert band_windows(height, parts, halo, quantum) == want


def test_halo_rule() -> None:
    assert halo_for(128, 4, 16, 1) == 16  # 32-row bands: the native size
    assert halo_for(128, 16, 16, 1) == 4  # 8-row bands: half a band
    assert halo_for(128, 1, 16, 1) == 0
    assert halo_for(16, 4, 16, 8) == -1  # bands below two quanta: no halo fits


def test_warmup_only_for_a_large_hole_across_bands() -> None:
    hole, scratch = centre_mask(SIDE, 0.5), scratch_mask(SIDE)
    bands = band_windows(SIDE, 4, 16)
    assert warmup_steps(rows_of(hole), bands, 50) == 4  # ceil(8% of 50)
    assert warmup_steps(rows_of(hole), bands, 5) == 1
    assert warmup_steps(rows_of(scratch), bands, 50) == 0
    assert warmup_steps(rows_of(hole), bands[:1], 50) == 0  # one band: nothing to settle


def test_exchange_period_follows_link_cost() -> None:
    assert sync_every_for([0.03, 0.03], [0.0, 0.005]) == 1  # LAN: every step
    assert sync_every_for([0.03, 0.03], [0.0, 0.015]) == 2
    assert sync_every_for([0.03], [0.5]) == MAX_SYNC_EVERY  # capped


def test_prediction_by_hand_two_bands() -> None:
    """A 32x32 canvas, this peer and one remote: halo 8, no warm-up, the exchange period from
    the link (6 ms per exchange against 13 ms steps: every 2 steps), 3 steps in 2 rounds."""
    m = np.zeros((32, 32), dtype=bool)
    m[4:8, 4:28] = True
    cv = canvas(m, steps=3)
    hs = [Holder("a", True, 0.01, 0.001), Holder("b", False, 0.01, 0.001, rtt_s=0.002)]
    lay = predict(hs, [0, 1], cv)
    assert lay is not None
    assert lay.bands == ((0, 16, 0, 24), (16, 32, 8, 32)) and lay.halo == 8
    step = 0.01 + 0.001 * 4.0 * 24 / 32  # a 24-row window of a canvas of area 4
    # b's exchange: its 8 halo rows in and 8 core rows out (float32, 32 wide) + framing
    xch = 0.002 + 2 * (4 * 32 * 8 + 200) / 1e8 + 0.004
    open_b = 0.002 + 2 * 32 * 32 / 1e8
    close_b = 0.002 + 16 * 32 / 1e8
    assert lay.sync_every == 2 and lay.warmup == 0
    assert lay.makespan_s == pytest.approx(open_b + (2 * step + xch) + (step + xch) + close_b)
    assert lay.bytes_per_step == pytest.approx((4 * 32 * 8 + 200) * 2 / 2)
    every = predict(hs, [0, 1], cv, sync_every=1)
    assert every is not None and every.makespan_s > lay.makespan_s


def test_one_peer_layout_is_one_band_here() -> None:
    lay = best_layout([Holder("a", True, 0.004, 0.0008)], canvas(scratch_mask(SIDE)))
    assert lay.bands == ((0, SIDE, 0, SIDE),) and lay.holders == (0,)


@pytest.fixture
def planner() -> Planner:
    return Planner(Recruiters(seed=0))


def test_fused_applies_to_repairs_with_a_band_canvas_only() -> None:
    m = centre_mask(SIDE, 0.5)
    assert "fused" in applicable_modes(repair_work(m, 81), 16, SIDE, SIDE)
    assert "fused" not in applicable_modes(repair_work(m, 81), 16, 16, SIDE)  # too low
    no_canvas = Work("repair", 36, 50, area_units=64.0)
    assert "fused" not in applicable_modes(no_canvas, 16, SIDE, SIDE)
    assert "fused" not in applicable_modes(Work("generate", 1, 50), 16)


def test_auto_picks_fused_where_it_beats_tile_and_local(planner: Planner) -> None:
    """Two idle peers on a fast link, the scratch mask (109 overlapping tile windows, 1.7x the
    canvas): two bands denoise 1.25x the canvas, so fused is predicted shortest."""
    peers = [peer("a", me=True), peer("b")]
    m = scratch_mask(SIDE)
    plan = planner.plan(
        peers, repair_work(m, 109), mode="auto", policy="equal", height=SIDE, width=SIDE
    )
    assert plan.mode == "fused" and "tile" not in plan.alternatives  # 1.7x the canvas in tiles
    tile = planner.plan(
        peers, repair_work(m, 109), mode="tile", policy="equal", height=SIDE, width=SIDE
    )
    assert plan.predicted_makespan_s < min(plan.alternatives["local"], tile.predicted_makespan_s)
    d = plan.detail
    assert d["warmup"] == 0 and d["sync_every"] == 1 and d["halo"] == 16
    assert d["bands"] == [[0, 64, 0, 80], [64, 128, 48, 128]]
    assert sorted(s.units[0] for s in plan.shares) == [0, 1]
    assert {s.peer for s in plan.shares} == {"a", "b"}


def test_a_hole_plans_a_warm_up_and_auto_leaves_tiles_out(planner: Planner) -> None:
    """The 25% hole: 81 tile windows (1.27x the canvas) split four ways are predicted shortest,
    but independent tiles fill the hole with different content, so auto does not offer them
    and takes fused bands (warmed up as the rule asks); tile stays available when asked for."""
    peers = [peer("a", me=True), peer("b"), peer("c"), peer("d")]
    m = centre_mask(SIDE, 0.5)
    work = repair_work(m, 81)
    plan = planner.plan(peers, work, mode="auto", policy="equal", height=SIDE, width=SIDE)
    assert plan.mode == "fused" and "tile" not in plan.alternatives
    assert plan.predicted_makespan_s < plan.alternatives["local"]
    tile = planner.plan(peers, work, mode="tile", policy="equal", height=SIDE, width=SIDE)
    assert tile.mode == "tile" and tile.predicted_makespan_s < plan.predicted_makespan_s
    forced = planner.plan(peers, work, mode="fused", policy="equal", height=SIDE, width=SIDE)
    assert forced.mode == "fused" and forced.detail["warmup"] == 4
    assert len(forced.shares) >= 2 and any(s.is_self for s in forced.shares)
    assert forced.predicted_makespan_s == pytest.approx(plan.predicted_makespan_s)


def test_auto_offers_tiles_only_where_they_cover_little_of_the_canvas(planner: Planner) -> None:
    peers = [peer("a", me=True), peer("b"), peer("c"), peer("d")]
    wide = planner.plan(
        peers,
        repair_work(scratch_mask(SIDE), 109),
        mode="auto",
        policy="equal",
        height=SIDE,
        width=SIDE,
    )
    assert "tile" not in wide.alternatives and wide.mode in ("fused", "local")
    m = np.zeros((SIDE, SIDE), dtype=bool)
    m[40:44, 20:36] = True  # two windows: a small fraction of the canvas
    small = planner.plan(
        peers, repair_work(m, 2), mode="auto", policy="equal", height=SIDE, width=SIDE
    )
    assert "tile" in small.alternatives


def test_auto_keeps_local_alone_and_over_slow_links(planner: Planner) -> None:
    m = centre_mask(SIDE, 0.5)
    alone = planner.plan(
        [peer("a", me=True)],
        repair_work(m, 81),
        mode="auto",
        policy="equal",
        height=SIDE,
        width=SIDE,
    )
    assert alone.mode == "local"
    assert alone.alternatives["fused"] >= alone.alternatives["local"]
    slow = [peer("a", me=True), *(peer(n, rtt=0.5, bw=1e5) for n in "bcd")]
    plan = planner.plan(
        slow, repair_work(m, 81), mode="auto", policy="equal", height=SIDE, width=SIDE
    )
    assert plan.mode != "fused"  # an exchange per step over 0.5 s links: never worth it
    forced = planner.plan(
        slow, repair_work(m, 81), mode="fused", policy="equal", height=SIDE, width=SIDE
    )
    assert [s.peer for s in forced.shares] == ["a"]  # the whole canvas, here: local's cost
    assert forced.predicted_makespan_s == pytest.approx(plan.alternatives["local"])


def test_a_slower_link_exchanges_every_few_steps(planner: Planner) -> None:
    """A 10 ms link: an exchange (about 15 ms) costs half a band step (about 30 ms), so the
    bands exchange every 2 steps."""
    peers = [peer("a", me=True), peer("b", rtt=0.01)]
    plan = planner.plan(
        peers,
        repair_work(scratch_mask(SIDE), 109),
        mode="fused",
        policy="equal",
        height=SIDE,
        width=SIDE,
    )
    assert len(plan.shares) == 2 and plan.detail["sync_every"] == 2


def test_auto_picks_tile_when_few_tiles_hold_the_mask(planner: Planner) -> None:
    """One small scratch: tile mode repairs 2 windows, fused would denoise the whole canvas."""
    peers = [peer("a", me=True), peer("b"), peer("c"), peer("d")]
    m = np.zeros((SIDE, SIDE), dtype=bool)
    m[40:44, 20:36] = True
    plan = planner.plan(
        peers, repair_work(m, 2), mode="auto", policy="equal", height=SIDE, width=SIDE
    )
    assert plan.mode == "tile"
    assert plan.alternatives["fused"] > plan.alternatives["tile"]


def test_forced_fused_on_a_canvas_too_low_is_refused(planner: Planner) -> None:
    m = np.ones((16, 64), dtype=bool)
    with pytest.raises(PlanError):
        planner.plan(
            [peer("a", me=True)],
            repair_work(m, 4),
            mode="fused",
            policy="equal",
            height=16,
            width=64,
        )


def test_a_fused_repair_is_held_in_memory_as_the_whole_canvas() -> None:
    """The origin runs the warm-up on the whole canvas: the admission estimate is local's."""
    from peer.core.memory import MemoryModel, for_repair

    m = MemoryModel()
    fused = for_repair(m, SIDE, SIDE, True, "fused")
    assert fused == for_repair(m, SIDE, SIDE, True, "local")
    assert fused != for_repair(m, SIDE, SIDE, True, "tile")
