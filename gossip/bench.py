"""The virtual-time gossip benchmark: join, dissemination, crash detection, false positives, load.

One seeded simulation in phases:
1. join: every peer starts within the first 0.2 s with peer 0 as its seed; convergence is the
   first time every peer lists every other peer as alive;
2. dissemination: one peer at a time changes its load; the time until every other peer holds
   that digest version;
3. steady state: `steady_s` of background load changes (`meta_rate` per peer per second) with no
   faults: any peer declared dead is a false positive; bytes sent per peer per second; every
   `age_every_s` each peer's held load of `age_pairs` random others is read: `load_age_s` is
   how old that load was (now minus when the source's load was last known to have that value:
   a sample's origin, or a digest's arrival), p50 and p95 over all readings. At each reading
   one random peer also does what an origin does before it plans: it asks `refresh_sample`
   random others for their load directly (one round trip, `refresh_wait_s` at most) and then
   reads the load it holds of every live other: `planner_load_age_s` (all the candidates a
   planner weighs) and `refreshed_load_age_s` (those it asked);
4. crashes: one peer at a time stops answering: time to the first suspicion anywhere and until
   every live peer marks it dead.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from gossip.config import GossipConfig
from gossip.effects import Notify
from gossip.sim import NetConfig, SimCluster


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k], 4)


class _Tracker:
    """Follows Notify effects from every peer to time the phases."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.live: list[set[str]] = [set() for _ in range(n)]
        self.full = 0
        self.crashed: set[str] = set()
        self.false_dead: list[tuple[float, int, str]] = []
        self.false_suspect = 0
        self.meta_watch: tuple[str, int, float, set[int]] | None = None
        self.meta_done: float | None = None
        self.crash_watch: tuple[str, float, set[int]] | None = None
        self.first_suspect: float | None = None
        self.crash_done: float | None = None

    def __call__(self, i: int, e: Notify, now: float) -> None:
        live = self.live[i]
        if e.status == "alive" or e.status == "suspect":
            if e.name not in live:
                live.add(e.name)
                if len(live) == self.n - 1:
                    self.full += 1
        elif e.name in live:
            if len(live) == self.n - 1:
                self.full -= 1
            live.discard(e.name)
        if e.name not in self.crashed:
            if e.status == "dead":
                self.false_dead.append((now, i, e.name))
            elif e.status == "suspect":
                self.false_suspect += 1
        mw = self.meta_watch
        if mw is not None and e.name == mw[0] and e.meta_version >= mw[1]:
            mw[3].discard(i)
            if not mw[3] and self.meta_done is None:
                self.meta_done = now - mw[2]
        cw = self.crash_watch
        if cw is not None and e.name == cw[0]:
            if e.status == "suspect" and self.first_suspect is None:
                self.first_suspect = now - cw[1]
            if e.status in ("dead", "left"):
                cw[2].discard(i)
                if not cw[2] and self.crash_done is None:
                    self.crash_done = now - cw[1]


