"""Fused tiles in the planner: band layout, exchange period, warm-up and predicted make-span.

Pure (no clocks, no I/O, no torch). ``peer.diffusion.fused`` holds the band step function,
``peer.runtime.fused_sessions`` the origin's driver; this module predicts how long that driver
takes for a given set of holders and picks the settings it runs with.

The run (see ``run_fused``) is a sequence of barrier rounds. Before them, optionally, ``warmup``
steps of the whole canvas run at the origin; then every holder opens its band (the canvas and
mask travel once, plus the warmed-up latent). A round is one ``fused.step`` per holder: the
neighbours' strips go in, ``sync_every`` steps of the band's window run, its own strips come
back. So, with holder p's band window of ``win_p`` rows out of ``H``:

- step_p     = a_p + c_p * area * win_p / H    (the affine per-step cost model, ``area`` the
  whole canvas in native-size forward rows, as the planner's untiled repair uses it)
- exchange_p = rtt_p + strip_bytes_p / bytes_per_s_p + SHARE_OVERHEAD_S   (0 for the origin)
- round      = max_p (n * step_p + exchange_p),  n = sync_every (fewer in the last round)
- make-span  = max_p max(warm_end + open_p, wait_p) + sum of rounds + max_p close_p

Rules (each stated once, here):

- **Halo**: ``min(native, band rows // 2)`` rounded down to the band quantum; a layout whose
  halo would be below one quantum is not offered (the windows would see nothing of the
  neighbours).
- **Exchange period** (``sync_every``): the smallest n in 1..``MAX_SYNC_EVERY`` whose
  exchange (the slowest holder's) costs at most ``EXCHANGE_BUDGET`` of the n steps it pays
  for; fast links therefore exchange every step (the most accurate fusion), slow ones every
  few steps, never more than ``MAX_SYNC_EVERY`` (fusion degrades between exchanges).
- **Warm-up**: ``ceil(WARMUP_FRACTION * steps)`` steps of the whole canvas at the origin (at most
  ``steps - 1``) when any band's own rows are at least ``HOLE_FRACTION`` masked: a large hole
  crosses bands and its global content is settled before the split (DistriFusion and AsyncDiff
  warm up 4-9 of 50 steps); otherwise none.
- **Holders**: equal-height bands; interior bands (two halos, the widest windows) go to the
  cheapest holders. The planner tries every count of holders from its pool, with and without
  the origin, and keeps the shortest prediction (ties: fewer holders).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from peer.core.parallel_plan import SHARE_OVERHEAD_S

MAX_SYNC_EVERY = 4  # never fuse less often than every 4 steps
EXCHANGE_BUDGET = 0.25  # an exchange may cost up to this share of the steps between exchanges
WARMUP_FRACTION = 0.08  # 4 of 50 steps: the low end of DistriFusion's warm-up
HOLE_FRACTION = 0.4  # a band whose own rows are this masked triggers the warm-up
CHECKPOINT_EVERY = 5  # rounds between band checkpoints at the origin (losing a holder)
ENVELOPE_BYTES = 200  # msgpack framing of one strip (dtype, shape, keys)


@dataclass(frozen=True)
class Holder:
    """One candidate holder's cost terms (seconds; bytes per second)."""

    name: str
    is_self: bool
    a_s: float
    c_s: float
    wait_s: float = 0.0
    rtt_s: float = 0.0
    bytes_per_s: float = 1e8


@dataclass(frozen=True)
class Canvas:
    """What the fused prediction needs of a repair request."""

    height: int
    width: int
    steps: int
    area: float  # the whole canvas in native-size forward rows (the planner's ``area_units``)
    native: int = 16
    quantum: int = 1  # band heights and halos are multiples of this (the backend's downscale)
    channels: int = 1  # latent channels (strips are float32)
    row_masked: tuple[float, ...] = ()  # per canvas row: the masked fraction of its pixels
    open_bytes: int = 0  # canvas + mask, sent to every remote holder once


@dataclass(frozen=True)
class FusedLayout:
    bands: tuple[tuple[int, int, int, int], ...]  # (core0, core1, win0, win1), top to bottom
    holders: tuple[int, ...]  # index into the holder list, per band
    halo: int
    sync_every: int
    warmup: int
    makespan_s: float
    step_s: tuple[float, ...]  # per band: one step of its window on its holder
    exchange_s: tuple[float, ...]  # per band: one exchange for its holder
    bytes_per_step: float  # strips over every seam per split step (both ways)


def band_windows(
    height: int, parts: int, halo: int, quantum: int = 1
) -> list[tuple[int, int, int, int]]:
    """The bands ``peer.diffusion.fused.plan_bands`` cuts, as tuples (no validation beyond
    what the layout needs; ``plan_bands`` stays the authority and raises on bad input)."""
    rows = height // quantum
    base, extra = divmod(rows, parts)
    cuts = [0]
    for p in range(parts):
        cuts.append(cuts[-1] + (base + (1 if p < extra else 0)) * quantum)
    return [
        (c0, c1, max(c0 - halo, 0), min(c1 + halo, height)) for c0, c1 in itertools.pairwise(cuts)
    ]


