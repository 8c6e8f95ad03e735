"""``amcoedge bench shares``: one image over several real peers vs one peer, same CPU in all.

Two measurements on real peer processes (``LocalCluster``, equal cgroup CPU quotas where the
machine allows; ``quota_note`` says what it got):

- ``steps_parallel``: one image of the shipped model, ``--steps`` DDIM steps, mode ``parallel``
  on ``--peers`` peers vs mode ``local`` on one peer with the same quota, same label and seed.
  Speedup is the median local wall time over the median parallel wall time (``--repeats`` each,
  after one warm-up request of each); PSNR is of the decoded images (``"inf"``: identical).
- ``tile``: a 128x128 canvas of real digits repaired under two masks (``scratch``: seeded
  scratches and blotches; ``hole25``: one central square covering 25%), mode ``tile`` on the
  peers vs mode ``local`` (untiled) on one peer. ``bytes_per_step`` is what the tile shares
  moved between peers (each remote share's request and reply in msgpack wire form, RPC framing
  left out) over the steps: the tile mode blends at the end, so this is a total spread over the
  steps, not an exchange made every step.

The 4-peer cluster runs first, then it stops and the 1-peer cluster starts, so the two never
share the CPUs. PNGs (serial/untiled, split, absolute difference x4) go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from amcoedge.output import emit_json
from peer.core.errors import PeerError
from peer.core.shares import TilesShare, encode_reply, encode_share
from peer.diffusion.checks import centre_mask, scratch_mask
from peer.diffusion.data import load_digits_tensor
from peer.diffusion.images import encode_png, psnr, tensor_to_image
from peer.diffusion.tiles import Tile, plan_tiles
from peer.harness.client import Client, ClientError, decode_images
from peer.harness.cluster import ClusterError, ClusterSpec, LocalCluster, stop_on_signals

CANVAS = 128  # the repair canvas side (px)
NATIVE = 16  # the shipped model's side, and the node's tile size
HALO = 4  # the node's tile halo (peer.runtime.node.Node.plan_tiles)
DIFF_GAIN = 4  # the difference PNG shows |a - b| times this, clipped to 255
TRACKER_WARMUP = 2  # parallel requests before the measured ones: the origin's measured costs
AUTO_SLACK = 1.10  # acceptance: auto's parallel picks within 10% of local's wall time


class BenchError(PeerError):
    code = "bench_failed"


# ---------------------------------------------------------------- pure parts


def psnr_json(db: float) -> float | str:
    """A PSNR for JSON: ``"inf"`` for identical images (JSON has no infinity), else 3 decimals."""
    return "inf" if db == float("inf") else round(db, 3)


def speedup(single_walls: Sequence[float], split_walls: Sequence[float]) -> float:
    """Median one-peer wall time over median split wall time."""
    if not single_walls or not split_walls:
        raise BenchError("speedup needs at least one wall time of each")
    if min(*single_walls, *split_walls) <= 0:
        raise BenchError("wall times must be positive")
    return statistics.median(single_walls) / statistics.median(split_walls)


def auto_check(
    modes: Sequence[str], auto_walls: Sequence[float], local_walls: Sequence[float]
) -> dict[str, Any]:
    """What ``auto`` picked in each repeat and its wall time over local's (the same repeat's,
    and the median's); ``within_10pct_of_local``: every repeat where auto picked a parallel
    mode ran within ``AUTO_SLACK`` of the median local wall time (a local pick is local)."""
    if not (len(modes) == len(auto_walls) == len(local_walls)) or not local_walls:
        raise BenchError("auto check needs one mode, auto wall and local wall per repeat")
    med = statistics.median(local_walls)
    if med <= 0 or min(local_walls) <= 0:
        raise BenchError("wall times must be positive")
    per = [
        {
            "mode": m,
            "wall_s": round(a, 3),
            "over_local": round(a / lw, 3),
            "over_local_median": round(a / med, 3),
        }
        for m, a, lw in zip(modes, auto_walls, local_walls, strict=True)
    ]
    par = [a / med for m, a in zip(modes, auto_walls, strict=True) if m != "local"]
    return {
        "per_repeat": per,
        "parallel_picks": len(par),
        "worst_parallel_over_local_median": round(max(par), 3) if par else None,
        "within_10pct_of_local": all(r <= AUTO_SLACK for r in par),
    }


def diff_image(a: np.ndarray, b: np.ndarray, gain: int = DIFF_GAIN) -> np.ndarray:
    """``|a - b| * gain`` clipped to uint8 (the difference PNG)."""
    if a.shape != b.shape:
        raise BenchError(f"images differ in shape: {a.shape} vs {b.shape}")
    d = np.abs(a.astype(np.int32) - b.astype(np.int32)) * gain
    return np.clip(d, 0, 255).astype(np.uint8)


def repaired_tiles(mask: np.ndarray, tile: int = NATIVE, halo: int = HALO) -> list[Tile]:
    """The windows an origin sends out: those of ``plan_tiles`` holding masked pixels."""
    h, w = mask.shape
    return [
        t for t in plan_tiles(h, w, tile=tile, halo=halo) if mask[t.y0 : t.y1, t.x0 : t.x1].any()
    ]


def tile_share_bytes(
    canvas: np.ndarray,
    mask: np.ndarray,
    plan: Mapping[str, Any],
    origin: str,
    steps: int,
    seed: int,
    label: int | None = None,
) -> int:
    """Bytes the remote tile shares of ``plan`` moved: request + reply, msgpack wire form.

    ``plan`` is a repair result's ``plan`` (its shares' ``units`` index the repaired tiles);
    shares held by ``origin`` move nothing. Replies are counted as uint8 tiles, which is what
    ``repair_tiles`` returns.
    """
    tiles = repaired_tiles(mask)
    total = 0
    for share in plan.get("shares", []):
        units = share.get("units")
        if not isinstance(units, list) or any(
            not isinstance(u, int) or not 0 <= u < len(tiles) for u in units
        ):
            raise BenchError(f"a share's units do not index the {len(tiles)} tiles: {units!r}")
        if share.get("peer") == origin or not units:
            continue
        work = TilesShare(canvas, mask, tuple(tiles[u] for u in units), steps, seed, label)
        out = [np.zeros((tiles[u].height, tiles[u].width), dtype=np.uint8) for u in units]
        total += len(msgpack.packb(encode_share(work)))
        total += len(msgpack.packb(encode_reply(work, out)))
    return total


def steps_report(
    peers: Sequence[str],
    single_walls: Sequence[float],
    split_walls: Sequence[float],
    serial: np.ndarray,
    split: np.ndarray,
    parallel: Mapping[str, Any],
    steps: int,
) -> dict[str, Any]:
    db = psnr(serial, split)
    return {
        "peers": len(peers),
        "peer_names": list(peers),
        "steps": steps,
        "speedup": round(speedup(single_walls, split_walls), 3),
        "psnr_db_vs_serial": psnr_json(db),
        "bit_identical": bool(np.array_equal(serial, split)),
        "iterations": parallel.get("iterations"),
        "exact": parallel.get("exact"),
        "change_db": parallel.get("change_db"),
        "segments": parallel.get("segments"),
        "wall_s": {
            "local": [round(w, 3) for w in single_walls],
            "parallel": [round(w, 3) for w in split_walls],
        },
    }


def tile_report(
    peers: Sequence[str],
    single_walls: Sequence[float],
    split_walls: Sequence[float],
    psnrs: Mapping[str, float],
    share_bytes: int,
    steps: int,
) -> dict[str, Any]:
    return {
        "peers": len(peers),
        "peer_names": list(peers),
        "steps": steps,
        "speedup": round(speedup(single_walls, split_walls), 3),
        "psnr_db_vs_untiled": {k: psnr_json(v) for k, v in psnrs.items()},
        "bytes_per_step": round(share_bytes / steps, 1),
        "share_bytes": share_bytes,
        "wall_s": {
            "local": [round(w, 3) for w in single_walls],
            "tile": [round(w, 3) for w in split_walls],
        },
        "note": "mode tile blends at the end: bytes_per_step is the tile shares' request and "
        "reply bytes (msgpack, RPC framing left out) of one request (mean over the masks), "
        "divided by the steps; no exchange happens per step. Speedup and walls: both masks' "
        "requests summed per repeat.",
    }


# ---------------------------------------------------------------- running it


@dataclass(frozen=True)
class Settings:
    peers: int = 4
    quota: float = 0.5
    steps: int = 50
    tile_steps: int = 4
    repeats: int = 3
    tile_repeats: int = 1
    repair_label: int | None = 3
    seed: int = 7
    label: int = 3
    out: Path = Path("bench-shares")
    policy: str = "equal"
    parallel: dict[str, Any] | None = None  # the requests' ``parallel`` options (None: none)
    skip_tile: bool = False
    auto_only: bool = False  # only the checks of what mode auto picks (split cluster, HTTP)
    fused_steps: int = 10  # fused tiles: steps per repair (0: not measured)
    fused_halo: int = 16
    fused_warmup: int = 0  # warm-up steps on the whole canvas before the hole25 split

    def check(self) -> None:
        for name, v, lo in (
            ("peers", self.peers, 2),
            ("steps", self.steps, 2),
            ("tile_steps", self.tile_steps, 1),
            ("repeats", self.repeats, 1),
            ("tile_repeats", self.tile_repeats, 1),
        ):
            if v < lo:
                raise BenchError(f"--{name.replace('_', '-')} must be at least {lo}, got {v}")
        if not 0 < self.quota <= 64:
            raise BenchError(f"--quota must be in (0, 64] cores, got {self.quota}")
        if not 0 <= self.label <= 9:
            raise BenchError(f"--label must be in [0, 9], got {self.label}")
        if self.repair_label is not None and not 0 <= self.repair_label <= 9:
            raise BenchError(f"--repair-label must be in [0, 9] or none, got {self.repair_label}")


def canvas_of_digits(side: int = CANVAS, size: int = NATIVE) -> np.ndarray:
    """A side x side mosaic of real digits (every 37th of the data set, wrapping round)."""
    if side % size:
        raise BenchError(f"the canvas side {side} is not a multiple of {size}")
    x, _ = load_digits_tensor(size)
    cells = side // size
    canvas = np.zeros((side, side), dtype=np.uint8)
    for k in range(cells * cells):
        r, c = divmod(k, cells)
        canvas[r * size : (r + 1) * size, c * size : (c + 1) * size] = tensor_to_image(
            x[(37 * k) % len(x)]
        )
    return canvas


def masks() -> dict[str, np.ndarray]:
    return {"scratch": scratch_mask(CANVAS), "hole25": centre_mask(CANVAS, 0.5)}


def _timed(
    call: Callable[[], tuple[dict[str, Any], float]], repeats: int
) -> tuple[list[float], dict[str, Any]]:
    walls: list[float] = []
    last: dict[str, Any] = {}
    for _ in range(repeats):
        job, wall = call()
        last = _result(job)
        walls.append(wall)
    return walls, last


def _result(job: Mapping[str, Any]) -> dict[str, Any]:
    """The result of a finished job answer (the API wraps it: ``{"state", "result", ...}``)."""
    if job.get("state") != "done" or not isinstance(job.get("result"), dict):
        raise BenchError(f"the job did not finish: state {job.get('state')!r}, {job.get('error')}")
    return dict(job["result"])


def _one_image(res: Mapping[str, Any]) -> np.ndarray:
    imgs = decode_images(dict(res))
    if len(imgs) != 1:
        raise BenchError(f"expected one image, got {len(imgs)}; result keys: {sorted(res)}")
    return imgs[0]


def fused_bench(
    procs: Sequence[Any], s: Settings, canvas: np.ndarray, ms: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Fused tiles on the peers' band sessions (``peer.runtime.fused_sessions``): per mask, the
    whole canvas as one band on the first peer (the untiled repair, one 0.5-core peer) and the
    canvas in one band per peer, strips exchanged every step, ``tile_repeats`` times in turn.
    This process only relays the strips (msgpack, a few KB per step)."""
    import asyncio

    from peer.rpc.pool import RpcPool
    from peer.runtime.fused_sessions import run_fused

    class _Be:  # what run_fused reads of a backend when the warm-up runs on a peer
        downscale = 1

    async def go() -> dict[str, Any]:
        pool = RpcPool()
        try:

            def via(addr: tuple[str, int]) -> Any:
                async def call(method: str, params: dict[str, Any]) -> Any:
                    return await pool.call(addr, method, params, timeout=600.0)

                return call

            calls = [(pr.name, via(pr.listen)) for pr in procs]
            out: dict[str, Any] = {}
            for name, m in ms.items():
                warm = s.fused_warmup if name == "hole25" else 0
                kw: dict[str, Any] = {"halo": s.fused_halo, "label": s.repair_label}
                # warm-up: the ONNX sessions at both window sizes
                await run_fused(_Be(), canvas, m, 1, s.seed, calls[:1], **kw)
                await run_fused(_Be(), canvas, m, 1, s.seed, calls, **kw)
                one_w, many_w = [], []
                for _ in range(s.tile_repeats):
                    one = await run_fused(_Be(), canvas, m, s.fused_steps, s.seed, calls[:1], **kw)
                    many = await run_fused(
                        _Be(),
                        canvas,
                        m,
                        s.fused_steps,
                        s.seed,
                        calls,
                        warmup=warm,
                        warm_call=calls[0][1],
                        **kw,
                    )
                    one_w.append(one.wall_s)
                    many_w.append(many.wall_s)
                out[name] = {
                    "untiled": one.image,
                    "fused": many.image,
                    "one_walls": one_w,
                    "many_walls": many_w,
                    "bytes_per_step": many.bytes_per_step,
                    "exchanges": many.exchanges,
                    "warmup": warm,
                }
            return out
        finally:
            await pool.close()

    return asyncio.run(go())


