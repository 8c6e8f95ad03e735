"""Frozen gossip configuration with named presets; every field carries its reason.

`GossipConfig.lan()` is the default for peers on one network, tuned with the simulator
(`amcoedge bench gossip`); `.local()` has fast timers for tests on one machine; `.wan()` tolerates
long, lossy paths. `GossipConfig.reasons()` lists why each field has its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gossip.errors import ConfigError


def _f(default: Any, why: str) -> Any:
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True, slots=True)
class GossipConfig:
    probe_interval_s: float = _f(
        0.5, "one probe per period; SWIM detects a crash in ~1.58 periods on average"
    )
    probe_timeout_s: float = _f(
        0.2, "LAN round trips are far below this; leaves most of the period for indirect probes"
    )
    indirect_checks: int = _f(
        3, "k helpers ask the target on our behalf, so one lossy path does not raise suspicion"
    )
    gossip_interval_s: float = _f(
        0.2, "memberlist's LAN gossip timer; decoupled from probing so news spreads in O(log N)"
    )
    gossip_nodes: int = _f(3, "fanout per gossip round (memberlist, Consul and Serf use 3)")
    gossip_to_dead_s: float = _f(
        10.0, "keep gossiping to recently dead peers so a falsely declared peer hears and refutes"
    )
    retransmit_mult: int = _f(
        4, "each broadcast is sent mult x ceil(log10(N+1)) times: enough to infect all w.h.p."
    )
    suspicion_mult: float = _f(
        2.0,
        "minimum suspicion = mult x max(1, log10 N) x probe interval (2 s at N=100): with "
        "confirmations from independent probers a crash is dead-everywhere within ~4 s",
    )
    suspicion_max_mult: float = _f(
        3.0,
        "a lone, unconfirmed suspicion waits this many times the minimum (6 s at N=100) so a "
        "falsely suspected peer has ample time to refute",
    )
    lifeguard: bool = _f(
        True, "local health stretches a slow peer's own probe timers (Lifeguard, 1707.00788)"
    )
    awareness_max: int = _f(
        8, "cap on the local-health multiplier: probe timers stretch at most this many times"
    )
    push_pull_interval_s: float = _f(
        30.0, "full-state sync repairs anything gossip lost; memberlist's LAN default"
    )
    push_pull_timeout_s: float = _f(5.0, "a push-pull that takes longer counts as failed")
    push_pull_max_bytes: int = _f(
        4 * 1024 * 1024, "refuse absurd push-pull frames (10k peers fit comfortably)"
    )
    join_retry_s: float = _f(1.0, "retry seeds this often until one answers")
    join_sync_rounds: int = _f(
        6,
        "after joining, up to this many push-pulls with random peers, until one teaches nothing "
        "new: peers that joined at the same moment learn each other by anti-entropy in "
        "O(log N) rounds instead of waiting for gossip to carry every alive message",
    )
    join_sync_interval_s: float = _f(1.0, "spacing of those post-join push-pulls")
    reconnect_interval_s: float = _f(
        1.0,
        "this often, ping one random dead or forgotten peer (or, when alone, the seeds); an "
        "answer starts a push-pull, so a healed partition converges within seconds on both "
        "sides (serf's reconnect, faster); a ping costs ~60 bytes and only while peers are down",
    )
    reconnect_timeout_s: float = _f(
        86400.0, "keep trying to reach a peer declared dead this long (serf's reconnect_timeout)"
    )
    dead_reap_s: float = _f(
        30.0, "forget dead and left peers after this long (memberlist GossipToTheDeadTime)"
    )
    tombstone_s: float = _f(
        300.0, "remember a reaped peer's incarnation so stale alive messages cannot revive it"
    )
    udp_payload_max: int = _f(
        1400, "fits one Ethernet frame with IP/UDP headers and the HMAC tag, no fragmentation"
    )
    meta_min_interval_s: float = _f(
        0.5, "publish load digests at most this often; the view of self is always immediate"
    )
    meta_budget_bytes_s: float = _f(
        200.0,
        "digest updates cost every peer about N x size x retransmits bytes per round of "
        "updates: each peer spaces its versions so that all peers' updates together stay "
        "within this many bytes/s per peer (one version per ~25 s per peer at 20 peers, "
        "~3 min at 100); fresh load travels in samples, digests carry bandwidth rows",
    )
    load_samples_per_datagram: int = _f(
        24,
        "every datagram (probe, ack, gossip) carries this peer's current load and up to this "
        "many fresh samples of others (~21 bytes each); fewer when the byte budget binds",
    )
    gossip_budget_bytes_s: float = _f(
        1800.0,
        "a peer adapts how many samples it forwards per datagram (one more or one fewer each "
        "second) so that all it sends (datagrams and push-pull) stays under this many bytes/s: "
        "the load it holds of others is then ~1 s old at 20 peers and <2 s at 100, under 2 KB/s",
    )
    load_sample_transmits: int = _f(
        2, "a fresh sample of another peer is forwarded at most this many times (tuned in the sim)"
    )
    load_sample_max_age_s: float = _f(
        10.0, "samples older than this are no longer forwarded (the digest carries the rest)"
    )
    bandwidth_alpha: float = _f(
        0.3, "EWMA weight of a new transfer sample: follows changes within a few transfers"
    )
    bandwidth_row_max: int = _f(
        16, "at most this many bandwidth entries per digest (most recent), bounding its size"
    )
    inbound_queue: int = _f(1024, "datagrams waiting to be processed; beyond this they drop")
    auth_skew_s: float = _f(
        60.0,
        "with a cluster key, a frame whose timestamp is further than this from our wall clock "
        "is refused (replay protection beyond the per-sender window); peers' clocks must agree "
        "this well, which NTP does by orders of magnitude",
    )

    def __post_init__(self) -> None:
        positive = (
            "probe_interval_s",
            "probe_timeout_s",
            "gossip_interval_s",
            "push_pull_interval_s",
            "push_pull_timeout_s",
            "join_retry_s",
            "join_sync_interval_s",
            "reconnect_interval_s",
            "reconnect_timeout_s",
            "meta_min_interval_s",
            "meta_budget_bytes_s",
            "suspicion_mult",
            "auth_skew_s",
            "load_sample_max_age_s",
            "gossip_budget_bytes_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError("probe_timeout_s must be shorter than probe_interval_s")
        if self.suspicion_max_mult < 1:
            raise ConfigError("suspicion_max_mult must be >= 1")
        if self.indirect_checks < 0 or self.gossip_nodes < 1 or self.retransmit_mult < 1:
            raise ConfigError("indirect_checks >= 0, gossip_nodes >= 1, retransmit_mult >= 1")
        if self.awareness_max < 1:
            raise ConfigError("awareness_max must be >= 1")
        if not 200 <= self.udp_payload_max <= 65000:
            raise ConfigError("udp_payload_max must be within [200, 65000]")
        if not 0 < self.bandwidth_alpha <= 1:
            raise ConfigError("bandwidth_alpha must be within (0, 1]")
        if self.load_samples_per_datagram < 0 or self.load_sample_transmits < 1:
            raise ConfigError("load_samples_per_datagram >= 0 and load_sample_transmits >= 1")
        if self.join_sync_rounds < 0:
            raise ConfigError("join_sync_rounds must be >= 0")
        if self.bandwidth_row_max < 0 or self.inbound_queue < 1:
            raise ConfigError("bandwidth_row_max >= 0 and inbound_queue >= 1")

    @classmethod
    def lan(cls) -> GossipConfig:
        """Peers on one LAN: 0.5 s probes, crash dead-everywhere in ~4 s at 100 peers."""
        return cls()

    @classmethod
    def local(cls) -> GossipConfig:
        """One machine (tests, loopback clusters): timers four times faster than LAN."""
        return cls(
            probe_interval_s=0.2,
            probe_timeout_s=0.08,
            gossip_interval_s=0.05,
            push_pull_interval_s=5.0,
            push_pull_timeout_s=2.0,
            join_retry_s=0.2,
            join_sync_interval_s=0.3,
            reconnect_interval_s=0.5,
            dead_reap_s=10.0,
            gossip_to_dead_s=3.0,
            meta_min_interval_s=0.1,
        )

    @classmethod
    def wan(cls) -> GossipConfig:
        """Peers across the internet: long round trips, more loss, slower and calmer timers."""
        return cls(
            probe_interval_s=2.0,
            probe_timeout_s=1.5,
            gossip_interval_s=0.5,
            gossip_nodes=4,
            suspicion_mult=3.0,
            suspicion_max_mult=4.0,
            push_pull_interval_s=60.0,
            push_pull_timeout_s=10.0,
            join_retry_s=3.0,
            reconnect_interval_s=5.0,
            dead_reap_s=60.0,
            gossip_to_dead_s=30.0,
            meta_min_interval_s=2.0,
        )

    def with_(self, **changes: Any) -> GossipConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def reasons(cls) -> dict[str, str]:
        return {f.name: str(f.metadata.get("why", "")) for f in fields(cls)}

    # -- derived quantities (pure functions of the cluster size) ---------------------------

    def retransmit_limit(self, n: int) -> int:
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_min_s(self, n: int) -> float:
        return self.suspicion_mult * max(1.0, math.log10(max(n, 1))) * self.probe_interval_s

    def suspicion_max_s(self, n: int) -> float:
        return self.suspicion_max_mult * self.suspicion_min_s(n)

    def meta_interval_s(self, n: int, update_bytes: int) -> float:
        """Spacing of this peer's digest versions that keeps load traffic within the budget."""
        cost = max(n, 1) * update_bytes * self.retransmit_limit(n)
        return max(self.meta_min_interval_s, cost / self.meta_budget_bytes_s)

    def push_pull_period_s(self, n: int) -> float:
        """memberlist's pushPullScale: beyond 32 peers the interval grows with log2(N/32)."""
        if n <= 32:
            return self.push_pull_interval_s
        return self.push_pull_interval_s * math.ceil(math.log2(n) - math.log2(32) + 1)
