"""Simulated scenarios on virtual time: the unmodified core over a hostile network."""

from __future__ import annotations

from gossip_simutil import cluster, converged, run_to_convergence, start_all, status_everywhere

from gossip.config import GossipConfig
from gossip.sim import NetConfig
from gossip.wire import Alive, Codec, Gossip, Suspect, encode_broadcast, encode_primary


def test_join_converges_and_is_deterministic():
    traces = []
    for _ in range(2):
        c, rec = cluster(30, seed=11)
        start_all(c)
        t = run_to_convergence(c, 10.0)
        assert t < 3.0
        c.run_until(t + 5.0)
        traces.append((round(t, 9), c.net.events, sum(c.net.bytes_out.values()), len(rec.events)))
    assert traces[0] == traces[1]
    c, _ = cluster(30, seed=12)
    start_all(c)
    t2 = run_to_convergence(c, 10.0)
    assert (round(t2, 9), c.net.events) != traces[0][:2]


def test_crash_is_suspected_then_dead_everywhere():
    c, rec = cluster(30)
    start_all(c)
    t0 = run_to_convergence(c) + 2.0
    c.run_until(t0)
    victim = c.peers[5].core.name
    c.crash(5)
    c.run_until(t0 + 8.0, lambda: status_everywhere(c, victim) == {"dead"})
    assert status_everywhere(c, victim) == {"dead"}
    first_suspect = rec.first(victim, "suspect", after=t0)
    assert first_suspect is not None and first_suspect - t0 < 3.0  # ~1.58 periods on average
    assert c.net.now - t0 <= 6.0
    # Nobody else was declared dead.
    assert {e.name for _, _, e in rec.dead_events()} == {victim}


def test_false_suspicion_is_refuted():
    c, rec = cluster(20)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    target = c.peers[3]
    inc = target.core.incarnation
    # A suspicion injected at peer 9 as if peer 8 had raised it: peer 3 is perfectly healthy.
    data = Codec(None).seal(
        encode_primary(Gossip(c.peers[8].core.name))
        + encode_broadcast(Suspect(target.core.name, inc, c.peers[8].core.name))
    )
    c.net.send(c.peers[8].addr, c.peers[9].addr, data)
    c.run_until(t0 + 15.0)
    assert rec.first(target.core.name, "suspect", after=t0) is not None
    assert target.core.incarnation > inc
    assert target.core.counters["refutations"] >= 1
    assert status_everywhere(c, target.core.name) == {"alive"}
    assert rec.dead_events() == []


def test_partition_and_heal():
    cfg = GossipConfig.local()
    c, _ = cluster(20, config=cfg)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    left = [p.addr for p in c.peers[:10]]
    right = [p.addr for p in c.peers[10:]]
    c.net.partition([left, right])
    c.run_until(t0 + 6.0)
    a, b = c.peers[0].core, c.peers[15].core
    assert a.status_of(b.name) == "dead" and b.status_of(a.name) == "dead"
    assert a.num_live() == 10 and b.num_live() == 10
    c.net.heal()
    healed = c.run_until(t0 + 6.0 + 30.0, lambda: converged(c))
    assert healed, [p.core.num_live() for p in c.peers]
    # Healing raised incarnations of peers that had been declared dead.
    assert any(p.core.incarnation > 0 for p in c.peers)


def test_ten_percent_loss_no_false_deaths_and_crash_found():
    c, rec = cluster(30, net=NetConfig(loss=0.10), seed=3)
    start_all(c)
    t0 = run_to_convergence(c, 20.0)
    c.run_until(t0 + 120.0)
    assert rec.dead_events() == []
    victim = c.peers[7].core.name
    t1 = c.net.now
    c.crash(7)
    c.run_until(t1 + 15.0, lambda: status_everywhere(c, victim) == {"dead"})
    assert status_everywhere(c, victim) == {"dead"}


def _slow_peer_run(lifeguard: bool) -> tuple[int, int, int]:
    cfg = GossipConfig.lan().with_(lifeguard=lifeguard)
    c, rec = cluster(20, config=cfg, seed=5)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    slow = c.peers[4]
    c.net.slow[slow.addr] = 0.6  # everything reaches it 0.3-0.6 s late: longer than the timeout
    c.run_until(t0 + 120.0)
    raised = slow.core.counters["suspicions_raised"]
    false_dead = len(rec.dead_events())
    return raised, false_dead, slow.core.health


def test_slow_peer_lifeguard_reduces_its_false_suspicions():
    raised_on, dead_on, health_on = _slow_peer_run(True)
    raised_off, dead_off, health_off = _slow_peer_run(False)
    assert health_on > 0 and health_off == 0
    assert raised_on * 2 < raised_off
    assert dead_on <= dead_off


def test_graceful_leave_marks_left_not_dead():
    c, rec = cluster(20)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    name = c.peers[6].core.name
    c.leave(6)
    c.run_until(t0 + 0.6)
    c.crash(6)  # the process exits after announcing
    c.run_until(t0 + 5.0)
    assert status_everywhere(c, name) == {"left"}
    assert rec.dead_events() == []


