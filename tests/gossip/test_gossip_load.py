"""Fresh load (issue 17): load samples on every datagram, a byte budget, and refresh_load."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from gossip import GossipConfig, GossipNode, PeerMeta
from gossip.errors import ConfigError, OutOfRangeError
from gossip.transport import MemoryNetwork
from gossip.wire import MAX_VERSION, Codec, Gossip, LoadSample, encode_broadcast, encode_primary
from tests.gossip.gossip_simutil import cluster, run_to_convergence, start_all


def test_sample_round_trip_is_quantised_and_bounded():
    s = LoadSample("p1", 7, 1.2345, 118.0, 2.5, 3)
    codec = Codec(None)
    data = codec.seal(encode_primary(Gossip("p1")) + encode_broadcast(s))
    _, _, (got,) = codec.decode_datagram(data)
    assert got == LoadSample("p1", 7, 1.234, 118.0, 2.5, 3) or got == LoadSample(
        "p1", 7, 1.235, 118.0, 2.5, 3
    )
    assert len(encode_broadcast(s)) <= 24
    top = encode_broadcast(LoadSample("p1", MAX_VERSION, 0.0, 1.0, 0.0, 0))
    assert codec.decode_datagram(codec.seal(encode_primary(Gossip("p1")) + top))
    with pytest.raises(OutOfRangeError):
        codec.decode_datagram(
            codec.seal(
                encode_primary(Gossip("p1"))
                + encode_broadcast(LoadSample("p1", MAX_VERSION + 1, 0.0, 1.0, 0.0, 0))
            )
        )


def _ages(c, now: float) -> list[float]:
    out = []
    for p in c.peers:
        for q in c.peers:
            if q is not p:
                age = p.core.load_age(q.core.name, now)
                assert age is not None
                out.append(age)
    return out


def test_load_held_of_others_is_fresh_within_the_byte_budget():
    n = 20
    c, _ = cluster(n, seed=3)
    start_all(c)
    t0 = run_to_convergence(c) + 5.0
    c.run_until(t0)
    bytes0 = sum(c.net.bytes_out.values()) + sum(c.net.stream_bytes_out.values())
    ages: list[float] = []
    for k in range(60):
        c.update_meta(k % n, queued_s=float(k % 7), active_shares=k % 3)  # a busy cluster
        c.run_until(t0 + k + 1.0)
        ages += _ages(c, c.net.now)
    sent = sum(c.net.bytes_out.values()) + sum(c.net.stream_bytes_out.values()) - bytes0
    assert statistics.median(ages) <= 1.0
    assert sent / n / 60.0 <= 2000.0
    # The load itself, not only its age: every peer holds every other peer's current load
    # (digest versions alone are rate-limited to one per ~13 s at this size).
    c.update_meta(4, queued_s=42.0)
    c.run_until(c.net.now + 3.0)
    assert all(p.core.view(c.net.now).peers["p0004"].meta.queued_s == 42.0 for p in c.peers)


def test_without_samples_the_load_is_much_older():
    # The same cluster with samples of others switched off: the claim above is the samples'.
    n = 20
    c, _ = cluster(n, config=GossipConfig.lan().with_(load_samples_per_datagram=0), seed=3)
    start_all(c)
    t0 = run_to_convergence(c) + 5.0
    c.run_until(t0)
    ages: list[float] = []
    for k in range(30):
        c.run_until(t0 + k + 1.0)
        ages += _ages(c, c.net.now)
    assert statistics.median(ages) > 2.0


def test_byte_budget_controller_backs_off():
    cfg = GossipConfig.lan().with_(gossip_budget_bytes_s=100.0)  # below the floor
    c, _ = cluster(10, config=cfg, seed=4)
    start_all(c)
    t0 = run_to_convergence(c)
    c.run_until(t0 + 40.0)
    assert all(p.core.samples_per_datagram == 0 for p in c.peers)
    c2, _ = cluster(10, seed=4)
    start_all(c2)
    c2.run_until(run_to_convergence(c2) + 40.0)
    assert all(p.core.samples_per_datagram == cfg.load_samples_per_datagram for p in c2.peers)


def test_request_load_in_the_simulator():
    c, _ = cluster(6, seed=5)
    start_all(c)
    t0 = run_to_convergence(c) + 1.0
    c.run_until(t0)
    c.crash(5)
    c.update_meta(2, queued_s=9.5)
    asked = c.request_load(0, ["p0002", "p0003", "p0005", "nobody", "p0000"])
    assert set(asked) == {"p0002", "p0003", "p0005"}  # known, live and not self
    c.run_until(t0 + 0.05)
    answered = {name for name, seq in asked.items() if (0, seq) in c.load_answers}
    assert answered == {"p0002", "p0003"}
    core = c.peers[0].core
    assert core.view(c.net.now).peers["p0002"].meta.queued_s == 9.5
    assert core.load_age("p0002", c.net.now) < 0.05


async def test_refresh_load_one_bounded_round_trip():
    net = MemoryNetwork()
    cfg = GossipConfig.local()
    nodes: list[GossipNode] = []
    try:
        for i in range(3):
            m = PeerMeta(f"r{i}", ("mem", 0), ("mem", 0), ("mem", 8000), capacity=10.0)
            node = GossipNode(m, bind=("mem", 0), config=cfg, network=net, seed=i)
            await node.start(seeds=[nodes[0].address] if nodes else [])
            nodes.append(node)
        for _ in range(200):
            if all(len(n.view().alive()) == 3 for n in nodes):
                break
            await asyncio.sleep(0.01)
        nodes[1].update_meta(queued_s=7.25)
        got = await nodes[0].refresh_load(["r1", "r2", "ghost"], timeout_s=1.0)
        assert set(got) == {"r1", "r2"} and all(0 <= a < 0.5 for a in got.values())
        assert nodes[0].view().peers["r1"].meta.queued_s == 7.25
        assert nodes[0].load_age("r1") is not None
        await nodes[2].stop()  # silent: it cannot answer in time, and is left out
        got = await nodes[0].refresh_load(["r1", "r2"], timeout_s=0.2)
        assert set(got) == {"r1"}
        assert nodes[0].stats["load_refresh_asked"] == 4
        assert nodes[0].stats["load_refresh_answered"] == 3
        with pytest.raises(ConfigError):
            await nodes[0].refresh_load("r1", timeout_s=1.0)
        with pytest.raises(ConfigError):
            await nodes[0].refresh_load(["r1"], timeout_s=-1.0)
    finally:
        for n in nodes:
            await n.stop()