def fused_auto_http(client: Client, s: Settings) -> dict[str, Any]:
    """Through the HTTP API on the split cluster: each mask's repair of the 128x128 canvas at
    ``fused_steps`` with ``mode: auto`` and ``mode: local`` in turn, ``tile_repeats`` times
    (after one 1-step warm-up of each): what auto picked (local, tile or fused) and its wall
    time over the same repeat's local one (``auto_check``: a non-local pick more than 10%
    slower than local's median fails ``within_10pct_of_local``)."""
    canvas = canvas_of_digits()
    out: dict[str, Any] = {"steps": s.fused_steps, "masks": [], "picked": [], "wall_vs_local": []}
    per_mask: dict[str, Any] = {}
    for name, m in masks().items():
        mask = (m * 255).astype(np.uint8)
        base = {"seed": s.seed, "policy": s.policy, "label": s.repair_label}
        for mode in ("auto", "local"):  # warm-up: ONNX sessions at these window sizes
            _result(client.repair(canvas, mask, steps=1, mode=mode, **base)[0])
        modes: list[str] = []
        walls: dict[str, list[float]] = {"auto": [], "local": []}
        alts: dict[str, Any] = {}
        for _ in range(s.tile_repeats):
            for mode in ("auto", "local"):
                job, wall = client.repair(canvas, mask, steps=s.fused_steps, mode=mode, **base)
                res = _result(job)
                walls[mode].append(wall)
                if mode == "auto":
                    modes.append(str(res["plan"]["mode"]))
                    alts = dict(res["plan"].get("alternatives", {}))
        check = auto_check(modes, walls["auto"], walls["local"])
        per_mask[name] = {**check, "alternatives": alts}
        out["masks"] += [name] * len(modes)
        out["picked"] += modes
        out["wall_vs_local"] += [r["over_local"] for r in check["per_repeat"]]
    out["per_mask"] = per_mask
    out["within_10pct_of_local"] = all(c["within_10pct_of_local"] for c in per_mask.values())
    return out


