"""The wall-clock gossip benchmark: N peer processes on loopback UDP/TCP.

The parent starts `python -m gossip.realbench` children (peer 0 first, the rest with peer 0 as
seed). Each child runs one GossipNode and prints one JSON line per event (its view changed,
stats, load ages) with `time.time()` stamps; it takes commands on stdin (`meta V`, `stats`,
`ages`, `busy`). The parent times the same phases as the simulated benchmark: join
convergence, load dissemination, then a steady window in which every peer's load changes twice
a second (`busy`, like a working runtime): bytes per peer per second and, once a second, the
age of the load each peer holds of every other (`load_age_s`); then crash detection after
SIGKILL. Once a second in the steady window one peer (in turn) does what an origin does
before it plans (`plan`): it refreshes the load of up to 16 random live others with one bounded
round trip (0.1 s at most, as `peer.runtime.node.refresh_load`), then reads the age of the load
it holds of every live other (`planner_load_age_s`; `refreshed_load_age_s`: those it asked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from gossip.config import GossipConfig
from gossip.node import GossipNode
from gossip.view import PeerMeta, View

PRESETS: dict[str, Callable[[], GossipConfig]] = {
    "lan": GossipConfig.lan,
    "local": GossipConfig.local,
    "wan": GossipConfig.wan,
}


# -- the child ------------------------------------------------------------------------------


REFRESH_SAMPLE = 16  # peer.runtime.node.REFRESH_SAMPLE
REFRESH_WAIT_S = 0.1  # peer.runtime.node.REFRESH_MAX_S


def _summary(xs: list[float]) -> dict[str, Any]:
    s = sorted(xs)
    return {
        "readings": len(s),
        "p50": None if not s else round(statistics.median(s), 4),
        "p95": None if not s else round(s[min(len(s) - 1, int(0.95 * len(s)))], 4),
    }


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _child(name: str, seed: str | None, preset: str) -> None:
    host = "127.0.0.1"
    meta = PeerMeta(
        name=name,
        gossip_addr=(host, 0),
        rpc_addr=(host, 0),
        http_addr=(host, 0),
        model_id="digits16",
        capacity=100.0,
    )
    node = GossipNode(meta, bind=(host, 0), config=PRESETS[preset]())
    seeds = []
    if seed:
        h, p = seed.rsplit(":", 1)
        seeds.append((h, int(p)))
    last: dict[str, tuple[str, float]] = {}

    def on_view(v: View) -> None:
        t = time.time()
        for peer in v.peers.values():
            if peer.name == name:
                continue
            cur = (peer.status, peer.meta.queued_s)
            if last.get(peer.name) != cur:
                last[peer.name] = cur
                _emit({"ev": "peer", "peer": peer.name, "status": cur[0], "q": cur[1], "t": t})

    node.subscribe(on_view)
    await node.start(seeds=seeds)
    _emit({"ev": "ready", "addr": list(node.address), "t": time.time()})
    loop = asyncio.get_running_loop()
    busy: list[asyncio.Task[None]] = []

    async def churn() -> None:
        # Like a busy runtime: the load changes every 0.5 s (digests are rate-limited anyway).
        k = 0
        while True:
            k += 1
            node.update_meta(queued_s=float(k % 13) / 4, active_shares=k % 3)
            await asyncio.sleep(0.5)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        parts = line.decode().split()
        if not parts:
            continue
        if parts[0] == "meta" and len(parts) == 2:
            node.update_meta(queued_s=float(parts[1]))
        elif parts[0] == "stats":
            _emit({"ev": "stats", "stats": node.stats, "t": time.time()})
        elif parts[0] == "ages":
            v = node.view()
            ages = [node.load_age(p) for p in v.peers if p != name and v.peers[p].status == "alive"]
            _emit({"ev": "ages", "ages": [a for a in ages if a is not None], "t": time.time()})
        elif parts[0] == "plan":
            v = node.view()
            others = [p for p in v.peers if p != name and v.peers[p].status == "alive"]
            asked = random.sample(others, min(REFRESH_SAMPLE, len(others)))
            fresh = await node.refresh_load(asked, timeout_s=REFRESH_WAIT_S)
            held = [node.load_age(p) for p in others]
            _emit(
                {
                    "ev": "plan",
                    "ages": [a for a in held if a is not None],
                    "refreshed": list(fresh.values()),
                    "t": time.time(),
                }
            )
        elif parts[0] == "busy" and not busy:
            busy.append(asyncio.create_task(churn()))
        elif parts[0] == "quit":
            break
    for t in busy:
        t.cancel()
    await node.stop()


# -- the parent -----------------------------------------------------------------------------


class _Child:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.addr: tuple[str, int] | None = None
        self.ready = asyncio.Event()
        self.status: dict[str, str] = {}
        self.q: dict[str, float] = {}
        self.stats: dict[str, Any] | None = None
        self.stats_event = asyncio.Event()
        self.killed = False


class _Parent:
    def __init__(self, n: int, preset: str) -> None:
        self.n = n
        self.preset = preset
        self.children: list[_Child] = []
        self.changed = asyncio.Event()
        self.first_suspect: dict[str, float] = {}
        self.dead_at: dict[tuple[str, str], float] = {}
        self.q_at: dict[tuple[str, str, float], float] = {}
        self.false_dead = 0
        self.killed: set[str] = set()
        self.readers: list[asyncio.Task[None]] = []
        self.ages: list[float] = []
        self.plan_ages: list[float] = []
        self.refreshed_ages: list[float] = []

    async def spawn(self, i: int, seed: str | None) -> _Child:
        name = f"p{i:03d}"
        args = [sys.executable, "-m", "gossip.realbench", "--child", name, "--preset", self.preset]
        if seed:
            args += ["--seed-addr", seed]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        child = _Child(name, proc)
        self.children.append(child)
        self.readers.append(asyncio.create_task(self._read(child)))
        return child

    async def _read(self, c: _Child) -> None:
        stream = c.proc.stdout
        if stream is None:
            return
        while True:
            line = await stream.readline()
            if not line:
                return
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("ev")
            if kind == "ready":
                c.addr = (ev["addr"][0], ev["addr"][1])
                c.ready.set()
            elif kind == "peer":
                peer, status, t = ev["peer"], ev["status"], ev["t"]
                c.status[peer] = status
                c.q[peer] = ev["q"]
                self.q_at.setdefault((c.name, peer, ev["q"]), t)
                if status == "suspect":
                    self.first_suspect.setdefault(peer, t)
                if status == "dead":
                    self.dead_at.setdefault((c.name, peer), t)
                    if peer not in self.killed:
                        self.false_dead += 1
            elif kind == "stats":
                c.stats = ev["stats"]
                c.stats_event.set()
            elif kind == "ages":
                self.ages.extend(float(a) for a in ev["ages"])
            elif kind == "plan":
                self.plan_ages.extend(float(a) for a in ev["ages"])
                self.refreshed_ages.extend(float(a) for a in ev["refreshed"])
            self.changed.set()

    async def wait_for(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                async with asyncio.timeout(min(left, 0.2)):
                    await self.changed.wait()
            except TimeoutError:
                pass
        return True

    def live(self) -> list[_Child]:
        return [c for c in self.children if not c.killed]

    async def send(self, c: _Child, line: str) -> None:
        if c.proc.stdin is not None and not c.killed:
            c.proc.stdin.write((line + "\n").encode())
            await c.proc.stdin.drain()

    async def all_stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for c in self.live():
            c.stats_event.clear()
            await self.send(c, "stats")
        for c in self.live():
            with_timeout = asyncio.timeout(5.0)
            try:
                async with with_timeout:
                    await c.stats_event.wait()
            except TimeoutError:
                continue
            if c.stats is not None:
                out[c.name] = c.stats
        return out

    async def shutdown(self) -> None:
        for c in self.children:
            if c.proc.returncode is None:
                with contextlib.suppress(OSError):
                    await self.send(c, "quit")
        for c in self.children:
            try:
                async with asyncio.timeout(5.0):
                    await c.proc.wait()
            except TimeoutError:
                c.proc.kill()
                await c.proc.wait()
        for r in self.readers:
            r.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def run_real_bench(
    n: int,
    preset: str = "lan",
    meta_changes: int = 10,
    crashes: int = 3,
    steady_s: float = 20.0,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    report = progress or (lambda phase, t: None)
    p = _Parent(n, preset)
    t_begin = time.time()
    try:
        c0 = await p.spawn(0, None)
        async with asyncio.timeout(30):
            await c0.ready.wait()
        if c0.addr is None:
            raise RuntimeError("peer 0 did not report its address")
        seed = f"{c0.addr[0]}:{c0.addr[1]}"
        for i in range(1, n):
            await p.spawn(i, seed)
        async with asyncio.timeout(60):
            for c in p.children:
                await c.ready.wait()
        t_ready = time.time()

        def converged() -> bool:
            return all(
                sum(1 for s in c.status.values() if s in ("alive", "suspect")) == n - 1
                for c in p.children
            )

        ok = await p.wait_for(converged, 60.0)
        t_conv = time.time()
        report("join", t_conv - t_begin)

        meta_times: list[float] = []
        for k in range(meta_changes):
            c = p.children[(k * 7 + 1) % n]
            value = float(1000 + k)
            t0 = time.time()
            await p.send(c, f"meta {value}")
            others = [o for o in p.children if o is not c]

            def reached(c: _Child = c, v: float = value, o: list[_Child] = others) -> bool:
                return all(x.q.get(c.name) == v for x in o)

            done = await p.wait_for(reached, 10.0)
            if done:
                meta_times.append(max(p.q_at[(o.name, c.name, value)] for o in others) - t0)
            await asyncio.sleep(0.3)
        report("dissemination", time.time() - t_begin)

        for c in p.live():
            await p.send(c, "busy")
        await asyncio.sleep(3.0)  # let digest spacing and the sample budget settle
        s0 = await p.all_stats()
        t0 = time.time()
        k = 0
        while time.time() - t0 < steady_s:
            await asyncio.sleep(1.0)
            live = p.live()
            for c in live:
                await p.send(c, "ages")
            if live:
                await p.send(live[k % len(live)], "plan")  # an origin about to plan
                k += 1
        s1 = await p.all_stats()
        window = time.time() - t0
        common = set(s0) & set(s1)
        sent = [
            (s1[k]["bytes_out"] + s1[k]["push_pull_bytes_out"])
            - (s0[k]["bytes_out"] + s0[k]["push_pull_bytes_out"])
            for k in common
        ]
        report("steady", time.time() - t_begin)

        first_susp: list[float] = []
        all_dead: list[float] = []
        missed = 0
        for k in range(crashes):
            victim = p.children[1 + (k * 5) % (n - 1)]
            if victim.killed:
                continue
            p.killed.add(victim.name)
            t_kill = time.time()
            victim.proc.send_signal(signal.SIGKILL)
            victim.killed = True
            observers = p.live()

            def all_marked(v: str = victim.name, o: list[_Child] = observers) -> bool:
                return all(x.status.get(v) == "dead" for x in o)

            done = await p.wait_for(all_marked, 30.0)
            if victim.name in p.first_suspect:
                first_susp.append(p.first_suspect[victim.name] - t_kill)
            if done:
                all_dead.append(max(p.dead_at[(o.name, victim.name)] for o in observers) - t_kill)
            else:
                missed += 1
            await asyncio.sleep(1.0)
        report("crashes", time.time() - t_begin)
    finally:
        await p.shutdown()
    return {
        "mode": "real",
        "peers": n,
        "preset": preset,
        "join_convergence_s": round(t_conv - t_ready, 4) if ok else None,
        "join_convergence_from_first_start_s": round(t_conv - t_begin, 4) if ok else None,
        "dissemination_s": {
            "changes": meta_changes,
            "missed": meta_changes - len(meta_times),
            "p50": None if not meta_times else round(statistics.median(meta_times), 4),
            "p99": None if not meta_times else round(max(meta_times), 4),
        },
        "crash": {
            "crashes": crashes,
            "missed": missed,
            "first_suspicion_s_median": None
            if not first_susp
            else round(statistics.median(first_susp), 4),
            "all_dead_s_median": None if not all_dead else round(statistics.median(all_dead), 4),
            "all_dead_s_max": None if not all_dead else round(max(all_dead), 4),
            "all_dead_s": [round(x, 4) for x in all_dead],
        },
        "steady": {
            "duration_s": round(window, 2),
            "bytes_per_peer_per_s": None if not sent else round(statistics.mean(sent) / window, 1),
            "bytes_per_peer_per_s_max": None if not sent else round(max(sent) / window, 1),
            "load_changes_per_peer_per_s": 2.0,
            "load_age_s": {
                "readings": len(p.ages),
                "p50": None if not p.ages else round(statistics.median(p.ages), 4),
                "p95": None
                if not p.ages
                else round(sorted(p.ages)[min(len(p.ages) - 1, int(0.95 * len(p.ages)))], 4),
            },
            "planner_load_age_s": _summary(p.plan_ages),
            "refreshed_load_age_s": _summary(p.refreshed_ages),
        },
        "false_positives_total": p.false_dead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="one peer of the loopback gossip benchmark")
    parser.add_argument("--child", required=True, help="peer name")
    parser.add_argument("--seed-addr", default=None, help="HOST:PORT of a seed peer")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="lan")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_child(args.child, args.seed_addr, args.preset))


if __name__ == "__main__":
    main()