def run_sim_bench(
    n: int,
    loss: float,
    seed: int,
    config: GossipConfig | None = None,
    steady_s: float = 600.0,
    meta_changes: int = 20,
    crashes: int = 9,
    meta_rate: float = 0.02,
    progress: Callable[[str, float], None] | None = None,
    age_every_s: float = 1.0,
    age_pairs: int = 10,
    refresh_sample: int = 16,  # peer.runtime.node.REFRESH_SAMPLE
    refresh_wait_s: float = 0.1,  # peer.runtime.node.REFRESH_MAX_S
    secret: bytes | None = None,
) -> dict[str, Any]:
    cfg = config or GossipConfig.lan()
    rng = random.Random(seed)
    track = _Tracker(n)
    cluster = SimCluster(n, cfg, NetConfig(loss=loss), seed=seed, secret=secret, on_notify=track)
    cpu0 = time.process_time()
    report = progress or (lambda phase, t: None)

    # 1. join
    for i in range(n):
        cluster.start(i, [0] if i else [], at=rng.uniform(0.0, 0.2))
    join_s: float | None = None
    t = 0.0
    while t < 60.0:
        t += 0.5
        if cluster.run_until(t, lambda: track.full == n):
            join_s = cluster.net.now
            break
    report("join", cluster.net.now)
    now = cluster.net.now
    cluster.run_until(now + 3.0)

    # 2. one change at a time
    meta_times: list[float] = []
    meta_missed = 0
    changers = rng.sample(range(n), min(meta_changes, n))  # first changes: not rate-limited
    for k, i in enumerate(changers):
        name = cluster.peers[i].core.name
        start = cluster.net.now
        cluster.update_meta(i, queued_s=float(k + 1), active_shares=k % 4)
        version = cluster.peers[i].core.meta_version
        track.meta_watch = (name, version, start, {j for j in range(n) if j != i})
        track.meta_done = None
        cluster.run_until(start + 10.0, lambda: track.meta_done is not None)
        if track.meta_done is None:
            meta_missed += 1
        else:
            meta_times.append(track.meta_done)
        track.meta_watch = None
        cluster.run_until(cluster.net.now + 0.5)
    report("dissemination", cluster.net.now)

    # 3. steady state with background load changes, no faults
    fp_before = len(track.false_dead)
    udp0 = sum(cluster.net.bytes_out.values())
    tcp0 = sum(cluster.net.stream_bytes_out.values())
    t_start = cluster.net.now
    ages: list[float] = []
    names = [p.core.name for p in cluster.peers]
    age_rng = random.Random(seed + 1)

    planner_ages: list[float] = []
    refreshed_ages: list[float] = []

    def read_ages() -> None:
        now = cluster.net.now
        for p in cluster.peers:
            for j in age_rng.sample(range(n), min(age_pairs + 1, n)):
                if names[j] != p.core.name:
                    age = p.core.load_age(names[j], now)
                    if age is not None:
                        ages.append(age)
        # an origin about to plan: refresh a sample, wait at most refresh_wait_s, read all
        i = age_rng.randrange(n)
        others = [x for x in names if x != names[i]]
        asked = cluster.request_load(i, age_rng.sample(others, min(refresh_sample, len(others))))
        cluster.run_until(
            now + refresh_wait_s,
            lambda: all((i, q) in cluster.load_answers for q in asked.values()),
        )
        later = cluster.net.now
        core = cluster.peers[i].core
        for x in others:
            age = core.load_age(x, later)
            if age is not None:
                planner_ages.append(age)
                if x in asked:
                    refreshed_ages.append(age)

    t_age = t_start + age_every_s
    t_meta = t_start + rng.expovariate(meta_rate * n) if meta_rate > 0 else float("inf")
    end = t_start + steady_s
    while min(t_age, t_meta) < end:
        if t_age <= t_meta:
            cluster.run_until(t_age)
            read_ages()
            t_age += age_every_s
        else:
            cluster.run_until(t_meta)
            i = rng.randrange(n)
            cluster.update_meta(i, queued_s=rng.uniform(0, 5), active_shares=rng.randrange(4))
            t_meta += rng.expovariate(meta_rate * n)
    cluster.run_until(end)
    udp = sum(cluster.net.bytes_out.values()) - udp0
    tcp = sum(cluster.net.stream_bytes_out.values()) - tcp0
    false_positives = len(track.false_dead) - fp_before
    suspects_steady = track.false_suspect
    report("steady", cluster.net.now)

    # 4. crashes, one at a time
    first_susp: list[float] = []
    all_dead: list[float] = []
    crash_missed = 0
    alive_idx = list(range(1, n))
    rng.shuffle(alive_idx)
    for i in alive_idx[:crashes]:
        name = cluster.peers[i].core.name
        track.crashed.add(name)
        start = cluster.net.now
        cluster.crash(i)
        observers = {j for j in range(n) if not cluster.peers[j].crashed}
        track.crash_watch = (name, start, observers)
        track.first_suspect = None
        track.crash_done = None
        cluster.run_until(start + 60.0, lambda: track.crash_done is not None)
        if track.first_suspect is not None:
            first_susp.append(track.first_suspect)
        if track.crash_done is None:
            crash_missed += 1
        else:
            all_dead.append(track.crash_done)
        track.crash_watch = None
        cluster.run_until(cluster.net.now + 2.0)
    report("crashes", cluster.net.now)

    counters: dict[str, int] = {}
    for p in cluster.peers:
        for key, v in p.core.counters.items():
            counters[key] = counters.get(key, 0) + v
    return {
        "mode": "simulated",
        "peers": n,
        "authenticated": secret is not None,
        "loss": loss,
        "seed": seed,
        "probe_interval_s": cfg.probe_interval_s,
        "join_convergence_s": None if join_s is None else round(join_s, 4),
        "dissemination_s": {
            "changes": len(changers),
            "missed": meta_missed,
            "p50": _pct(meta_times, 50),
            "p99": _pct(meta_times, 99),
            "max": _pct(meta_times, 100),
        },
        "crash": {
            "crashes": crashes,
            "missed": crash_missed,
            "first_suspicion_s_median": _pct(first_susp, 50),
            "all_dead_s_median": None if not all_dead else round(statistics.median(all_dead), 4),
            "all_dead_s_max": _pct(all_dead, 100),
            "all_dead_s": [round(x, 4) for x in all_dead],
        },
        "steady": {
            "duration_s": steady_s,
            "meta_updates_per_peer_per_s": meta_rate,
            "false_positives": false_positives,
            "false_suspect_events": suspects_steady,
            "bytes_per_peer_per_s": round((udp + tcp) / n / steady_s, 1),
            "udp_bytes_per_peer_per_s": round(udp / n / steady_s, 1),
            "tcp_bytes_per_peer_per_s": round(tcp / n / steady_s, 1),
            "load_age_s": {
                "readings": len(ages),
                "p50": _pct(ages, 50),
                "p95": _pct(ages, 95),
            },
            "planner_load_age_s": {
                "refresh_sample": refresh_sample,
                "refresh_wait_s": refresh_wait_s,
                "readings": len(planner_ages),
                "p50": _pct(planner_ages, 50),
                "p95": _pct(planner_ages, 95),
            },
            "refreshed_load_age_s": {
                "readings": len(refreshed_ages),
                "p50": _pct(refreshed_ages, 50),
                "p95": _pct(refreshed_ages, 95),
            },
        },
        "false_positives_total": len(track.false_dead),
        "counters": counters,
        "sim_events": cluster.net.events,
        "virtual_s": round(cluster.net.now, 3),
        "cpu_s": round(time.process_time() - cpu0, 2),
    }