def fused_report(res: Mapping[str, Any], s: Settings, pngs: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peers": s.peers,
        "steps": s.fused_steps,
        "halo": s.fused_halo,
        "sync_every": 1,
        "psnr_db_vs_untiled": {},
        "speedup": {},
        "bytes_per_step": {},
        "warmup_steps": {},
        "wall_s": {},
    }
    for name, r in res.items():
        out["psnr_db_vs_untiled"][name] = psnr_json(psnr(r["untiled"], r["fused"]))
        out["speedup"][name] = round(speedup(r["one_walls"], r["many_walls"]), 3)
        out["bytes_per_step"][name] = round(r["bytes_per_step"], 1)
        out["warmup_steps"][name] = r["warmup"]
        out["wall_s"][name] = {
            "one_peer": [round(w, 3) for w in r["one_walls"]],
            "fused": [round(w, 3) for w in r["many_walls"]],
        }
        for kind in ("untiled", "fused"):
            pngs[f"fused_{name}_{kind}"] = _png(s.out / f"fused_{name}_{kind}.png", r[kind])
        pngs[f"fused_{name}_diff_x4"] = _png(
            s.out / f"fused_{name}_diff_x4.png", diff_image(r["untiled"], r["fused"])
        )
    out["note"] = (
        "one band per peer, overlap strips exchanged every step through fused.step sessions; "
        "'one_peer' is the whole canvas as one band on the first peer (the untiled repair)"
    )
    return out


