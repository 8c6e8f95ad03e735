"""Helpers shared by the simulated-scenario tests."""

from __future__ import annotations

from gossip.config import GossipConfig
from gossip.effects import Notify
from gossip.sim import NetConfig, SimCluster


class Recorder:
    """Every Notify effect, with the observing peer and the virtual time."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, Notify]] = []

    def __call__(self, i: int, e: Notify, now: float) -> None:
        self.events.append((now, i, e))

    def first(self, name: str, status: str, after: float = 0.0) -> float | None:
        for t, _, e in self.events:
            if t >= after and e.name == name and e.status == status:
                return t
        return None

    def dead_events(self, after: float = 0.0) -> list[tuple[float, int, Notify]]:
        return [x for x in self.events if x[0] >= after and x[2].status == "dead"]


def cluster(
    n: int,
    config: GossipConfig | None = None,
    net: NetConfig | None = None,
    seed: int = 7,
    secret: bytes | None = None,
) -> tuple[SimCluster, Recorder]:
    rec = Recorder()
    c = SimCluster(n, config or GossipConfig.lan(), net or NetConfig(), seed, secret, rec)
    return c, rec


def status_everywhere(c: SimCluster, name: str, watchers: list[int] | None = None) -> set[str]:
    idx = watchers if watchers is not None else [p.index for p in c.peers if not p.crashed]
    return {str(c.peers[i].core.status_of(name)) for i in idx if c.peers[i].core.name != name}


def converged(c: SimCluster, idx: list[int] | None = None) -> bool:
    peers = [c.peers[i] for i in idx] if idx is not None else [p for p in c.peers if not p.crashed]
    want = len(peers)
    return all(p.core.num_live() == want for p in peers)


def start_all(c: SimCluster, seed_peer: int = 0, spread_s: float = 0.1) -> None:
    n = len(c.peers)
    for i in range(n):
        c.start(i, [seed_peer] if i != seed_peer else [], at=spread_s * i / n)


def run_to_convergence(c: SimCluster, limit_s: float = 10.0) -> float:
    ok = c.run_until(c.net.now + limit_s, lambda: converged(c))
    assert ok, "cluster did not converge"
    return c.net.now
