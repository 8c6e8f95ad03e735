"""The SWIM membership core with Lifeguard: a pure state machine that returns effects.

SWIM (Das et al., 2002) separates failure detection from dissemination. Each protocol period this
peer probes one target in randomised round-robin order: a direct ping, then, if no ack arrives
within the probe timeout, ping-reqs through k helpers that ping the target on our behalf (and
send a nack if it stays silent). A target that fails the whole period becomes *suspect*, never
dead at once; suspicion spreads by gossip and the suspected peer refutes it by raising its
incarnation. A suspicion that is not refuted in time is declared *dead*. Lifeguard (Dadgar et
al., 2017) adds: suspicion timeouts that start long and shrink as independent peers confirm
them, and a local-health score that stretches this peer's own probe timers when it is the one
that is slow (missing nacks, having to refute). Membership changes and metadata digests ride
piggyback on every datagram from a transmit-limited queue, and a periodic full-state push-pull
over a stream repairs what gossip missed. Joining is a push-pull with seed addresses.

No clocks, sockets or asyncio: every entry point takes `now` (monotonic seconds) and returns a
list of effects (Send a datagram, call PushPull on a stream, Notify a change). Drivers call
`tick(now)` no later than `next_deadline()`.
"""

from __future__ import annotations

import heapq
import itertools
import random
import secrets
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from gossip.config import GossipConfig
from gossip.digests import LocalMeta
from gossip.dissemination import BroadcastQueue
from gossip.effects import Effect, LoadAnswer, PushPullCall, Send
from gossip.errors import (
    AuthError,
    ForgedError,
    OutOfRangeError,
    RemoteError,
    ReplayError,
    StaleError,
)
from gossip.membership import Member, Membership, MemberTable
from gossip.probing import Probe, ProbeOrder, Relay
from gossip.suspicion import LocalHealth, Suspicion
from gossip.view import Addr, PeerMeta, PeerStatus, PeerView, View
from gossip.wire import (
    Ack,
    Alive,
    Announce,
    Codec,
    Dead,
    Gossip,
    Left,
    LoadSample,
    Nack,
    Ping,
    PingReq,
    Primary,
    PushPull,
    Suspect,
    encode_broadcast,
    encode_primary,
    encode_push_pull,
)

_REAP_CHECK_S = 1.0
_MAX_GONE = 1024


