"""Per-peer resident memory of local peer processes, sampled from ``/proc`` in a thread.

``RssSampler(procs_of)`` reads every ``period_s`` the ``VmRSS`` and ``VmHWM`` (the kernel's own
peak) of each peer's current process; a restarted peer is a new process, and its figures join
the same peer's. ``summary()`` gives, per peer, the peak over the run, the peak within the
first ``first_s`` seconds (the reference a soak compares against), the last sample and the
ratio of peak to first-minute peak. Where ``/proc`` is missing (not Linux), it says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def read_status_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process in KiB ({} when it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


@dataclass
class _Peer:
    peak_kib: int = 0
    first_peak_kib: int = 0
    last_kib: int = 0
    pids: set[int] = field(default_factory=set)
    samples: int = 0


class RssSampler:
    """Samples ``procs_of()`` -> {peer name: pid or None} until ``stop()``."""

    def __init__(
        self,
        procs_of: Callable[[], dict[str, int | None]],
        period_s: float = 1.0,
        first_s: float = 60.0,
    ) -> None:
        self.procs_of = procs_of
        self.period_s = period_s
        self.first_s = first_s
        self.available = Path("/proc/self/status").exists()
        self._peers: dict[str, _Peer] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()  # reset by start()

    def start(self) -> None:
        self._t0 = time.monotonic()
        if self.available:
            self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
            self._thread.start()

    def sample(self) -> None:
        elapsed = time.monotonic() - self._t0
        for name, pid in self.procs_of().items():
            if pid is None:
                continue
            st = read_status_kib(pid)
            if not st:
                continue
            p = self._peers.setdefault(name, _Peer())
            p.pids.add(pid)
            p.samples += 1
            rss = st.get("VmRSS", 0)
            p.last_kib = rss
            p.peak_kib = max(p.peak_kib, rss, st.get("VmHWM", 0))
            if elapsed <= self.first_s:
                p.first_peak_kib = max(p.first_peak_kib, rss, st.get("VmHWM", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def summary(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "why": "no /proc on this machine"}
        peers = {}
        for name, p in sorted(self._peers.items()):
            first = p.first_peak_kib
            peers[name] = {
                "peak_rss_mib": round(p.peak_kib / 1024, 1),
                "peak_first_min_mib": round(first / 1024, 1) if first else None,
                "last_rss_mib": round(p.last_kib / 1024, 1),
                "peak_over_first_min": round(p.peak_kib / first, 3) if first else None,
                "processes": len(p.pids),
                "samples": p.samples,
            }
        return {
            "available": True,
            "period_s": self.period_s,
            "first_s": self.first_s,
            "peers": peers,
        }


# -- ``amcoedge bench rss``: peak RSS of real peers under concurrent load -----------------------

LIMIT_MIB = 1024  # the bound on a peer's peak RSS


def _repair_body(side: int, steps: int, label: int | None) -> dict[str, Any]:
    """A ``side`` x ``side`` canvas (the digits data set, tiled) with its centre masked."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (side, side), dtype=np.uint8)
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255

    def png(a: Any) -> str:
        buf = io.BytesIO()
        Image.fromarray(a, mode="L").save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    body: dict[str, Any] = {
        "image": png(img),
        "mask": png(mask),
        "mode": "tile",
        "steps": steps,
        "seed": 1,
    }
    if label is not None:
        body["label"] = label
    return body