def _interleaved(
    client: Client, s: Settings, calls: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[list[float], list[dict[str, Any]]]]:
    """Each named request body once per repeat, in turn (so drifting load hits all alike)."""
    out: dict[str, tuple[list[float], list[dict[str, Any]]]] = {k: ([], []) for k in calls}
    for _ in range(s.repeats):
        for name, body in calls.items():
            job, wall = client.generate(**body)
            out[name][0].append(wall)
            out[name][1].append(_result(job))
    return out


def _steps_split(client: Client, s: Settings) -> dict[str, Any]:
    """On the split cluster: parallel (planner's choice or ``--parallel``), ``auto`` and
    ``local`` on the origin alone (one 0.5-core peer: the others idle), interleaved; then one
    parallel request run to exactness. First one warm-up request of each, and before them
    ``TRACKER_WARMUP`` more parallel ones: the origin plans parallel steps from what its past
    runs measured (``peer.core.parallel_costs``), as a cluster in use would have."""
    base = {
        "count": 1,
        "label": s.label,
        "seed": s.seed,
        "steps": s.steps,
        "scheduler": "ddim",
        "policy": s.policy,
    }
    par = {**base, "mode": "parallel", **({"parallel": s.parallel} if s.parallel else {})}
    calls = {"parallel": par, "auto": {**base, "mode": "auto"}, "local": {**base, "mode": "local"}}
    warm = [_result(client.generate(**par)[0]) for _ in range(TRACKER_WARMUP)]
    for body in calls.values():
        _result(client.generate(**body)[0])  # warm-up: ONNX sessions, caches, links
    got = _interleaved(client, s, calls)
    opts = {k: v for k, v in (s.parallel or {}).items() if k != "tolerance_db"}
    opts.setdefault("segments", s.peers)  # run to exactness, the planner would keep 1 segment
    exact_body = {**par, "parallel": {**opts, "exact": True}}
    exact, exact_wall = client.generate(**exact_body)
    return {
        "runs": got,
        "exact": _result(exact),
        "exact_wall": exact_wall,
        "tracker_warmup": [_plan_summary(r) for r in warm],
    }


