"""``amcoedge scenario run FILE``: real peer processes, timed events, one workload per policy.

For each policy the runner starts a fresh local cluster (real processes on loopback, cgroup
CPU quotas where the machine allows), warms every peer up, then replays the scenario's seeded
schedule through the HTTP API of peers drawn at random among those up, applying the events
(SIGKILL, SIGTERM, restart, quota change) at their times. Every scheduled request is accounted
for: it either returns in time, or counts as failed with its error code (``deadline`` when it
took longer than the scenario's deadline). Writes ``results.json``, ``report.md`` and
``makespan.png`` (and ``timeline.png``, the slowest successful request of each policy, share by
share: ``peer.harness.timeline``) to the output directory. With ``--rounds N`` every policy
runs N times in rotated order and the figures are pooled, with paired ratios per round
(``peer.harness.rounds``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from peer.harness import linkwatch, netns
from peer.harness.client import Client, ClientError
from peer.harness.cluster import (
    ClusterError,
    ClusterSpec,
    LocalCluster,
    Place,
    http_json,
    sweep_cgroup_leftovers,
)
from peer.harness.records import request_figures
from peer.harness.rounds import paired, pool, round_orders, round_table
from peer.harness.rounds import report_lines as rounds_report
from peer.harness.rss import RssSampler
from peer.harness.scenario import LINK_ACTIONS, Event, Kind, Link, Planned, Scenario, schedule
from peer.harness.timeline import Panel, draw, panel_of

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


def run_scenario(sc: Scenario, out: Path, progress: bool = True, rounds: int = 1) -> dict[str, Any]:
    """Run every policy of ``sc`` on the same schedule, ``rounds`` times in rotated order
    (``peer.harness.rounds``); returns (and writes) the results."""
    out.mkdir(parents=True, exist_ok=True)
    plan = schedule(sc)
    t0 = time.perf_counter()
    orders = round_orders(sc.policies, rounds)
    per_round: list[dict[str, Any]] = []
    net = NetworkMode(sc)
    if progress:
        print(f"scenario {sc.name}: network {net.mode} ({net.why})", flush=True)
    try:
        for r, order in enumerate(orders):
            logs = out / "logs" if rounds == 1 else out / "logs" / f"round{r}"
            per_round.append({})
            for policy in order:
                if progress:
                    tag = f" (round {r + 1} of {rounds})" if rounds > 1 else ""
                    print(
                        f"scenario {sc.name}: policy {policy}{tag}, {len(plan)} requests",
                        flush=True,
                    )
                per_round[r][policy] = _run_policy(sc, plan, policy, logs / policy, net)
    finally:
        net.close()
    runs = (
        {p: per_round[0][p] for p in sc.policies if p in per_round[0]}
        if rounds == 1
        else pool(per_round)
    )
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
        "network": net.summary(runs),
        "requests": len(plan),
        "policies": runs,
        "links": {name: r["links"] for name, r in runs.items() if "links" in r},
        "prediction": linkwatch.prediction_summary(runs),
        "wall_s": round(time.perf_counter() - t0, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if rounds > 1:
        results["rounds"] = round_table(orders, per_round)
        results["paired"] = paired(per_round, sc.policies[0])
    panels = _timeline_panels(results)
    results["timeline_png"] = "timeline.png" if panels else None
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(render_report(results))
    _plot(results, out / "makespan.png")
    if panels:
        draw(panels, out / "timeline.png")
    return results


def _kind(k: Kind) -> dict[str, Any]:
    d: dict[str, Any] = {"mode": k.mode, "count": k.count, "steps": k.steps, "weight": k.weight}
    if k.request != "generate":
        d.update(request=k.request, size=k.size)
    return d


def _event(e: Event) -> dict[str, Any]:
    d: dict[str, Any] = {"at_s": e.at_s, "action": e.action, "what": e.describe()}
    if e.peer is not None:
        d["peer"] = f"p{e.peer}"
    if e.peers:
        d["peers"] = [f"p{i}" for i in e.peers]
    if e.cores is not None:
        d["cores"] = e.cores
    if e.link is not None:
        d["up_mbit"], d["down_mbit"] = e.link.up_mbit, e.link.down_mbit
    return d


def _run_policy(
    sc: Scenario, plan: list[Planned], policy: str, logs: Path, net: NetworkMode
) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    lock = threading.Lock()
    try:
        places = net.open()
    except netns.NetnsError as exc:
        net.close_policy()
        return {"error": f"network: {exc}", "records": records, "events_applied": applied}
    spec = ClusterSpec(
        peers=sc.peers,
        quotas=sc.quotas,
        threads=sc.threads,
        policy=policy,
        places=places,
        secret_file=net.secret_file,
        api_token_file=net.token_file,
    )
    cluster = LocalCluster(spec, logs)
    token = net.token
    rss = RssSampler(
        lambda: {
            p.name: (p.proc.pid if p.proc.poll() is None else None) for p in list(cluster.procs)
        }
    )
    watch = linkwatch.Watch(
        sc.peers,
        lambda i: http_json(cluster.procs[i].url + "/v1/cluster", timeout=2.0, token=token)[1],
    )
    start = time.perf_counter()
    halt = threading.Event()  # set when the run ends: the event thread applies nothing more
    ev_thread: threading.Thread | None = None
    try:
        cluster.start()
        watch.start()  # links, statuses: from the first second on
        cluster.wait_ready(timeout=300)  # a peer alone can take 75 s to start on a busy box
        for p in cluster.procs:  # one local request each: real cost models before the clock
            Client(p.url, timeout=120, token=token).generate(
                count=1, label=0, steps=5, seed=0, mode="local", policy="local"
            )
        time.sleep(1.0)
        up = _Live(sc.peers)
        events = list(sc.events)
        futures: list[Future[None]] = []
        rss.start()  # per-peer peak RSS; "first minute" counts from the workload's start
        start = time.perf_counter()
        # events on a thread of their own: a graceful stop waits up to 8 s for the peer to
        # drain, and the workload must not wait with it (requests go out at their times)
        ev_errors: list[BaseException] = []
        ev_thread = threading.Thread(
            target=_apply_all,
            args=(cluster, events, up, start, net, applied, ev_errors, halt),
            name="scenario-events",
            daemon=True,
        )
        ev_thread.start()
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            for req in plan:
                _sleep_until(start + req.at_s)
                alive = up.sorted()
                origin = alive[int(req.origin_u * len(alive))]
                url = cluster.procs[origin].url
                # the other live peers, from the next one round: where a request goes again
                # (same idempotency key) when its origin dies before answering
                k = alive.index(origin)
                others = tuple(cluster.procs[j].url for j in alive[k + 1 :] + alive[:k])
                sent = time.perf_counter() - start
                futures.append(
                    pool.submit(
                        _send, sc, req, policy, url, origin, sent, records, lock, token, others
                    )
                )
            ev_thread.join()
            if ev_errors:
                raise ev_errors[0]
            for f in futures:
                f.result()
        quota_note = cluster.quota_note
    except (ClusterError, netns.NetnsError) as exc:
        return {"error": str(exc), "records": records, "events_applied": applied}
    finally:
        halt.set()
        if ev_thread is not None:
            ev_thread.join(timeout=30.0)  # a stop in progress finishes before the teardown
        watch.stop()
        rss.stop()
        cluster.stop()
        net.close_policy()
    return {
        **_summarise(sc, records, applied, quota_note),
        "rss": rss.summary(),
        **_watched(sc, watch, start, applied, records),
    }


def _watched(
    sc: Scenario,
    watch: linkwatch.Watch,
    start: float,
    applied: list[dict[str, Any]],
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """What the peers believed during the run (``peer.harness.linkwatch``)."""
    names = [f"p{i}" for i in range(sc.peers)]
    rows = linkwatch.links_summary(watch.observations, start, sc.links, applied, names)
    return {
        "links": {"verdict": linkwatch.links_verdict(rows), "per_link": rows},
        "convergence": linkwatch.convergence(watch.observations, start, applied, sc.peers),
        "link_down_in_flight": linkwatch.loss_summary(records, applied),
        "polls": len(watch.observations),
    }


def _apply_all(
    cluster: LocalCluster,
    events: list[Event],
    up: _Live,
    start: float,
    net: NetworkMode,
    applied: list[dict[str, Any]],
    errors: list[BaseException],
    halt: threading.Event,
) -> None:
    """Apply ``events`` in order, each at its time, until ``halt`` is set."""
    try:
        for ev in events:
            if halt.wait(max(start + ev.at_s - time.perf_counter(), 0.0)):
                return
            applied.append(_apply(cluster, ev, up, start, net))
    except (ClusterError, netns.NetnsError) as exc:  # re-raised by the driver
        errors.append(exc)


def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _apply(
    cluster: LocalCluster, ev: Event, up: _Live, start: float, net: NetworkMode
) -> dict[str, Any]:
    _sleep_until(start + ev.at_s)
    done = _event(ev) | {"applied_at_s": round(time.perf_counter() - start, 3)}
    if ev.action in LINK_ACTIONS:
        done["result"] = net.apply(ev, up)
        return done
    assert ev.peer is not None  # every other action names one peer
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
    token: str | None = None,
    fallbacks: tuple[str, ...] = (),
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
    client = Client(url, timeout=sc.deadline_s + 30.0, token=token, fallbacks=fallbacks)
    try:
        if kind.request == "repair":
            image, mask = repair_canvas(kind.size, req.seed)
            res, wall = client.repair(
                image, mask, steps=kind.steps, seed=req.seed, mode=kind.mode, policy=policy
            )
        else:
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
        rec["mode"] = result["plan"]["mode"]
        rec["predicted_s"] = result["plan"]["predicted_makespan_s"]
        rec["timing"] = result["timing"]["peers"]
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
        if _timed_out(exc):  # the origin still works on it, past the deadline and the grace
            rec.update(
                ok=False,
                error="deadline",
                wall_s=client.timeout,
                wall_is_lower_bound=True,
                message=f"no answer within {client.timeout:.0f} s (deadline + 30 s)",
            )
        else:
            rec.update(ok=False, error="connection", message=str(exc)[:300])
    except (KeyError, TypeError, ValueError) as exc:  # a 200 whose body is not a job result
        rec.update(ok=False, error="bad_response", message=repr(exc)[:300])
    if client.retries:
        rec["retried"] = [{"from": r["from"], "to": r["to"]} for r in client.retries]
    with lock:
        records.append(rec)


def _timed_out(exc: OSError) -> bool:
    """Whether the client gave up waiting (rather than the origin refusing or resetting)."""
    reason = getattr(exc, "reason", None)
    return isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError)


def _summarise(
    sc: Scenario, records: list[dict[str, Any]], applied: list[dict[str, Any]], quota_note: str
) -> dict[str, Any]:
    records.sort(key=lambda r: r["index"])
    figures = request_figures(records)
    busy: dict[str, float] = {f"p{i}": 0.0 for i in range(sc.peers)}
    for r in records:
        for peer, s in r.get("busy_s", {}).items():
            busy[peer] = busy.get(peer, 0.0) + s
    span = max([sc.duration_s] + [r["sent_s"] + r.get("wall_s", 0.0) for r in records])
    return {
        **figures,
        "utilisation": {p: round(b / span, 4) for p, b in busy.items()},
        "replans": sum(r.get("replans", 0) for r in records),
        # sent again to another peer (same idempotency key) after its origin died
        "retried": sum(1 for r in records if r.get("retried")),
        # no answer at all (the connection died on every peer tried), or a body that is not one
        "lost": sum(1 for r in records if r.get("error") in ("connection", "bad_response")),
        "events_applied": applied,
        "quotas": quota_note,
        "records": records,
    }


def _rss_report(policies: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in policies.items():
        for peer, m in (r.get("rss") or {}).get("peers", {}).items():
            rows.append(
                f"| {name} | {peer} | {m['peak_rss_mib']} | {_f(m['peak_first_min_mib'], 1)} | "
                f"{_f(m['peak_over_first_min'], 3)} | {m['last_rss_mib']} | {m['processes']} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Peak resident memory per peer (MiB; sampled from /proc each second, VmHWM included)",
        "",
        "| policy | peer | peak | peak in first minute | ratio | last | processes |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


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
    lines += rounds_report(res)
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
            rnd = f" (round {ev['round']})" if "round" in ev else ""
            lines.append(
                f"- {name}{rnd}: {ev['what']} "
                f"(applied at {ev['applied_at_s']:g} s): {ev['result']}{ready}"
            )
    lines += _rss_report(res["policies"])
    first: dict[str, Any] = next(iter(res["policies"].values()), {})
    lines += ["", f"Compute heterogeneity: {first.get('quotas', 'unknown')}.", ""]
    lines += _network_report(res.get("network"))
    lines += _watch_report(res)
    if res.get("timeline_png"):
        lines += [
            "## Request timelines",
            "",
            "The slowest successful request of each policy, one bar per share: queue, transfer "
            "and compute seconds laid end to end from the share's start, the rest up to its end "
            "outlined; solid line: make-span at the origin, dashed: the plan's prediction.",
            "",
            f"![request timelines]({res['timeline_png']})",
            "",
        ]
    return "\n".join(lines)


def _timeline_panels(res: dict[str, Any]) -> list[Panel]:
    panels = []
    for name, r in res["policies"].items():
        ok = [x for x in r.get("records", []) if x.get("ok") and x.get("timing")]
        if not ok:
            continue
        rec = max(ok, key=lambda x: x["makespan_s"])
        title = (
            f"{name}: request {rec['index']} from {rec['origin']}, {rec['images']} images, "
            f"{rec['mode']} ({rec['makespan_s']:.3f} s)"
        )
        result = {
            "timing": {"makespan_s": rec["makespan_s"], "peers": rec["timing"]},
            "plan": {"predicted_makespan_s": rec["predicted_s"]},
        }
        try:
            panels.append(panel_of(result, title))
        except ValueError as exc:  # a result with inconsistent timings: say so, draw the rest
            res.setdefault("timeline_skipped", []).append(f"{name}: {exc}")
            print(f"scenario: timeline: {name} not drawn: {exc}", file=sys.stderr)
    return panels


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
    for pair, e in res.get("paired", {}).items():
        m, p = e["mean"], e["p95"]
        if m["median"] is not None:
            print(
                f"{pair}: mean {m['median']:.3f} [{m['min']:.3f}, {m['max']:.3f}], p95 "
                f"{p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] over {len(m['per_round'])} "
                "rounds (median [min, max])"
            )


def repair_canvas(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded ``size`` x ``size`` grey canvas and a mask over its central half (to repair)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    lo, hi = size // 4, size - size // 4
    mask[lo:hi, lo:hi] = 255
    return image, mask


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM does not cut a clean-up short (main thread only)."""
    try:
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        old = {}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