def test_metadata_and_bandwidth_reach_everyone():
    c, _ = cluster(25)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    src = c.peers[2].core
    c.update_meta(2, queued_s=4.5, active_shares=3, capacity=77.0)
    c.peers[2].core.record_transfer(c.peers[3].core.name, 1_000_000, 0.01, c.net.now)
    # The second change (the bandwidth row) is published after the digest spacing (about 40 s
    # at 25 peers); the load itself travels at once in load samples.
    spacing = c.config.meta_interval_s(25, 40)
    assert 20.0 < spacing < 60.0
    c.run_until(t0 + 3.0)
    for p in c.peers:
        v = p.core.view(c.net.now).peers[src.name]
        assert v.meta.queued_s == 4.5 and v.meta.active_shares == 3 and v.meta.capacity == 77.0
    c.run_until(t0 + spacing + 3.0)
    for p in c.peers:
        v = p.core.view(c.net.now).peers[src.name]
        assert v.meta.queued_s == 4.5 and v.meta.active_shares == 3 and v.meta.capacity == 77.0
        assert p.core.bandwidth(src.name, c.peers[3].core.name) == 1e8
        if p.core is not src:
            assert v.meta_age_s <= 3.0  # samples keep the load fresh


def test_join_retries_until_seed_appears():
    c, _ = cluster(5)
    for i in range(1, 5):
        c.start(i, [0], at=0.0)
    c.run_until(3.0)
    assert not any(c.peers[i].core.joined for i in range(1, 5))
    c.start(0, [], at=3.0)
    ok = c.run_until(10.0, lambda: converged(c))
    assert ok


def test_wrong_secret_cannot_join():
    c, _ = cluster(6, secret=b"cluster")
    intruder = c.add_peer()
    intruder.core.codec = Codec(b"not-the-secret")
    start_all(c)
    c.run_until(5.0)
    assert all(p.core.status_of(intruder.core.name) is None for p in c.peers[:6])
    assert converged(c, list(range(6)))
    assert sum(p.core.counters["dropped_auth"] for p in c.peers[:6]) > 0


def test_restarted_peer_rejoins_with_higher_incarnation():
    cfg = GossipConfig.local()
    c, _ = cluster(10, config=cfg)
    start_all(c)
    t0 = run_to_convergence(c) + 0.5
    c.run_until(t0)
    name = c.peers[4].core.name
    c.crash(4)
    c.run_until(t0 + 4.0, lambda: status_everywhere(c, name) == {"dead"})
    assert status_everywhere(c, name) == {"dead"}
    # The same name comes back at the same address with a fresh core (incarnation 0).
    from gossip.core import GossipCore

    p = c.peers[4]
    p.core = GossipCore(p.core.meta, cfg, c.net.now, seed=99)
    p.crashed = False
    p.wake = float("inf")
    c.net.down.discard(p.addr)
    c.start(4, [0])
    ok = c.run_until(c.net.now + 10.0, lambda: status_everywhere(c, name) == {"alive"})
    assert ok and p.core.incarnation > 0


def test_duplication_and_reordering_are_harmless():
    net = NetConfig(loss=0.02, duplicate=0.3, jitter_s=0.02)
    c, rec = cluster(25, net=net, seed=9)
    start_all(c)
    t0 = run_to_convergence(c, 10.0)
    c.run_until(t0 + 60.0)
    assert rec.dead_events() == []
    victim = c.peers[11].core.name
    t1 = c.net.now
    c.crash(11)
    c.run_until(t1 + 10.0, lambda: status_everywhere(c, victim) == {"dead"})
    assert status_everywhere(c, victim) == {"dead"}


def test_dead_peers_are_reaped_and_tombstoned():
    cfg = GossipConfig.local()  # dead_reap_s = 10
    c, _ = cluster(8, config=cfg)
    start_all(c)
    t0 = run_to_convergence(c) + 0.5
    c.run_until(t0)
    victim = c.peers[3]
    name, digest = victim.core.name, victim.core._local.digest
    c.crash(3)
    c.run_until(t0 + 4.0, lambda: status_everywhere(c, name) == {"dead"})
    assert status_everywhere(c, name) == {"dead"}
    c.run_until(c.net.now + cfg.dead_reap_s + 2.0)
    assert status_everywhere(c, name) == {"None"}  # forgotten everywhere
    # A stale alive of the old incarnation cannot bring it back...
    stale = Codec(None).seal(encode_primary(Gossip("x")) + encode_broadcast(Alive(name, 0, digest)))
    c.net.send(c.peers[0].addr, c.peers[1].addr, stale)
    c.run_until(c.net.now + 1.0)
    assert c.peers[1].core.status_of(name) is None
    # ...but a genuine rejoin (higher incarnation) can.
    c.net.send(
        c.peers[0].addr,
        c.peers[1].addr,
        Codec(None).seal(encode_primary(Gossip("x")) + encode_broadcast(Alive(name, 5, digest))),
    )
    c.run_until(c.net.now + 0.01)
    assert c.peers[1].core.status_of(name) == "alive"