def _run_side(s: Settings, n: int, split: bool, logs: Path) -> dict[str, Any]:
    """One cluster of ``n`` peers: the generate and both repairs, split or local."""
    # no memory budget: the untiled reference repair of the whole canvas is what the bench
    # measures against (about 1.1 GiB labelled at 128x128; a default peer refuses it with a 413)
    spec = ClusterSpec(
        peers=n,
        quotas=(s.quota,),
        threads=1,
        policy="equal",
        extra_args=("--memory-budget-mib", "0"),
    )
    gen_mode, rep_mode = ("parallel", "tile") if split else ("local", "local")
    with LocalCluster(spec, logs / f"{n}-peers") as cl:
        cl.wait_ready()
        client = Client(cl.procs[0].url, timeout=600.0)
        body = {"count": 1, "label": s.label, "seed": s.seed, "steps": s.steps}
        gen_call = lambda: client.generate(  # noqa: E731
            **body,
            scheduler="ddim",
            mode=gen_mode,
            policy=s.policy,
            **({"parallel": s.parallel} if split and s.parallel else {}),
        )
        steps_split = _steps_split(client, s) if split else None
        if steps_split is not None:
            gen_walls = steps_split["runs"]["parallel"][0]
            gen = steps_split["runs"]["parallel"][1][-1]
        else:
            _result(gen_call()[0])  # warm-up: ONNX sessions, caches, links
            gen_walls, gen = _timed(gen_call, s.repeats)
        fused = fused_auto = None
        if split and s.fused_steps > 0:
            if not s.auto_only:
                fused = fused_bench(cl.procs, s, canvas_of_digits(), masks())
            fused_auto = fused_auto_http(client, s)
        generate_part = {
            "quota_note": cl.quota_note,
            "gen_walls": gen_walls,
            "gen_image": _one_image(gen),
            "gen_peers": list(gen["plan"]["peers"]),
            "parallel": gen.get("parallel", {}),
            "gen_plan": _plan_summary(gen),
            "has_parallel_report": "parallel" in gen,
            "steps_split": steps_split,
        }
        if s.skip_tile:
            return {"fused": fused, "fused_auto": fused_auto, **generate_part}
        canvas = canvas_of_digits()
        rep: dict[str, Any] = {"walls": [], "images": {}, "bytes": 0, "peers": set()}
        first = masks()["scratch"]
        warm = client.repair(  # warm-up at the canvas size, one step
            canvas,
            (first * 255).astype(np.uint8),
            steps=1,
            seed=s.seed,
            mode=rep_mode,
            policy="equal",
            label=s.repair_label,
        )
        _result(warm[0])
        for name, m in masks().items():
            walls, res = _timed(
                lambda m=m: client.repair(  # type: ignore[misc]
                    canvas,
                    (m * 255).astype(np.uint8),
                    steps=s.tile_steps,
                    seed=s.seed,
                    mode=rep_mode,
                    policy="equal",
                    label=s.repair_label,
                ),
                s.tile_repeats,
            )
            rep["walls"].append(walls)
            rep["images"][name] = _one_image(res)
            if split:
                if res["plan"]["mode"] != "tile":
                    raise BenchError(f"asked for tile, the plan says {res['plan']['mode']}")
                if res.get("tiles_repaired") != len(repaired_tiles(m)):
                    raise BenchError(
                        f"the origin repaired {res.get('tiles_repaired')} tiles, this bench "
                        f"counts {len(repaired_tiles(m))}: the node's tiling changed"
                    )
                rep["bytes"] += tile_share_bytes(
                    canvas, m, res["plan"], cl.procs[0].name, s.tile_steps, s.seed, s.repair_label
                )
            rep["peers"].update(res["plan"]["peers"])
        if split and gen["plan"]["mode"] != "parallel":
            raise BenchError(f"asked for parallel, the plan says {gen['plan']['mode']}")
        return {
            **generate_part,
            "canvas": canvas,
            # one request's wall per repeat: both masks' requests summed
            "rep_walls": [sum(w) for w in zip(*rep["walls"], strict=True)],
            "rep_images": rep["images"],
            "rep_bytes": rep["bytes"],
            "rep_peers": sorted(rep["peers"]),
            "fused": fused,
            "fused_auto": fused_auto,
        }