class GossipCore:
    """One peer's membership state machine."""

    def __init__(
        self,
        meta: PeerMeta,
        config: GossipConfig,
        now: float,
        *,
        secret: bytes | None = None,
        seed: int | None = None,
        wall: float | None = None,
    ) -> None:
        self.config = config
        self.name = meta.name
        # Wall-clock time, for the timestamps of authenticated frames, is `now` plus this
        # offset: taken once (`wall` is the wall clock at `now`), so it advances with `now`.
        self._wall_offset = 0.0 if wall is None else wall - now
        self._now = now
        boot = (
            random.Random(f"boot:{seed}:{meta.name}").getrandbits(63)
            if seed is not None
            else secrets.randbits(63)
        )
        self.codec = Codec(secret, meta.name, boot, config.auth_skew_s)
        self._rng = random.Random(seed)
        self._local = LocalMeta(
            meta, config.bandwidth_alpha, config.meta_min_interval_s, config.bandwidth_row_max, now
        )
        self._joined = False
        self._seeds: list[Addr] = []
        digest = self._local.digest
        self._members = MemberTable(Member(self.name, 0, "alive", digest, now), self._rng)
        self._queue = BroadcastQueue()
        self._order = ProbeOrder(self._rng)
        self._gossip_order = ProbeOrder(self._rng)
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._health = LocalHealth(config.awareness_max, config.lifeguard)
        self._seq = self._rng.randrange(1 << 30)
        self._next_probe = now + self._rng.uniform(0, config.probe_interval_s)
        self._next_gossip = now + self._rng.uniform(0, config.gossip_interval_s)
        self._next_push_pull = now + config.push_pull_interval_s * (1 + self._rng.random())
        self._next_reap = now + _REAP_CHECK_S
        self._next_reconnect = now + config.reconnect_interval_s * (1 + self._rng.random())
        # Forgotten dead peers still worth trying to reach: name -> (addr, incarnation, until).
        self._gone: dict[str, tuple[Addr, int, float]] = {}
        self._reconnects: dict[int, tuple[Addr, float]] = {}  # ping seq -> (addr, expiry)
        self._join_retry_at: float | None = None
        self._sync_left = 0
        self._next_sync = now
        self._out: list[Effect] = []
        self.counters: dict[str, int] = {
            "probes": 0,
            "probe_failures": 0,
            "indirect_probes": 0,
            "suspicions_raised": 0,
            "deaths_declared": 0,
            "suspicions_reprieved": 0,
            "refutations": 0,
            "dropped_malformed": 0,
            "dropped_auth": 0,
            "dropped_replay": 0,
            "dropped_stale": 0,
            "dropped_forged": 0,
            "dropped_out_of_range": 0,
            "misdirected": 0,
            "push_pull_out": 0,
            "push_pull_in": 0,
            "push_pull_failed": 0,
        }
        self._ms = Membership(
            self.name,
            config,
            self._members,
            self._queue,
            self._local,
            self._health,
            self.counters,
            self._out,
            self._on_live,
            self._on_fresh_sample,
        )
        self._own_sample: tuple[object, bytes] = (None, b"")
        # The byte budget: bytes sent in the current second, their smoothed rate, and how
        # many samples of others each datagram may carry (adapted once a second).
        self._sent_bytes = 0  # datagrams, this second
        self._pp_bytes = 0  # push-pull payloads, this second
        self._sent_since = now
        self.sent_rate = 0.0  # datagram bytes/s, smoothed over a few seconds
        self.pp_rate = 0.0  # push-pull bytes/s, smoothed over about a minute (bursty)
        self.samples_per_datagram = max(0, config.load_samples_per_datagram // 2)
        self._fwd: dict[str, int] = {}  # samples of others to forward: name -> sends left
        self._load_reqs: dict[int, tuple[str, float]] = {}  # ping seq -> (name, expiry)
        self._queue.put(("m", self.name), encode_broadcast(Alive(self.name, 0, digest)))

    # -- read-only accessors -----------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._ms.incarnation

    @property
    def health(self) -> int:
        return self._health.score

    @property
    def joined(self) -> bool:
        return self._joined

    @property
    def meta(self) -> PeerMeta:
        return self._local.meta

    @property
    def meta_version(self) -> int:
        return self._local.digest.version

    def num_live(self) -> int:
        return self._members.live

    def status_of(self, name: str) -> PeerStatus | None:
        m = self._members.get(name)
        return None if m is None else m.status

    def member_names(self) -> list[str]:
        return self._members.names()

    def digest_version(self, name: str) -> int | None:
        m = self._members.get(name)
        return None if m is None else m.digest.version

    def queued_broadcasts(self) -> int:
        return len(self._queue)

    def self_broadcast_transmits(self) -> int | None:
        return self._queue.transmits(("m", self.name))

    def bandwidth(self, src: str, dst: str) -> float | None:
        if src == self.name:
            return self._local.bw.get(dst)
        m = self._members.get(src)
        if m is None:
            return None
        for peer, rate in m.digest.bandwidth:
            if peer == dst:
                return rate
        return None

    def view(self, now: float) -> View:
        peers: dict[str, PeerView] = {}
        for m in self._members.values():
            if m.name == self.name:
                status: PeerStatus = "left" if self._ms.leaving else "alive"
                peers[m.name] = PeerView(
                    m.name,
                    status,
                    self._ms.incarnation,
                    self._local.meta,
                    max(0.0, now - self._local.at),
                    self._local.bw.as_dict(),
                )
            else:
                meta, at = m.load()
                peers[m.name] = PeerView(
                    m.name,
                    m.status,
                    m.incarnation,
                    meta,
                    max(0.0, now - at),
                    dict(m.digest.bandwidth),
                )
        return View.build(self.name, peers, now)

    def load_age(self, name: str, now: float) -> float | None:
        """How old the load this peer holds of `name` is (None: unknown peer)."""
        if name == self.name:
            return 0.0
        m = self._members.get(name)
        return None if m is None else max(0.0, now - m.load()[1])

    def next_deadline(self) -> float:
        times = [self._next_gossip, self._next_reap, self._next_push_pull, self._next_reconnect]
        if not self._ms.leaving:
            times.append(self._next_probe)
        p = self._probe
        if p is not None:
            times.append(p.end)
            if not p.indirect_sent:
                times.append(p.indirect_at)
        if self._join_retry_at is not None:
            times.append(self._join_retry_at)
        if self._sync_left:
            times.append(self._next_sync)
        if self._local.due is not None:
            times.append(self._local.due)
        for r in self._relays.values():
            times.append(r.deadline)
        for s in self._ms.suspicions.values():
            times.append(s.deadline())
        return min(times)

    # -- entry points ------------------------------------------------------------------------

    def join(self, seeds: Iterable[Addr], now: float) -> list[Effect]:
        self._now = now
        self._seeds = [s for s in seeds if s != self._local.meta.gossip_addr]
        if self._seeds:
            self._send_join(now)
        else:
            self._joined = True
        return self._flush()

    def tick(self, now: float) -> list[Effect]:
        self._now = now
        cfg = self.config
        p = self._probe
        if p is not None:
            if not p.indirect_sent and now >= p.indirect_at:
                self._send_indirect(p)
            if now >= p.end:
                self._probe_failed(p, now)
        if self._probe is None and not self._ms.leaving and now >= self._next_probe:
            self._start_probe(now)
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            self._send(relay.requester_addr, Nack(relay.orig_seq, self.name))
        for name in [n for n, s in self._ms.suspicions.items() if now >= s.deadline()]:
            s = self._ms.suspicions[name]
            m = self._members.get(name)
            if m is None or m.status != "suspect" or m.incarnation != s.incarnation:
                del self._ms.suspicions[name]
            elif s.final_seq is None:
                self._final_probe(s, m, now)
            else:
                del self._ms.suspicions[name]
                self.counters["deaths_declared"] += 1
                self._ms.on_dead(Dead(name, m.incarnation, self.name), now)
        if now >= self._next_gossip:
            self._next_gossip = now + cfg.gossip_interval_s
            self._gossip(now)
        if now >= self._next_push_pull:
            self._next_push_pull = now + cfg.push_pull_period_s(self._members.live)
            target = self._members.sample(1, exclude=())
            if target:
                self._push_pull_to(self._members[target[0]].addr, join=False)
            elif self._seeds and not self._ms.leaving:
                self._send_join(now)  # isolated: go back to the seeds
        if now >= self._next_reconnect:
            self._next_reconnect = now + cfg.reconnect_interval_s
            self._reconnect(now)
        if self._join_retry_at is not None and now >= self._join_retry_at:
            self._send_join(now)
        if self._sync_left and now >= self._next_sync:
            self._sync_left -= 1
            self._next_sync = now + cfg.join_sync_interval_s
            target = self._members.sample(1, exclude=())
            if target:
                self._push_pull_to(self._members[target[0]].addr, join=False)
        if self._local.due is not None and now >= self._local.due:
            self._ms.publish_meta(now)
        if now >= self._next_reap:
            self._next_reap = now + _REAP_CHECK_S
            self._reap(now)
            self._adapt_samples(now)
        return self._flush()

    def handle(self, data: bytes, src_addr: Addr, now: float) -> list[Effect]:
        """One datagram from the network. Malformed or forged ones are dropped and counted.

        Never raises for anything the network sends.
        """
        self._now = now
        try:
            sender, primary, broadcasts = self.codec.decode_datagram(data, self._wall(now))
        except RemoteError as exc:
            self._count_drop(exc)
            return []
        announce = primary.src if isinstance(primary, Announce) else None
        if sender is None and any(type(b) is Left for b in broadcasts):
            sender = self._sender_at(src_addr)
        for b in broadcasts:
            if announce is not None and isinstance(b, Alive) and b.name == announce:
                self._ms.on_alive(b, now, gossip_new=False)  # sent to every peer already
            else:
                self._ms.on_broadcast(b, now, sender)
        self._on_primary(primary, src_addr, now)
        return self._flush()

    def handle_push_pull(self, payload: bytes, now: float) -> tuple[bytes, list[Effect]]:
        """Serve a push-pull from another peer: merge its state, reply with ours.

        Raises DecodeError or AuthError (after counting) for a bad payload.
        """
        self._now = now
        try:
            pp = self.codec.decode_push_pull(
                payload, self.config.push_pull_max_bytes, self._wall(now)
            )
        except RemoteError as exc:
            self._count_drop(exc)
            raise
        self.counters["push_pull_in"] += 1
        self._merge_remote(pp, now)
        reply = self._state_payload(join=False)
        self._pp_bytes += len(reply)
        return reply, self._flush()

    def push_pull_reply(self, payload: bytes, now: float) -> list[Effect]:
        self._now = now
        try:
            pp = self.codec.decode_push_pull(
                payload, self.config.push_pull_max_bytes, self._wall(now)
            )
        except RemoteError as exc:
            self._count_drop(exc)
            self.counters["push_pull_failed"] += 1
            return self._flush()
        learned = self._merge_remote(pp, now)
        if not self._joined:
            self._on_joined(now)
        elif self._sync_left and learned == 0 and not pp.join:
            self._sync_left = 0  # anti-entropy after joining has converged
        return self._flush()

    def push_pull_failed(self, addr: Addr, join: bool, now: float) -> list[Effect]:
        self._now = now
        self.counters["push_pull_failed"] += 1
        return self._flush()

    def update_meta(
        self,
        now: float,
        *,
        capacity: float | None = None,
        queued_s: float | None = None,
        active_shares: int | None = None,
    ) -> list[Effect]:
        self._now = now
        changes: dict[str, Any] = {}
        if capacity is not None:
            changes["capacity"] = capacity
        if queued_s is not None:
            changes["queued_s"] = queued_s
        if active_shares is not None:
            changes["active_shares"] = active_shares
        if changes:
            self._local.meta = replace(self._local.meta, **changes)  # validates in __post_init__
            self._ms.schedule_publish(now)
        return self._flush()

    def record_transfer(self, dst: str, nbytes: int, seconds: float, now: float) -> list[Effect]:
        self._now = now
        self._local.bw.record(dst, nbytes, seconds, now)
        self._ms.schedule_publish(now)
        return self._flush()

    def request_load(self, names: Iterable[str], now: float) -> tuple[dict[str, int], list[Effect]]:
        """Ping each named live peer directly; its ack carries its current load.

        Returns {name: seq} for the peers pinged (unknown, dead and self are skipped) and the
        effects; each answer is a `LoadAnswer(name, seq)` effect, by which time the sample is
        applied. Unanswered requests expire silently (the caller bounds its wait).
        """
        self._now = now
        asked: dict[str, int] = {}
        for name in dict.fromkeys(names):
            m = self._members.get(name)
            if m is None or not m.live or name == self.name or len(self._load_reqs) >= 4096:
                continue
            seq = self._next_seq()
            self._load_reqs[seq] = (name, now + 10.0)
            asked[name] = seq
            self._send(m.addr, Ping(seq, name, self.name, self._addr))
        return asked, self._flush()

    def leave(self, now: float) -> list[Effect]:
        """Announce a graceful leave to every live member directly; keep gossiping, stop probing.

        Peers accept a `Left` only from the leaving peer itself and never relay it (see
        `membership`), so it goes to each of them, and rides on our gossip until we stop.
        """
        self._now = now
        if not self._ms.leaving:
            self._probe = None
            self._ms.leave()
            data = self._seal(
                encode_primary(Gossip(self.name))
                + encode_broadcast(Left(self.name, self._ms.incarnation))
            )
            for m in self._members.values():
                if m.name != self.name and m.live:
                    self._out.append(Send(m.addr, data))
        return self._flush()

    @property
    def _addr(self) -> Addr:
        return self._local.meta.gossip_addr

    # -- probing -----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return self._seq

    def _start_probe(self, now: float) -> None:
        cfg = self.config
        interval = self._health.scale(cfg.probe_interval_s)
        self._next_probe = now + interval
        target = self._order.next(self._probe_eligible, self._members.__contains__)
        if target is None:
            return
        seq = self._next_seq()
        timeout = self._health.scale(cfg.probe_timeout_s)
        self._probe = Probe(seq, target, now + timeout, now + interval)
        self.counters["probes"] += 1
        m = self._members[target]
        # Lifeguard's buddy system: tell a suspected peer directly, so it can refute at once.
        buddy = (
            encode_broadcast(Suspect(target, m.incarnation, self.name))
            if m.status == "suspect"
            else b""
        )
        self._send(m.addr, Ping(seq, target, self.name, self._addr), extra=buddy)

    def _probe_eligible(self, name: str) -> bool:
        m = self._members.get(name)
        return m is not None and m.live and name != self.name

    def _send_indirect(self, p: Probe) -> None:
        p.indirect_sent = True
        target = self._members.get(p.target)
        if target is None:
            return
        helpers = self._members.sample(self.config.indirect_checks, exclude=(p.target,))
        p.expected_nacks = len(helpers)
        self.counters["indirect_probes"] += 1
        for h in helpers:
            self._send(
                self._members[h].addr,
                PingReq(p.seq, p.target, target.addr, self.name, self._addr),
            )

    def _final_probe(self, s: Suspicion, m: Member, now: float) -> None:
        """Before declaring a suspect dead, probe it once more, directly and indirectly.

        The ping carries the suspicion (buddy system); a peer that refuted long ago answers
        with its alive message piggybacked. This closes the gap where loss kept every copy of
        a refutation away from this one peer.
        """
        seq = self._next_seq()
        s.final_seq = seq
        s.final_deadline = now + self._health.scale(self.config.probe_interval_s)
        buddy = encode_broadcast(Suspect(m.name, m.incarnation, self.name))
        self._send(m.addr, Ping(seq, m.name, self.name, self._addr), extra=buddy)
        for h in self._members.sample(self.config.indirect_checks, exclude=(m.name,)):
            self._send(self._members[h].addr, PingReq(seq, m.name, m.addr, self.name, self._addr))

    def _probe_failed(self, p: Probe, now: float) -> None:
        self._probe = None
        self.counters["probe_failures"] += 1
        if p.expected_nacks > 0:
            self._health.apply(max(0, p.expected_nacks - p.nacks))
        else:
            self._health.apply(1)
        m = self._members.get(p.target)
        if m is not None and m.live:
            # Raises a suspicion, or confirms one we heard of (Lifeguard's independent confirmation).
            self.counters["suspicions_raised"] += 1
            self._ms.on_suspect(Suspect(p.target, m.incarnation, self.name), now)

    # -- primary messages --------------------------------------------------------------------

    def _on_primary(self, msg: Primary, src_addr: Addr, now: float) -> None:
        if isinstance(msg, Ping):
            if msg.target != self.name:
                self.counters["misdirected"] += 1
                return
            self._send(msg.src_addr, Ack(msg.seq, self.name))
        elif isinstance(msg, Ack):
            p = self._probe
            if p is not None and p.seq == msg.seq:
                self._probe = None
                self._health.apply(-1)
                return
            relay = self._relays.pop(msg.seq, None)
            if relay is not None and relay.target == msg.src:
                self._send(relay.requester_addr, Ack(relay.orig_seq, msg.src))
                return
            req = self._load_reqs.get(msg.seq)
            if req is not None and req[0] == msg.src:
                del self._load_reqs[msg.seq]
                self._out.append(LoadAnswer(msg.src, msg.seq))
                return
            reconnect = self._reconnects.pop(msg.seq, None)
            if reconnect is not None:
                # A peer we hold dead or forgot answers: exchange full states (each side
                # learns it was declared dead and refutes; tombstones do not block states).
                self._push_pull_to(reconnect[0], join=False)
                return
            susp = self._ms.suspicions.get(msg.src)
            if susp is not None and susp.final_seq == msg.seq:
                # The suspect answered our last-chance probe: it lives; wait for its refutation.
                self.counters["suspicions_reprieved"] += 1
                susp.restart(now, self.name)
        elif isinstance(msg, Nack):
            p = self._probe
            if p is not None and p.seq == msg.seq:
                p.nacks += 1
        elif isinstance(msg, PingReq):
            if msg.target == self.name:
                return
            seq = self._next_seq()
            if len(self._relays) < 1024:
                self._relays[seq] = Relay(
                    msg.seq, msg.src_addr, msg.target, now + self.config.probe_timeout_s
                )
                self._send(msg.target_addr, Ping(seq, msg.target, self.name, self._addr))
        # Gossip carries only broadcasts, already merged.

    # -- gossip, push-pull, join, reaping ----------------------------------------------------

    def _gossip(self, now: float) -> None:
        """Send queued broadcasts to the next `gossip_nodes` peers of a shuffled round-robin.

        Round-robin rather than independent random picks: every peer gets its share of each
        broadcast's transmissions, so a lossy link cannot starve one peer of a refutation.
        """
        if not len(self._queue):
            return
        horizon = now - self.config.gossip_to_dead_s
        members = self._members

        def eligible(name: str) -> bool:
            m = members.get(name)
            return (
                m is not None
                and name != self.name
                and (m.live or (m.status == "dead" and m.since >= horizon))
            )

        sent: set[str] = set()
        for _ in range(self.config.gossip_nodes):
            name = self._gossip_order.next(eligible, members.__contains__)
            if name is None or name in sent or not len(self._queue):
                break
            sent.add(name)
            self._send(members[name].addr, Gossip(self.name), require_broadcasts=True)

    def _state_payload(self, join: bool) -> bytes:
        gone = tuple((name, g[1]) for name, g in self._gone.items())
        pp = PushPull(self.name, join, self._ms.state_members(), gone)
        return self._seal(encode_push_pull(pp))

    def _reconnect(self, now: float) -> None:
        """Ping one random dead or forgotten peer; alone, also go back to the seeds.

        Serf's reconnect: a healed partition or a false verdict is repaired here. The ping is
        small; only an answer (an ack) costs a push-pull.
        """
        for seq in [s for s, (_, until) in self._reconnects.items() if until <= now]:
            del self._reconnects[seq]
        for seq in [s for s, (_, until) in self._load_reqs.items() if until <= now]:
            del self._load_reqs[seq]
        for name in [n for n, g in self._gone.items() if g[2] <= now]:
            del self._gone[name]
        if self._ms.leaving:
            return
        if self._members.live <= 1 and self._seeds and self._joined:
            self._send_join(now)
            self._join_retry_at = None  # not a join: no retry loop
        dead = self._members.random_dead()
        n_gone = len(self._gone)
        total = (0 if dead is None else self._members.dead_count()) + n_gone
        if total == 0 or len(self._reconnects) >= 64:
            return
        k = self._rng.randrange(total)
        if k < n_gone:
            name = next(itertools.islice(self._gone, k, None))
            addr = self._gone[name][0]
        else:
            assert dead is not None
            name, addr = dead, self._members[dead].addr
        seq = self._next_seq()
        self._reconnects[seq] = (addr, now + self.config.reconnect_interval_s * 4)
        self._send(addr, Ping(seq, name, self.name, self._addr))

    def _push_pull_to(self, addr: Addr, join: bool) -> None:
        self.counters["push_pull_out"] += 1
        payload = self._state_payload(join)
        self._pp_bytes += len(payload)
        self._out.append(PushPullCall(addr, payload, join))

    def _send_join(self, now: float) -> None:
        for addr in self._seeds:
            self._push_pull_to(addr, join=True)
        self._join_retry_at = now + self.config.join_retry_s

    def _merge_remote(self, pp: PushPull, now: float) -> int:
        learned = self._ms.merge_remote(pp, now)
        if len(self._members) > 1 and not self._joined:
            self._on_joined(now)
        return learned

    def _on_joined(self, now: float) -> None:
        self._joined = True
        self._join_retry_at = None
        if self._seeds:
            self._sync_left = self.config.join_sync_rounds
            self._next_sync = now + self.config.join_sync_interval_s
        # Announce ourselves once to every peer the join taught us of: N small datagrams, so
        # no peer depends on the luck of gossip (or waits for a push-pull) to learn of us.
        alive = Alive(self.name, self._ms.incarnation, self._local.digest)
        data = self._seal(encode_primary(Announce(self.name)) + encode_broadcast(alive))
        for m in self._members.values():
            if m.name != self.name and m.live:
                self._out.append(Send(m.addr, data))

    def _reap(self, now: float) -> None:
        cfg = self.config
        for m in self._members.reap(now, cfg.dead_reap_s, cfg.tombstone_s):
            self._queue.discard(("m", m.name))
            self._queue.discard(("d", m.name))
            if m.status == "dead":  # a peer that left said so itself: not worth reaching
                if len(self._gone) >= _MAX_GONE:
                    del self._gone[next(iter(self._gone))]
                self._gone[m.name] = (m.addr, m.incarnation, now + cfg.reconnect_timeout_s)
        self._queue.prune(cfg.retransmit_limit(self._members.live))

    # -- output ------------------------------------------------------------------------------

    def _samples(self) -> bytes:
        """This peer's current load, then fresh samples of others, freshest news first."""
        local = self._local
        meta = local.meta
        key = (local.digest.version, meta.capacity, meta.queued_s, meta.active_shares)
        if self._own_sample[0] != key:
            own = LoadSample(self.name, key[0], 0.0, key[1], key[2], key[3])
            self._own_sample = (key, encode_broadcast(own))
        out = [self._own_sample[1]]
        k = self.samples_per_datagram
        if k and self._fwd:
            horizon = self._now - self.config.load_sample_max_age_s
            done: list[str] = []
            members = self._members
            fresh: list[tuple[float, str]] = []
            for name in self._fwd:
                m = members.get(name)
                if m is None or m.sample is None or m.sample_at < horizon:
                    done.append(name)
                else:
                    fresh.append((m.sample_at, name))
            # The youngest samples first: they refresh the most at their receivers.
            for _, name in heapq.nlargest(k, fresh) if len(fresh) > k else fresh:
                m = members[name]
                sample = m.sample
                if sample is None:
                    continue
                out.append(
                    encode_broadcast(
                        LoadSample(name, m.sample_version, self._now - m.sample_at, *sample)
                    )
                )
                self._fwd[name] -= 1
                if self._fwd[name] <= 0:
                    done.append(name)
            for name in done:
                del self._fwd[name]
        return b"".join(out)

    def _adapt_samples(self, now: float) -> None:
        """One step of the byte-budget controller: +1 sample per datagram while this peer's
        datagrams stay under 93% of what the budget leaves after push-pull, -1 over it."""
        dt = now - self._sent_since
        if dt <= 0:
            return
        rate = self._sent_bytes / dt
        pp = self._pp_bytes / dt
        self._sent_bytes = 0
        self._pp_bytes = 0
        self._sent_since = now
        self.sent_rate = 0.7 * self.sent_rate + 0.3 * rate
        self.pp_rate = 0.98 * self.pp_rate + 0.02 * pp
        budget = self.config.gossip_budget_bytes_s - self.pp_rate
        if self.sent_rate > budget:
            self.samples_per_datagram = max(0, self.samples_per_datagram - 1)
        elif self.sent_rate < 0.93 * budget:
            self.samples_per_datagram = min(
                self.config.load_samples_per_datagram, self.samples_per_datagram + 1
            )

    def _on_fresh_sample(self, name: str) -> None:
        self._fwd.pop(name, None)
        self._fwd[name] = self.config.load_sample_transmits

    def _send(
        self, addr: Addr, msg: Primary, require_broadcasts: bool = False, extra: bytes = b""
    ) -> None:
        if require_broadcasts and not len(self._queue):
            return
        head = encode_primary(msg) + extra + self._samples()
        budget = self.config.udp_payload_max - self.codec.overhead - len(head)
        items = self._queue.take(budget, self.config.retransmit_limit(self._members.live))
        if require_broadcasts and not items:
            return
        data = self._seal(head + b"".join(items))
        self._sent_bytes += len(data)
        self._out.append(Send(addr, data))

    def _count_drop(self, exc: RemoteError) -> None:
        if isinstance(exc, ReplayError):
            key = "dropped_replay"
        elif isinstance(exc, StaleError):
            key = "dropped_stale"
        elif isinstance(exc, AuthError):
            key = "dropped_auth"
        elif isinstance(exc, ForgedError):
            key = "dropped_forged"
        elif isinstance(exc, OutOfRangeError):
            key = "dropped_out_of_range"
        else:
            key = "dropped_malformed"
        self.counters[key] += 1

    def _wall(self, now: float) -> float:
        return now + self._wall_offset

    def _seal(self, body: bytes) -> bytes:
        return self.codec.seal(body, self._wall(self._now))

    def _sender_at(self, addr: Addr) -> str | None:
        """Without a key: the member whose gossip address sent a datagram (None if none)."""
        for m in self._members.values():
            if m.addr == addr and m.name != self.name:
                return m.name
        return None

    def _on_live(self, name: str) -> None:
        self._gone.pop(name, None)
        self._order.add(name)
        self._gossip_order.add(name)

    def _flush(self) -> list[Effect]:
        out = self._out[:]
        self._out.clear()  # the list is shared with the membership rules
        return out
