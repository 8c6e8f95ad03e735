"""Local metadata: immediate local view, rate-limited digest versions, bandwidth EWMA."""

from __future__ import annotations

import pytest

from gossip import ConfigError, GossipConfig, GossipCore, PeerMeta
from gossip.wire import Alive, Codec, Digest, Gossip, encode_broadcast, encode_primary


def _core() -> GossipCore:
    a = ("10.0.0.1", 7000)
    core = GossipCore(PeerMeta("me", a, a, a), GossipConfig.lan(), 0.0, seed=1)
    codec = Codec(None)
    for i in range(40):  # a 41-peer cluster: updates are spaced by the traffic budget
        b = (f"10.0.1.{i}", 7000)
        d = Digest(f"p{i}", 0, PeerMeta(f"p{i}", b, b, b), ())
        core.handle(
            codec.seal(encode_primary(Gossip("x")) + encode_broadcast(Alive(d.name, 0, d))), b, 0.0
        )
    return core


def test_updates_are_immediate_locally_and_spaced_on_the_wire():
    core = _core()
    assert core.meta_version == 0
    core.update_meta(1.0, queued_s=2.0)
    assert core.meta_version == 1  # the first change goes at once
    core.update_meta(1.5, queued_s=3.0, active_shares=1)
    assert core.meta_version == 1  # the next waits for the spacing...
    v = core.view(1.5).peers["me"]
    assert v.meta.queued_s == 3.0 and v.meta.active_shares == 1  # ...but the view is current
    due = core.next_deadline()
    cfg = core.config
    spacing = cfg.meta_interval_s(41, 40)
    # every version is sent to each of 41 peers, retransmit_limit times: within the budget
    expected = 41 * 40 * cfg.retransmit_limit(41) / cfg.meta_budget_bytes_s
    assert spacing == pytest.approx(max(cfg.meta_min_interval_s, expected))
    assert spacing > cfg.meta_min_interval_s  # at 41 peers the budget, not the floor, spaces
    t = 1.5
    while core.meta_version == 1 and t < 1.5 + 2 * spacing:
        t = max(t + 0.1, core.next_deadline())
        core.tick(t)
    assert core.meta_version == 2 and t >= 1.0 + spacing * 0.5 and due <= t


def test_bandwidth_ewma_and_bad_input():
    core = _core()
    core.record_transfer("p1", 1000, 1.0, 1.0)
    assert core.bandwidth("me", "p1") == 1000.0
    core.record_transfer("p1", 4000, 1.0, 2.0)
    alpha = core.config.bandwidth_alpha
    assert core.bandwidth("me", "p1") == pytest.approx(alpha * 4000 + (1 - alpha) * 1000)
    for bad in ((0, 1.0), (10, 0.0), (10, float("inf")), (-5, 1.0)):
        with pytest.raises(ConfigError):
            core.record_transfer("p1", bad[0], bad[1], 3.0)
    with pytest.raises(ConfigError):
        core.update_meta(3.0, capacity=float("nan"))
    with pytest.raises(ConfigError):
        core.update_meta(3.0, active_shares=-1)
    assert core.view(3.0).peers["me"].meta.capacity == 0.0