def _plan_summary(res: Mapping[str, Any]) -> dict[str, Any]:
    plan = res["plan"]
    detail = plan.get("detail", {})
    return {
        "mode": plan["mode"],
        "segments": detail.get("segments"),
        "bounds": detail.get("bounds"),
        "peers": plan["peers"],
        "iterations_assumed": detail.get("iterations_assumed"),
        "costs": detail.get("costs"),
        "guard": detail.get("guard"),
        "predicted_makespan_s": plan["predicted_makespan_s"],
        "alternatives": plan.get("alternatives", {}),
    }


def split_figures(split: Mapping[str, Any], serial: np.ndarray) -> dict[str, Any]:
    """Paired figures from the split cluster: parallel and auto against ``local`` measured in
    turn on the same cluster, and the run to exactness against ``serial``."""
    runs = split["runs"]
    local_walls = runs["local"][0]
    local_img = _one_image(runs["local"][1][-1])
    auto_walls, auto_res = runs["auto"]
    exact = split["exact"]
    exact_img = _one_image(exact)
    par_last = runs["parallel"][1][-1]
    return {
        "speedup_interleaved": round(speedup(local_walls, runs["parallel"][0]), 3),
        "local_same_cluster_bit_identical_to_single": bool(np.array_equal(local_img, serial)),
        "time_s": par_last.get("parallel", {}).get("time_s"),
        "auto": {
            "modes": [r["plan"]["mode"] for r in auto_res],
            "speedup_vs_local": round(speedup(local_walls, auto_walls), 3),
            "alternatives": auto_res[-1]["plan"].get("alternatives", {}),
            "wall_s": [round(w, 3) for w in auto_walls],
            **auto_check([r["plan"]["mode"] for r in auto_res], auto_walls, local_walls),
            "guard": [r["plan"].get("detail", {}).get("guard") for r in auto_res],
        },
        "tracker_warmup": {
            "requests": TRACKER_WARMUP,
            "note": "parallel requests before the warm-ups and the measured runs, so the "
            "origin plans from measured costs (as a cluster in use would have)",
            "plans": split.get("tracker_warmup", []),
        },
        "to_exactness": {
            "bit_identical": bool(np.array_equal(exact_img, serial)),
            "psnr_db_vs_serial": psnr_json(psnr(serial, exact_img)),
            "iterations": exact.get("parallel", {}).get("iterations"),
            "exact": exact.get("parallel", {}).get("exact"),
            "segments": exact.get("parallel", {}).get("segments"),
            "wall_s": round(split["exact_wall"], 3),
        },
        "wall_s_local_same_cluster": [round(w, 3) for w in local_walls],
    }