SECRETS_PREFIX = "amcoedge-scenario-"


def _sweep_secret_dirs() -> list[str]:
    """The key/token directories of runs whose process is gone (a crash), removed."""
    removed = []
    for d in Path(tempfile.gettempdir()).glob(f"{SECRETS_PREFIX}*-*"):
        pid = d.name.removeprefix(SECRETS_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists() or not d.is_dir():
            continue
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        removed.append(str(d))
    return removed


NO_DELAY = "none: `tc netem` does not exist in this kernel; latency is the real stack's"


class NetworkMode:
    """Where the peers run: loopback, or emulated machines (:mod:`peer.harness.netns`).

    With namespaced peers and root, every policy gets a fresh network (``open``), with the
    configured link rates, removed by name after it (``close_policy``, also on Ctrl-C); the
    leftovers of crashed runs (namespaces, links, quota cgroups) are removed first. The peers
    get a cluster key and an API token made with ``amcoedge secret new`` in a private temporary
    directory, deleted by ``close``. Without root (or where ``ip netns`` fails) every peer runs
    on loopback, and the summary says so.
    """

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.requested = "netns" if "netns" in sc.network else "loopback"
        self.secret_file: str | None = None
        self.token_file: str | None = None
        self.token: str | None = None
        self.addresses: list[str] = ["127.0.0.1"] * sc.peers
        self.left: list[str] = []  # names still present after a close (should stay empty)
        self.applied: dict[str, list[str]] = {}
        self._net: netns.Network | None = None
        self._partition: tuple[int, ...] = ()
        self._rates: list[Link] = list(sc.links)
        self._dir: Path | None = None
        self.leftovers = sweep_cgroup_leftovers() + _sweep_secret_dirs()
        if self.requested == "loopback":
            self.mode, self.why = "loopback", "every peer on 127.0.0.1 (peers.network)"
            return
        self.leftovers += netns.sweep_leftovers()
        ok, why = netns.available()
        if not ok:
            self.mode = "loopback"
            self.why = (
                f"fallback to loopback: emulated machines need root and `ip netns` ({why}); "
                "no link rates or link events applied"
            )
            return
        self.mode, self.why = "netns", why
        self._dir = Path(tempfile.mkdtemp(prefix=f"{SECRETS_PREFIX}{os.getpid()}-"))
        self.secret_file = self._secret("cluster.key")
        self.token_file = self._secret("api.token")
        self.token = Path(self.token_file).read_text().strip()

    def _secret(self, name: str) -> str:
        assert self._dir is not None
        path = self._dir / name
        cmd = [sys.executable, "-m", "peer", "secret", "new", str(path)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if res.returncode != 0:
            raise ClusterError(f"amcoedge secret new {path} failed: {res.stderr.strip()}")
        return str(path)

    def open(self) -> tuple[Place, ...] | None:
        """A fresh network for one policy; the peers' places (None: plain loopback)."""
        if self.mode != "netns":
            return None
        ns_peers = tuple(i for i, n in enumerate(self.sc.network) if n == "netns")
        self._net = netns.Network(ns_peers)
        plan = self._net.open()
        self._partition = ()
        self._rates = list(self.sc.links)
        for i in ns_peers:
            link = self.sc.links[i]
            if link.up_mbit is not None or link.down_mbit is not None:
                self._net.set_rate(i, link.up_mbit, link.down_mbit)
        places = []
        for i, where in enumerate(self.sc.network):
            if where == "netns":
                prefix = tuple(plan.exec_prefix(i))
                places.append(Place(plan.addr(i), netns.PEER_PORT, netns.HTTP_PORT, prefix))
            else:  # this namespace, on the bridge's address so the namespaced peers reach it
                places.append(Place(plan.root_addr))
        self.addresses = [p.host for p in places]
        return tuple(places)

    def apply(self, ev: Event, up: _Live) -> str:
        """Carry out a link event (``up``: the peers clients may use)."""
        if self._net is None or self._net.plan is None:
            return f"skipped: {self.why}"
        plan, net = self._net.plan, self._net
        if ev.action == "link":
            assert ev.peer is not None and ev.link is not None
            old = self._rates[ev.peer]
            new = Link(
                old.up_mbit if ev.link.up_mbit is None else ev.link.up_mbit,
                old.down_mbit if ev.link.down_mbit is None else ev.link.down_mbit,
            )
            net.set_rate(ev.peer, new.up_mbit, new.down_mbit)
            self._rates[ev.peer] = new
            return f"rate set: up {_mbit(new.up_mbit)}, down {_mbit(new.down_mbit)} Mbit/s"
        if ev.action == "partition":
            net.run(plan.partition(ev.peers))
            self._partition = ev.peers
            return "partitioned (silent drop between the two sides; the runner reaches all)"
        if ev.action == "heal":
            net.run(plan.heal(self._partition), check=False)
            self._partition = ()
            return "healed"
        assert ev.peer is not None
        if ev.action == "link_down":
            net.run(plan.link_down(ev.peer))
            up.discard(ev.peer)
            return "link down (silent drop); clients stop sending to it"
        net.run(plan.link_up(ev.peer))
        up.add(ev.peer)
        return "link up; clients send to it again"

    def close_policy(self) -> None:
        if self._net is not None:
            with _no_interrupts():
                self.left += self._net.close()
            self._net = None

    def close(self) -> None:
        self.close_policy()
        if self._dir is not None:
            with _no_interrupts():
                for f in self._dir.iterdir():
                    f.unlink()
                self._dir.rmdir()
            self._dir = None

    def summary(self, runs: dict[str, Any]) -> dict[str, Any]:
        applied = self.mode == "netns"
        peers = []
        for i, where in enumerate(self.sc.network):
            link: Link = self.sc.links[i]
            peers.append(
                {
                    "peer": f"p{i}",
                    "placement": where if applied else "loopback",
                    "address": self.addresses[i],
                    "up_mbit": link.up_mbit,  # None: not limited
                    "down_mbit": link.down_mbit,
                    "applied": applied and where == "netns",
                }
            )
        events = {
            name: [e for e in r.get("events_applied", []) if e["action"] in LINK_ACTIONS]
            for name, r in runs.items()
        }
        return {
            "mode": self.mode,
            "requested": self.requested,
            "why": self.why,
            "emulated_delay": NO_DELAY if applied else None,
            "peers": peers,
            "events_applied": events,
            "leftovers_removed_at_start": self.leftovers,
            "left_after_cleanup": self.left,
        }


def _watch_report(res: dict[str, Any]) -> list[str]:
    """Links as measured, predictions against make-spans, recovery (``peer.harness.linkwatch``)."""
    lines = ["## Measured links and predictions", ""]
    for name, links in res.get("links", {}).items():
        v = links["verdict"]
        lines.append(
            f"- {name}: {v['limited_within_30pct_at_end']} of {v['limited_links']} limited links "
            f"within ±30 % at the end, the slowest there after "
            f"{_f(v['first_within_30pct_s_max'], 1)} s ({v['never_within_30pct']} never); "
            f"unlimited links read at least {_f(v['unlimited_min_estimated_mbit'], 1)} Mbit/s "
            f"({_f(v['unlimited_over_fastest_limited'], 2)}x the fastest limited one)"
        )
    for mode, m in res.get("prediction", {}).get("per_mode", {}).items():
        lines.append(
            f"- {mode}: median |actual/predicted - 1| = {m['median_abs_error']:.3f} "
            f"over {m['requests']} requests (every policy)"
        )
    for name, r in res["policies"].items():
        for c in r.get("convergence", []):
            lines.append(
                f"- {name}: after the {c['action']} at {c['at_s']:g} s every peer held every "
                f"other alive after {_f(c['all_alive_after_s'], 1)} s"
            )
        for x in r.get("link_down_in_flight", []):
            lines.append(
                f"- {name}: request {x['request']} through {x['peer']} (link down at "
                f"{x['event_at_s']:g} s): {x['wall_s']:.2f} s against {x['predicted_s']:.2f} s "
                f"predicted ({x['replans']} replans)"
            )
    lines.append("")
    return lines


def _mbit(x: float | None) -> str:
    return "unlimited" if x is None else f"{x:g}"


def _network_report(net: dict[str, Any] | None) -> list[str]:
    if not net:
        return []
    lines = ["## Network", "", f"Mode: **{net['mode']}** ({net['why']})."]
    if net["mode"] == "netns":
        lines += [f"Emulated delay: {net['emulated_delay']}."]
    lines += [
        "",
        "| peer | placement | address | up Mbit/s | down Mbit/s | applied |",
        "|---|---|---|---|---|---|",
    ]
    for p in net["peers"]:
        lines.append(
            f"| {p['peer']} | {p['placement']} | {p['address']} | {_mbit(p['up_mbit'])} | "
            f"{_mbit(p['down_mbit'])} | {'yes' if p['applied'] else 'no'} |"
        )
    lines.append("")
    for name, evs in net["events_applied"].items():
        for ev in evs:
            lines.append(
                f"- {name}: {ev['what']} (applied at {ev['applied_at_s']:g} s): {ev['result']}"
            )
    if net["leftovers_removed_at_start"]:
        lines.append(
            f"- removed at start, left by a crashed run: {net['leftovers_removed_at_start']}"
        )
    if net["left_after_cleanup"]:
        lines.append(f"- NOT removed after the run: {net['left_after_cleanup']}")
    lines.append("")
    return lines
