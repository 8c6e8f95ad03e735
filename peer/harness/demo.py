"""``amcoedge demo``: a local 4-peer cluster with unequal CPU quotas, every policy and mode.

Sends an 8-image ``batch`` generate to each peer in turn, a ``tile`` repair and a ``steps``
request to random peers, under each policy; prints the make-span table (policy x mode) and
label agreement; writes the images, a per-peer timeline chart and ``results.json`` to the
output directory.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from peer.harness.client import Client, ClientError, decode_images
from peer.harness.cluster import ClusterError, ClusterSpec, LocalCluster

POLICY_ORDER = ("onnx", "greedy", "random", "equal", "local")
DEMO_QUOTAS = (1.0, 0.5, 0.25, 0.25)
TARGET_RATIO = 0.8


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="demo requests", file=sys.stderr, leave=False)


def _label_agreement(images: list[np.ndarray], labels: list[int]) -> float | None:
    """Share of images the digit scorer (peer.diffusion.quality) reads as the asked label."""
    from peer.diffusion.quality import DigitScorer

    global _SCORER
    if _SCORER is None:
        _SCORER = DigitScorer.fit(size=images[0].shape[0])
    return float(_SCORER.agreement(np.stack(images), np.asarray(labels))["agreement"])


_SCORER: Any = None


def _repair_canvas(client: Client, steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A 32x32 canvas of four generated digits; the top-left one is masked out (to redraw)."""
    res, _ = client.generate(
        count=4, label=None, steps=steps, seed=123, mode="local", policy="local"
    )
    imgs = decode_images(res["result"])
    canvas = np.block([[imgs[0], imgs[1]], [imgs[2], imgs[3]]]).astype(np.uint8)
    mask = np.zeros_like(canvas)
    mask[3:13, 3:13] = 255
    return canvas, mask, int(res["result"]["labels"][0])