def _png(path: Path, img: np.ndarray) -> str:
    path.write_bytes(encode_png(img))
    return str(path)


def run(s: Settings) -> dict[str, Any]:
    s.check()
    s.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="amcoedge-bench-shares-"))
    t0 = time.perf_counter()
    with stop_on_signals():
        many = _run_side(s, s.peers, True, logs)
        if s.auto_only:  # what auto picks against local, on the split cluster alone
            split = many["steps_split"]
            auto_walls, auto_res = split["runs"]["auto"]
            local_walls = split["runs"]["local"][0]
            modes = [r["plan"]["mode"] for r in auto_res]
            return {
                "steps_parallel": {
                    "auto": {
                        "modes": modes,
                        "wall_s": [round(w, 3) for w in auto_walls],
                        "local_wall_s": [round(w, 3) for w in local_walls],
                        **auto_check(modes, auto_walls, local_walls),
                    }
                },
                "tile": {"auto": many["fused_auto"]},
                "settings": _settings_json(s),
                "quota_note": {"split": many["quota_note"]},
                "bench_s": round(time.perf_counter() - t0, 1),
            }
        one = _run_side(s, 1, False, logs)
    if s.skip_tile:
        part = steps_report(
            many["gen_peers"],
            one["gen_walls"],
            many["gen_walls"],
            one["gen_image"],
            many["gen_image"],
            many["parallel"],
            s.steps,
        )
        part["plan"] = many["gen_plan"]
        part.update(split_figures(many["steps_split"], one["gen_image"]))
        fpngs: dict[str, str] = {}
        return {
            "steps_parallel": part,
            "fused": fused_report(many["fused"], s, fpngs) if many["fused"] else None,
            **({"tile": {"auto": many["fused_auto"]}} if many["fused_auto"] else {}),
            "pngs": fpngs,
            "settings": _settings_json(s),
            "quota_note": {"split": many["quota_note"], "single": one["quota_note"]},
            "bench_s": round(time.perf_counter() - t0, 1),
        }
    pngs = {
        "steps_serial": _png(s.out / "steps_serial.png", one["gen_image"]),
        "steps_parallel": _png(s.out / "steps_parallel.png", many["gen_image"]),
        "steps_diff_x4": _png(
            s.out / "steps_diff_x4.png", diff_image(one["gen_image"], many["gen_image"])
        ),
        "tile_canvas": _png(s.out / "tile_canvas.png", many["canvas"]),
    }
    psnrs = {}
    for name, untiled in one["rep_images"].items():
        tiled = many["rep_images"][name]
        psnrs[name] = psnr(untiled, tiled)
        pngs[f"tile_{name}_untiled"] = _png(s.out / f"tile_{name}_untiled.png", untiled)
        pngs[f"tile_{name}_split"] = _png(s.out / f"tile_{name}_split.png", tiled)
        pngs[f"tile_{name}_diff_x4"] = _png(
            s.out / f"tile_{name}_diff_x4.png", diff_image(untiled, tiled)
        )
    steps_part = steps_report(
        many["gen_peers"],
        one["gen_walls"],
        many["gen_walls"],
        one["gen_image"],
        many["gen_image"],
        many["parallel"],
        s.steps,
    )
    steps_part["plan"] = many["gen_plan"]
    if not many["has_parallel_report"]:
        steps_part["missing"] = "the result carries no `parallel` report"
    steps_part.update(split_figures(many["steps_split"], one["gen_image"]))
    tile_part = tile_report(
        many["rep_peers"],
        one["rep_walls"],
        many["rep_walls"],
        psnrs,
        many["rep_bytes"] // len(psnrs),
        s.tile_steps,
    )
    if many["fused_auto"]:
        tile_part["auto"] = many["fused_auto"]
    return {
        "steps_parallel": steps_part,
        "tile": tile_part,
        "fused": fused_report(many["fused"], s, pngs) if many["fused"] else None,
        "settings": _settings_json(s),
        "quota_note": {"split": many["quota_note"], "single": one["quota_note"]},
        "psnr_note": 'PSNR of decoded uint8 images; "inf" means identical',
        "pngs": pngs,
        "logs": str(logs),
        "bench_s": round(time.perf_counter() - t0, 1),
    }


