"""``amcoedge scenario run FILE``: real peer processes, timed events, one workload per policy.

For each policy the runner starts a fresh local cluster (real processes on loopback, cgroup
CPU quotas where the machine allows), warms every peer up, then replays the scenario's seeded
schedule through the HTTP API of peers drawn at random among those up, applying the events
(SIGKILL, SIGTERM, restart, quota change) at their times. Every scheduled request is accounted
for: it either returns in time, or counts as failed with its error code (``deadline`` when it
took longer than the scenario's deadline). Writes ``results.json``, ``report.md`` and
``makespan.png`` to the output directory.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from amcoedge.stats import percentile
from peer.harness.client import Client, ClientError
from peer.harness.cluster import ClusterError, ClusterSpec, LocalCluster, http_json
from peer.harness.scenario import Event, Kind, Planned, Scenario, schedule

MAX_IN_FLIGHT = 32  # client threads per policy run; later arrivals wait for a free one


class _Live:
    """The peers clients may use; the readiness thread adds to it while the driver reads."""

    def __init__(self, n: int) -> None:
        self._lock = threading.Lock()
        self._up = set(range(n))

    def add(self, i: int) -> None:
        with self._lock:
            self._up.add(i)

    def discard(self, i: int) -> None:
        with self._lock:
            self._up.discard(i)

    def sorted(self) -> list[int]:
        with self._lock:
            return sorted(self._up)


def run_scenario(sc: Scenario, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run every policy of ``sc`` on the same schedule; returns (and writes) the results."""
    out.mkdir(parents=True, exist_ok=True)
    plan = schedule(sc)
    t0 = time.perf_counter()
    runs: dict[str, Any] = {}
    for policy in sc.policies:
        if progress:
            print(f"scenario {sc.name}: policy {policy}, {len(plan)} requests", flush=True)
        runs[policy] = _run_policy(sc, plan, policy, out / "logs" / policy)
    results = {
        "scenario": sc.name,
        "seed": sc.seed,
        "peers": sc.peers,
        "quotas": list(sc.quotas) if sc.quotas else None,
        "duration_s": sc.duration_s,
        "rate_per_s": sc.rate_per_s,
        "deadline_s": sc.deadline_s,
        "kinds": [_kind(k) for k in sc.kinds],
        "events": [_event(e) for e in sc.events],
        "requests": len(plan),
        "policies": runs,
        "wall_s": round(time.perf_counter() - t0, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(render_report(results))
    _plot(results, out / "makespan.png")
    return results


def _kind(k: Kind) -> dict[str, Any]:
    return {"mode": k.mode, "count": k.count, "steps": k.steps, "weight": k.weight}


def _event(e: Event) -> dict[str, Any]:
    d: dict[str, Any] = {"at_s": e.at_s, "action": e.action, "peer": f"p{e.peer}"}
    if e.cores is not None:
        d["cores"] = e.cores
    return d


def _run_policy(sc: Scenario, plan: list[Planned], policy: str, logs: Path) -> dict[str, Any]:
    spec = ClusterSpec(peers=sc.peers, quotas=sc.quotas, threads=sc.threads, policy=policy)
    cluster = LocalCluster(spec, logs)
    records: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    lock = threading.Lock()
    try:
        cluster.start()
        cluster.wait_ready(timeout=120)
        for p in cluster.procs:  # one local request each: real cost models before the clock
            Client(p.url, timeout=120).generate(
                count=1, label=0, steps=5, seed=0, mode="local", policy="local"
            )
        time.sleep(1.0)
        up = _Live(sc.peers)
        events = list(sc.events)
        futures: list[Future[None]] = []
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            for req in plan:
                while events and events[0].at_s <= req.at_s:
                    applied.append(_apply(cluster, events.pop(0), up, start))
                _sleep_until(start + req.at_s)
                alive = up.sorted()
                origin = alive[int(req.origin_u * len(alive))]
                url = cluster.procs[origin].url
                sent = time.perf_counter() - start
                futures.append(
                    pool.submit(_send, sc, req, policy, url, origin, sent, records, lock)
                )
            while events:
                ev = events.pop(0)
                _sleep_until(start + ev.at_s)
                applied.append(_apply(cluster, ev, up, start))
            for f in futures:
                f.result()
        quota_note = cluster.quota_note
    except ClusterError as exc:
        return {"error": str(exc), "records": records, "events_applied": applied}
    finally:
        cluster.stop()
    return _summarise(sc, records, applied, quota_note)


def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _apply(cluster: LocalCluster, ev: Event, up: _Live, start: float) -> dict[str, Any]:
    _sleep_until(start + ev.at_s)
    done = _event(ev) | {"applied_at_s": round(time.perf_counter() - start, 3)}
    if ev.action in ("crash", "stop"):
        up.discard(ev.peer)
        cluster.kill(ev.peer, graceful=ev.action == "stop")
        done["result"] = "killed" if ev.action == "crash" else "stopped"
    elif ev.action == "restart":
        cluster.restart(ev.peer)
        done["result"] = "restarted"
        # clients route to it once its HTTP API answers, as a load balancer would
        threading.Thread(
            target=_admit_when_ready, args=(cluster, ev.peer, up, start, done), daemon=True
        ).start()
    else:
        assert ev.cores is not None
        done["result"] = (
            "quota set" if cluster.set_quota(ev.peer, ev.cores) else "skipped: no quotas here"
        )
    return done


def _admit_when_ready(
    cluster: LocalCluster, i: int, up: _Live, start: float, done: dict[str, Any]
) -> None:
    url = cluster.procs[i].url + "/healthz"
    deadline = time.perf_counter() + 120.0
    while time.perf_counter() < deadline:
        try:
            status, _ = http_json(url, timeout=1.0)
        except (OSError, ValueError):
            status = 0
        if status == 200:
            up.add(i)
            done["ready_at_s"] = round(time.perf_counter() - start, 3)
            return
        if cluster.procs[i].proc.poll() is not None:
            done["result"] = "restarted, but exited before serving (or the run ended first)"
            return
        time.sleep(0.2)
    done["result"] = "restarted, but never answered /healthz within 120 s"


def _send(
    sc: Scenario,
    req: Planned,
    policy: str,
    url: str,
    origin: int,
    sent: float,
    records: list[dict[str, Any]],
    lock: threading.Lock,
) -> None:
    kind = sc.kinds[req.kind]
    rec: dict[str, Any] = {
        "index": req.index,
        "at_s": round(req.at_s, 4),
        "sent_s": round(sent, 4),
        "origin": f"p{origin}",
        "kind": req.kind,
        "images": kind.count,
    }
    client = Client(url, timeout=sc.deadline_s + 30.0)
    try:
        res, wall = client.generate(
            count=kind.count,
            label=req.label,
            steps=kind.steps,
            seed=req.seed,
            mode=kind.mode,
            policy=policy,
        )
        result = res["result"]
        rec["wall_s"] = round(wall, 6)
        rec["makespan_s"] = result["timing"]["makespan_s"]
        rec["peers"] = result["plan"]["peers"]
        rec["replans"] = len(result.get("replans", []))
        rec["busy_s"] = {
            t["peer"]: t["compute_s"] for t in result["timing"]["peers"] if t.get("compute_s")
        }
        rec["ok"] = wall <= sc.deadline_s
        if not rec["ok"]:
            rec["error"] = "deadline"
    except ClientError as exc:
        rec.update(ok=False, error=exc.code, message=str(exc)[:300])
    except OSError as exc:  # refused, reset, timed out: the origin died or hung
        rec.update(ok=False, error="connection", message=str(exc)[:300])
    except (KeyError, TypeError, ValueError) as exc:  # a 200 whose body is not a job result
        rec.update(ok=False, error="bad_response", message=repr(exc)[:300])
    with lock:
        records.append(rec)


def _summarise(
    sc: Scenario, records: list[dict[str, Any]], applied: list[dict[str, Any]], quota_note: str
) -> dict[str, Any]:
    records.sort(key=lambda r: r["index"])
    ok = [r for r in records if r["ok"]]
    walls = sorted(r["wall_s"] for r in ok)
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    busy: dict[str, float] = {f"p{i}": 0.0 for i in range(sc.peers)}
    for r in records:
        for peer, s in r.get("busy_s", {}).items():
            busy[peer] = busy.get(peer, 0.0) + s
    span = max([sc.duration_s] + [r["sent_s"] + r.get("wall_s", 0.0) for r in records])
    return {
        "requests": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "failure_rate": (len(records) - len(ok)) / len(records) if records else 0.0,
        "errors": errors,
        "makespan_mean_s": statistics.fmean(walls) if walls else None,
        "makespan_p50_s": percentile(walls, 50),
        "makespan_p95_s": percentile(walls, 95),
        "utilisation": {p: round(b / span, 4) for p, b in busy.items()},
        "mean_peers_per_request": statistics.fmean(len(r["peers"]) for r in ok) if ok else None,
        "replans": sum(r.get("replans", 0) for r in records),
        "events_applied": applied,
        "quotas": quota_note,
        "records": records,
    }


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_report(res: dict[str, Any]) -> str:
    lines = [
        f"# Scenario `{res['scenario']}`",
        "",
        f"{res['peers']} peers, quotas {res['quotas'] or 'none'}; Poisson arrivals at "
        f"{res['rate_per_s']:g}/s for {res['duration_s']:g} s ({res['requests']} requests, seed "
        f"{res['seed']}); deadline {res['deadline_s']:g} s; load average at the end "
        f"{res['load_average_1m']}; wall {res['wall_s']} s.",
        "",
        "Make-span: client wall time of the successful requests. Failed: an error, or slower "
        "than the deadline.",
        "",
        "| policy | ok / requests | failure rate | mean s | p50 s | p95 s | peers per request "
        "| replans | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["policies"].items():
        if "error" in r:
            lines.append(f"| {name} | cluster failed: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['ok']} / {r['requests']} | {r['failure_rate']:.3f} | "
            f"{_f(r['makespan_mean_s'])} | {_f(r['makespan_p50_s'])} | "
            f"{_f(r['makespan_p95_s'])} | {_f(r['mean_peers_per_request'], 2)} | {r['replans']} | "
            f"{r['errors'] or ''} |"
        )
    lines += ["", "## Per-peer utilisation (compute seconds over the run's span)", ""]
    peers = [f"p{i}" for i in range(res["peers"])]
    lines += ["| policy | " + " | ".join(peers) + " |", "|---|" + "---|" * len(peers)]
    for name, r in res["policies"].items():
        if "utilisation" in r:
            u = r["utilisation"]
            lines.append(f"| {name} | " + " | ".join(f"{u.get(p, 0):.2f}" for p in peers) + " |")
    lines += ["", "## Events", ""]
    for name, r in res["policies"].items():
        for ev in r.get("events_applied", []):
            ready = f", serving again at {ev['ready_at_s']:g} s" if "ready_at_s" in ev else ""
            lines.append(
                f"- {name}: {ev['action']} {ev['peer']} at {ev['at_s']:g} s "
                f"(applied at {ev['applied_at_s']:g} s): {ev['result']}{ready}"
            )
    first: dict[str, Any] = next(iter(res["policies"].values()), {})
    lines += ["", f"Compute heterogeneity: {first.get('quotas', 'unknown')}.", ""]
    return "\n".join(lines)


def _plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in res["policies"].items():
        walls = sorted(x["wall_s"] for x in r.get("records", []) if x.get("ok"))
        if walls:
            ys = [(i + 1) / r["requests"] for i in range(len(walls))]
            ax.step(walls, ys, where="post", label=name)
    ax.set_xlabel("make-span (s)")
    ax.set_ylabel("share of requests done")
    ax.set_title(f"scenario {res['scenario']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(res: dict[str, Any]) -> None:
    for name, r in res["policies"].items():
        if "error" in r:
            print(f"{name:8s} cluster failed: {r['error']}", file=sys.stderr)
            continue
        print(
            f"{name:8s} ok {r['ok']:3d}/{r['requests']:<3d} fail {r['failure_rate']:.3f} "
            f"mean {_f(r['makespan_mean_s'])} s  p95 {_f(r['makespan_p95_s'])} s  "
            f"errors {r['errors'] or '-'}"
        )