def run_bench(
    peers: int = 3,
    requests: int = 120,
    count: int = 2,
    steps: int = 10,
    canvas: int = 128,
    repair_label: int | None = None,
    settle_s: float = 5.0,
    period_s: float = 0.25,
    extra_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start ``peers`` real peers, send ``requests`` generate requests at once (round robin over
    the peers) together with one ``canvas`` x ``canvas`` tile repair, and sample every peer's
    RSS from ``/proc`` throughout; then wait ``settle_s`` and read the RSS after."""
    import tempfile
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from peer.harness.cluster import ClusterSpec, LocalCluster, http_json

    logs = Path(tempfile.mkdtemp(prefix="amcoedge-rss-"))
    spec = ClusterSpec(peers=peers, extra_args=extra_args)
    outcomes: Counter[str] = Counter()
    repair: dict[str, Any] = {}
    with LocalCluster(spec, logs) as cluster:
        cluster.wait_ready(timeout=300.0)  # one peer alone took 105 s to start at load 12
        sampler = RssSampler(
            lambda: {p.name: p.proc.pid for p in cluster.procs}, period_s, first_s=0.0
        )
        sampler.sample()
        before = {n: p["last_rss_mib"] for n, p in sampler.summary()["peers"].items()}
        sampler.start()
        urls = [p.url for p in cluster.procs]

        def generate(i: int) -> str:
            body = {"count": count, "steps": steps, "seed": i, "mode": "auto"}
            try:
                status, got = http_json(urls[i % len(urls)] + "/v1/generate", body, timeout=900)
            except OSError as exc:
                return f"connection:{type(exc).__name__}"
            if status == 200:
                return "served"
            return f"{status}:{(got or {}).get('error', {}).get('code', '?')}"

        def tile_repair() -> str:
            t0 = time.monotonic()
            body = _repair_body(canvas, steps, repair_label)
            status, got = http_json(urls[0] + "/v1/repair", body, timeout=900)
            repair["seconds"] = round(time.monotonic() - t0, 2)
            repair["status"] = status
            if status == 200:
                plan = got["result"]["plan"]
                repair["mode"] = plan.get("mode")
                repair["peers"] = sorted({s.get("peer") for s in plan.get("shares", [])} - {None})
                return "served"
            repair["error"] = (got or {}).get("error")
            return f"{status}:{(got or {}).get('error', {}).get('code', '?')}"

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=requests + 1) as pool:
            futs = [pool.submit(tile_repair)] + [pool.submit(generate, i) for i in range(requests)]
            results = [f.result() for f in futs]
        load_s = time.monotonic() - t0
        outcomes.update(results[1:])
        time.sleep(settle_s)
        sampler.sample()
        sampler.stop()
        health = {}
        for p in cluster.procs:
            try:
                _, h = http_json(p.url + "/healthz", timeout=5.0)
                health[p.name] = h.get("memory")
            except (OSError, ValueError):
                health[p.name] = None
    summary = sampler.summary()
    per_peer = {}
    for name, p in summary.get("peers", {}).items():
        per_peer[name] = {
            "before_mib": before.get(name),
            "peak_rss_mib": p["peak_rss_mib"],
            "after_mib": p["last_rss_mib"],
            "memory": health.get(name),
        }
    peaks = [p["peak_rss_mib"] for p in per_peer.values()]
    return {
        "bench": "rss",
        "available": summary.get("available", False),
        "peers": peers,
        "requests": requests,
        "count": count,
        "steps": steps,
        "canvas": canvas,
        "repair_label": repair_label,
        "load_s": round(load_s, 2),
        "generate_outcomes": dict(outcomes),
        "repair": repair,
        "per_peer": per_peer,
        "max_peak_rss_mib": max(peaks) if peaks else None,
        "limit_mib": LIMIT_MIB,
        "under_limit": bool(peaks) and max(peaks) < LIMIT_MIB,
        "logs": str(logs),
    }


def _cmd(args: Any) -> int:
    from amcoedge.output import emit_json

    report = run_bench(
        peers=args.peers,
        requests=args.requests,
        count=args.count,
        steps=args.steps,
        canvas=args.canvas,
        repair_label=args.repair_label,
        settle_s=args.settle,
    )
    ok = emit_json(report, args.json)
    return 0 if ok and report["under_limit"] else 1


def register(groups: dict[str, Any]) -> None:
    p = groups["bench"].add_parser(
        "rss",
        help="peak RSS of real peers through N concurrent requests and a large tile repair",
    )
    p.add_argument("--peers", type=int, default=3, help="local peers (default 3)")
    p.add_argument("--requests", type=int, default=120, help="concurrent generates (120)")
    p.add_argument("--count", type=int, default=2, help="images per generate (2)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps (10)")
    p.add_argument("--canvas", type=int, default=128, help="tile repair canvas side (128)")
    p.add_argument(
        "--repair-label", type=int, default=None, help="repair label (default: none, every class)"
    )
    p.add_argument("--settle", type=float, default=5.0, help="seconds before the RSS after (5)")
    p.add_argument("--json", help="write the report here as well")
    p.set_defaults(func=_cmd)