def _settings_json(s: Settings) -> dict[str, Any]:
    return {
        "peers": s.peers,
        "quota_cores": s.quota,
        "steps": s.steps,
        "repeats": s.repeats,
        "seed": s.seed,
        "label": s.label,
        "policy": s.policy,
        "parallel": s.parallel,
        "repair_label": s.repair_label,
        "tile_repeats": s.tile_repeats,
        "fused_steps": s.fused_steps,
        "auto_only": s.auto_only,
        "canvas": CANVAS,
        "engine": "onnx (peer default), 1 thread per peer",
    }


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BenchError(f"--repair-label must be an integer or none, got {text!r}") from None


def _parallel_arg(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchError(f"--parallel is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BenchError("--parallel must be a JSON object, e.g. '{\"segments\": 4}'")
    return value


def _cmd(args: argparse.Namespace) -> int:
    try:
        s = Settings(
            peers=args.peers,
            quota=args.quota,
            steps=args.steps,
            tile_steps=args.tile_steps,
            repeats=args.repeats,
            tile_repeats=args.tile_repeats,
            repair_label=None if args.repair_label == "none" else _int_arg(args.repair_label),
            seed=args.seed,
            label=args.label,
            out=Path(args.out),
            policy=args.policy,
            parallel=_parallel_arg(args.parallel),
            skip_tile=args.skip_tile or args.auto_only,
            auto_only=args.auto_only,
            fused_steps=args.fused_steps,
            fused_warmup=args.fused_warmup,
        )
        report = run(s)
    except (BenchError, ClusterError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if emit_json(report, args.json) else 2


def register(groups: dict[str, Any]) -> None:
    p = groups["bench"].add_parser(
        "shares",
        help="one image split over real peers (parallel steps, tiles) vs one peer: speedup, PSNR",
    )
    p.add_argument("--peers", type=int, default=4, help="peers of the split cluster (4)")
    p.add_argument("--quota", type=float, default=0.5, help="CPU cores per peer (0.5)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the generate (50)")
    p.add_argument("--tile-steps", type=int, default=4, help="steps of each repair (4)")
    p.add_argument("--tile-repeats", type=int, default=1, help="timed repairs per mask (1)")
    p.add_argument(
        "--repair-label",
        default="3",
        help="digit the repairs condition on, or none (every class: 10x the work); 3",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed requests after a warm-up (3)")
    p.add_argument("--seed", type=int, default=7, help="seed of every request (7)")
    p.add_argument("--label", type=int, default=3, help="digit of the generate (3)")
    p.add_argument("--out", default="bench-shares", help="directory for the PNGs")
    p.add_argument("--policy", default="equal", help="recruitment policy of every request (equal)")
    p.add_argument(
        "--parallel",
        default=None,
        help='the parallel requests\' options as JSON, e.g. \'{"segments": 4, "tolerance_db": 25}\'',
    )
    p.add_argument("--skip-tile", action="store_true", help="measure the steps share modes only")
    p.add_argument(
        "--auto-only",
        action="store_true",
        help="only what mode auto picks against local (generate and the fused-scale repairs, "
        "through HTTP on the split cluster); no single-peer cluster, no speedups",
    )
    p.add_argument(
        "--fused-steps", type=int, default=10, help="steps of each fused-tile repair (10; 0: none)"
    )
    p.add_argument(
        "--fused-warmup", type=int, default=0, help="whole-canvas steps before the hole25 split (0)"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default="-",
        help="the JSON is always printed; with a path it is also written there",
    )
    p.set_defaults(func=_cmd)