def run_demo(
    *,
    out: Path,
    peers: int = 4,
    steps: int = 20,
    rounds: int = 1,
    use_quotas: bool = True,
    json_path: str | None = None,
    model: str | None = None,
    engine: str = "onnx",
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    spec = ClusterSpec(
        peers=peers,
        quotas=DEMO_QUOTAS if use_quotas else None,
        extra_args=(*(("--model", model) if model else ()), "--engine", engine),
    )
    t_start = time.perf_counter()
    cluster = LocalCluster(spec, out / "logs")
    try:
        cluster.start()
        print(f"demo: starting {peers} peers; {cluster.quota_note}", flush=True)
        cluster.wait_ready(timeout=120)
        clients = [Client(p.url, timeout=120) for p in cluster.procs]
        # one local warm-up request per peer: the cost models see a real run under their quota
        for c in clients:
            c.generate(count=8, label=0, steps=steps, seed=1, mode="local", policy="local")
        time.sleep(1.0)  # a few gossip rounds so every peer sees fresh capacities
        results = _run_requests(clients, steps, rounds, out)
    except (ClusterError, ClientError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    results["setup"] = {
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "peers": peers,
        "steps": steps,
        "rounds": rounds,
        "quotas": cluster.quota_note,
        "wall_s": round(time.perf_counter() - t_start, 2),
    }
    _print_table(results)
    _timeline_chart(results, out / "timeline.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
    print(f"demo: images, timeline.png and results.json in {out}/ ({results['setup']['wall_s']} s)")
    return 0


def _run_requests(clients: list[Client], steps: int, rounds: int, out: Path) -> dict[str, Any]:
    rng = random.Random(7)
    canvas, mask, label0 = _repair_canvas(clients[0], steps)
    from PIL import Image

    Image.fromarray(canvas, mode="L").save(out / "repair-input.png")
    Image.fromarray(mask, mode="L").save(out / "repair-mask.png")
    n = len(clients)
    bar = _progress(len(POLICY_ORDER) * (rounds * n + 2))
    rows: dict[str, Any] = {}
    for policy in POLICY_ORDER:
        batch: list[dict[str, Any]] = []
        images: list[np.ndarray] = []
        labels: list[int] = []
        for r in range(rounds):
            for i, c in enumerate(clients):
                label = (i + r) % 10
                res, wall = c.generate(
                    count=8,
                    label=label,
                    steps=steps,
                    seed=1000 + 10 * i + r,
                    mode="batch",
                    policy=policy,
                )
                batch.append(_summary(res, wall, f"p{i}"))
                imgs = decode_images(res["result"])
                images += imgs
                labels += res["result"]["labels"]
                bar.update(1)
        _save_grid(images[:32], out / f"batch-{policy}.png")
        ti = rng.randrange(n)
        res, wall = clients[ti].repair(
            canvas, mask, steps=steps, seed=5, mode="tile", policy=policy, label=label0
        )
        tile = _summary(res, wall, f"p{ti}")
        Image.fromarray(decode_images(res["result"])[0], mode="L").save(
            out / f"repair-tile-{policy}.png"
        )
        bar.update(1)
        si = rng.randrange(n)
        res, wall = clients[si].generate(
            count=1, label=3, steps=steps, seed=77, mode="steps", policy=policy
        )
        chain = _summary(res, wall, f"p{si}")
        Image.fromarray(decode_images(res["result"])[0], mode="L").save(out / f"steps-{policy}.png")
        bar.update(1)
        rows[policy] = {
            "batch": batch,
            "tile": tile,
            "steps": chain,
            "batch_mean_makespan_s": statistics.fmean(b["makespan_s"] for b in batch),
            "label_agreement": _label_agreement(images, labels),
        }
    bar.close()
    local = rows["local"]["batch_mean_makespan_s"]
    for row in rows.values():
        row["batch_ratio_vs_local"] = row["batch_mean_makespan_s"] / local if local > 0 else None
    onnx_ratio = rows["onnx"]["batch_ratio_vs_local"]
    return {
        "policies": rows,
        "onnx_vs_local": onnx_ratio,
        "target": TARGET_RATIO,
        "pass": onnx_ratio is not None and onnx_ratio <= TARGET_RATIO,
    }


def _summary(res: dict[str, Any], wall: float, origin: str) -> dict[str, Any]:
    result = res["result"]
    plan, timing = result["plan"], result["timing"]
    return {
        "origin": origin,
        "makespan_s": timing["makespan_s"],
        "predicted_s": plan["predicted_makespan_s"],
        "client_wall_s": round(wall, 6),
        "mode": plan["mode"],
        "policy": plan["policy"],
        "provider": plan["provider"],
        "fallback": plan["fallback"],
        "peers": plan["peers"],
        "units": [
            len(s["units"]) if s["units"] else (s["steps"][1] - s["steps"][0])
            for s in plan["shares"]
        ],
        "timing": timing["peers"],
        "replans": result.get("replans", []),
    }


def _save_grid(images: list[np.ndarray], path: Path) -> None:
    if not images:
        return
    from PIL import Image

    cols = 8
    rows = (len(images) + cols - 1) // cols
    h, w = images[0].shape
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    Image.fromarray(grid, mode="L").resize(
        (cols * w * 4, rows * h * 4), Image.Resampling.NEAREST
    ).save(path)


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def _print_table(results: dict[str, Any]) -> None:
    setup = results["setup"]
    print()
    print(f"make-span (s) per policy and mode; {setup['quotas']}")
    print(f"machine: {setup['cpus']} CPUs, 1-minute load average {setup['load_average_1m']}")
    print(
        f"{'policy':<8} {'batch(8) mean':>13} {'vs local':>9} {'tile':>7} {'steps':>7} {'label agr.':>10}  provider / peers in batch plans"
    )
    for policy, row in results["policies"].items():
        peers_used = sorted({len(b["peers"]) for b in row["batch"]})
        agr = row["label_agreement"]
        prov = row["batch"][0]["provider"]
        fb = " (fallback)" if any(b["fallback"] for b in row["batch"]) else ""
        print(
            f"{policy:<8} {row['batch_mean_makespan_s']:>13.3f} {_fmt(row['batch_ratio_vs_local']):>9} "
            f"{row['tile']['makespan_s']:>7.3f} {row['steps']['makespan_s']:>7.3f} "
            f"{('-' if agr is None else f'{agr:.2f}'):>10}  {prov}{fb} / {peers_used}"
        )
    verdict = "PASS" if results["pass"] else "FAIL"
    print(
        f"onnx / local batch make-span: {results['onnx_vs_local']:.3f} "
        f"(target <= {results['target']}) {verdict}"
    )


def _timeline_chart(results: dict[str, Any], path: Path) -> None:
    """The slowest 8-image batch of each policy, share by share (``peer.harness.timeline``)."""
    from peer.harness.timeline import draw, panel_of

    panels = []
    for policy, row in results["policies"].items():
        req = max(row["batch"], key=lambda b: b["makespan_s"])
        result = {
            "timing": {"makespan_s": req["makespan_s"], "peers": req["timing"]},
            "plan": {"predicted_makespan_s": req["predicted_s"]},
        }
        title = f"{policy}: slowest 8-image batch from {req['origin']} ({req['makespan_s']:.3f} s)"
        panels.append(panel_of(result, title))
    draw(panels, path)