def halo_for(height: int, parts: int, native: int, quantum: int) -> int:
    """The halo rule (see the module header); 0 for a single band, -1 when it does not fit."""
    if parts == 1:
        return 0
    band = (height // quantum // parts) * quantum
    halo = (min(native, band // 2) // quantum) * quantum
    return halo if halo >= quantum else -1


def warmup_steps(
    row_masked: Sequence[float], bands: Sequence[tuple[int, int, int, int]], steps: int
) -> int:
    """The warm-up rule (see the module header)."""
    if len(bands) < 2 or steps < 2 or not row_masked:
        return 0
    worst = max(sum(row_masked[c0:c1]) / max(c1 - c0, 1) for c0, c1, _, _ in bands)
    if worst < HOLE_FRACTION:
        return 0
    return min(math.ceil(WARMUP_FRACTION * steps), steps - 1)


def sync_every_for(step_s: Sequence[float], exchange_s: Sequence[float]) -> int:
    """The exchange-period rule (see the module header)."""
    slow_x, slow_step = max(exchange_s, default=0.0), max(step_s, default=0.0)
    for n in range(1, MAX_SYNC_EVERY + 1):
        if slow_x <= EXCHANGE_BUDGET * n * slow_step:
            return n
    return MAX_SYNC_EVERY


def strip_bytes(band: tuple[int, int, int, int], width: int, channels: int) -> int:
    """Bytes one exchange moves for this band's holder: its halos in, as many core rows out."""
    c0, c1, w0, w1 = band
    halo_rows = (c0 - w0) + (w1 - c1)
    strips = (1 if c0 > w0 else 0) + (1 if w1 > c1 else 0)
    return 2 * (4 * channels * width * halo_rows + strips * ENVELOPE_BYTES)


def predict(
    holders: Sequence[Holder],
    order: Sequence[int],
    canvas: Canvas,
    *,
    sync_every: int | None = None,
    warmup: int | None = None,
) -> FusedLayout | None:
    """The layout and predicted make-span of ``len(order)`` bands, band b held by
    ``holders[order[b]]`` (None when the canvas cannot be cut that way). ``sync_every`` and
    ``warmup`` default to the rules above."""
    parts = len(order)
    h, w = canvas.height, canvas.width
    if parts < 1 or h // canvas.quantum < parts:
        return None
    halo = halo_for(h, parts, canvas.native, canvas.quantum)
    if halo < 0:
        return None
    bands = band_windows(h, parts, halo, canvas.quantum)
    # interior bands (the widest windows) to the cheapest holders
    by_win = sorted(range(parts), key=lambda b: (-(bands[b][3] - bands[b][2]), b))
    by_cost = sorted(order, key=lambda i: (_step(holders[i], canvas, 1.0), holders[i].name))
    held = [0] * parts
    for b, i in zip(by_win, by_cost, strict=True):
        held[b] = i
    step_s = [
        _step(holders[i], canvas, (b[3] - b[2]) / h) for b, i in zip(bands, held, strict=True)
    ]
    xch_s = [
        0.0
        if holders[i].is_self or parts == 1
        else holders[i].rtt_s
        + strip_bytes(b, w, canvas.channels) / max(holders[i].bytes_per_s, 1.0)
        + SHARE_OVERHEAD_S
        for b, i in zip(bands, held, strict=True)
    ]
    n = sync_every if sync_every is not None else sync_every_for(step_s, xch_s)
    warm = warmup if warmup is not None else warmup_steps(canvas.row_masked, bands, canvas.steps)
    me = next((x for x in holders if x.is_self), None)
    warm_end = 0.0
    start_bytes = 0
    if warm and me is not None:
        warm_end = me.wait_s + warm * _step(me, canvas, 1.0)
        start_bytes = 4 * canvas.channels * h * w
    latest = 0.0
    close = 0.0
    for (c0, c1, _, _), i in zip(bands, held, strict=True):
        x = holders[i]
        bw = max(x.bytes_per_s, 1.0)
        remote = not x.is_self
        opened = warm_end + ((x.rtt_s + (canvas.open_bytes + start_bytes) / bw) if remote else 0.0)
        latest = max(latest, opened, x.wait_s)
        core = (c1 - c0) * w * canvas.channels
        close = max(close, (x.rtt_s + core / bw) if remote else 0.0)
    left = canvas.steps - warm
    rounds_s = 0.0
    while left > 0:
        k = min(n, left)
        rounds_s += max(k * s + x for s, x in zip(step_s, xch_s, strict=True))
        left -= k
    seams = sum(strip_bytes(b, w, canvas.channels) for b in bands) / 2 if parts > 1 else 0.0
    return FusedLayout(
        bands=tuple(bands),
        holders=tuple(held),
        halo=halo,
        sync_every=n,
        warmup=warm,
        makespan_s=latest + rounds_s + close,
        step_s=tuple(step_s),
        exchange_s=tuple(xch_s),
        bytes_per_step=seams / n,
    )


def _step(x: Holder, canvas: Canvas, fraction: float) -> float:
    return x.a_s + x.c_s * canvas.area * fraction


def best_layout(holders: Sequence[Holder], canvas: Canvas, max_parts: int = 16) -> FusedLayout:
    """The holder count and set with the shortest predicted make-span: every count from the
    pool, with and without the origin (the origin alone, one band, always fits)."""
    me = next(i for i, x in enumerate(holders) if x.is_self)
    remotes = sorted(
        (i for i, x in enumerate(holders) if not x.is_self),
        key=lambda i: (
            holders[i].wait_s + canvas.steps * _step(holders[i], canvas, 1.0) + holders[i].rtt_s,
            holders[i].name,
        ),
    )
    best = predict(holders, [me], canvas)
    assert best is not None  # one band always fits
    for k in range(2, min(len(remotes) + 1, max_parts) + 1):
        for order in ([me, *remotes[: k - 1]], remotes[:k]):
            if len(order) != k:
                continue
            got = predict(holders, order, canvas)
            if got is not None and got.makespan_s < best.makespan_s - 1e-12:
                best = got
    return best
