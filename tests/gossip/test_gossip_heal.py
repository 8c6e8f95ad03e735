"""A healed partition converges on both sides (issue 17), in virtual time.

During a 2-minute partition each side declares the other dead and, after `dead_reap_s`,
forgets it (keeping a tombstone). Before the fix the isolated side saw only itself for minutes
after healing: nobody tried to reach forgotten peers, and tombstones blocked their alive
messages. Now every peer pings a random dead or forgotten peer every `reconnect_interval_s`;
an answer starts a push-pull whose state is not blocked by tombstones and whose `gone` list
makes each forgotten peer refute.
"""

from __future__ import annotations

import pytest

from gossip.config import GossipConfig
from tests.gossip.gossip_simutil import cluster, converged, run_to_convergence, start_all

PARTITION_S = 120.0
HEAL_LIMIT_S = 10.0


def _sees_all_alive(c) -> bool:
    names = [p.core.name for p in c.peers]
    return all(p.core.status_of(n) == "alive" for p in c.peers for n in names if n != p.core.name)


@pytest.mark.parametrize(
    ("groups", "seed"),
    [
        ([[3]], 11),  # one peer cut off (it has a seed to go back to)
        ([[0]], 12),  # the seed itself cut off: it has nobody to go back to
        ([[0, 1, 2, 3, 4]], 13),  # two halves
    ],
)
def test_healed_partition_converges_on_both_sides_within_10_s(groups, seed):
    c, rec = cluster(10, config=GossipConfig.lan(), seed=seed)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    cut = {i for g in groups for i in g}
    c.net.partition([[c.peers[i].addr for i in g] for g in groups])
    c.run_until(t0 + PARTITION_S)
    # Both sides declared the other dead and forgot it (past dead_reap_s = 30 s).
    inside, outside = c.peers[min(cut)], c.peers[next(i for i in range(10) if i not in cut)]
    assert outside.core.status_of(inside.core.name) is None
    assert inside.core.status_of(outside.core.name) is None
    assert inside.core.counters["deaths_declared"] > 0
    t_heal = c.net.now
    c.net.heal()
    assert c.run_until(t_heal + HEAL_LIMIT_S, lambda: _sees_all_alive(c)), [
        p.core.num_live() for p in c.peers
    ]
    healed_in = c.net.now - t_heal
    assert healed_in <= HEAL_LIMIT_S
    # and it stays that way: no flapping after the heal
    c.run_until(c.net.now + 20.0)
    assert _sees_all_alive(c) and converged(c)
    assert rec.dead_events(after=t_heal + HEAL_LIMIT_S) == []


def test_healed_partition_within_dead_reap_converges_too():
    # Healed before anyone is forgotten: the dead are still in the table and reconnected.
    c, _ = cluster(8, config=GossipConfig.lan(), seed=21)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    c.net.partition([[c.peers[5].addr]])
    c.run_until(t0 + 15.0)
    assert c.peers[0].core.status_of(c.peers[5].core.name) == "dead"
    t_heal = c.net.now
    c.net.heal()
    assert c.run_until(t_heal + HEAL_LIMIT_S, lambda: _sees_all_alive(c))


def test_nothing_reconnects_while_all_are_alive():
    # The reconnect timer costs nothing in a healthy cluster: no pings to the dead, no state.
    c, _ = cluster(8, seed=5)
    start_all(c)
    t0 = run_to_convergence(c)
    c.run_until(t0 + 30.0)
    assert all(not p.core._reconnects and not p.core._gone for p in c.peers)
