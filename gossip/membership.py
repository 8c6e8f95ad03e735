"""Membership: the merge rules, the member table, and the rules that apply broadcasts.

A peer's membership state is (incarnation, status). States are totally ordered by
(incarnation, rank) with alive < suspect < dead < left at one incarnation, and a merge keeps the
larger, so merging is commutative, associative, idempotent and monotone in incarnation. Only the
peer itself raises its incarnation (to refute a suspicion or rejoin). Metadata digests are
ordered by version, with a deterministic tie-break so replicas agree even on a conflict.

The rules cannot be turned against a member:
- incarnations never leave the wire's range: refutation saturates at `MAX_INCARNATION` and
  the decoder refuses anything above it;
- an alive/suspect/dead/left message whose incarnation jumps more than `MAX_INCARNATION_JUMP`
  past the one we hold for that peer (ourselves included) is dropped and counted
  (`dropped_out_of_range`): incarnations grow by one per refutation, so only a forger jumps;
- `Left` about a peer is accepted only from that peer itself (the authenticated sender with a
  cluster key; without one, a datagram from that peer's gossip address) and never relayed; a
  `Left` from anyone else is dropped and counted (`dropped_forged`). A peer that leaves tells
  every member directly; one that misses it detects the departure as a failure. In a
  push-pull state `left` counts as `dead` (a suspicion, memberlist's rule).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from gossip.config import GossipConfig
from gossip.digests import LocalMeta
from gossip.dissemination import BroadcastQueue
from gossip.effects import Notify
from gossip.suspicion import LocalHealth, Suspicion
from gossip.view import STATUS_RANK, Addr, PeerMeta, PeerStatus
from gossip.wire import (
    MAX_INCARNATION,
    Alive,
    Broadcast,
    Dead,
    Digest,
    Left,
    Load,
    LoadSample,
    MemberState,
    PushPull,
    Suspect,
    encode_broadcast,
)

MAX_INCARNATION_JUMP = 1 << 32
"""The largest step an incoming incarnation may take past the one held for that peer."""

State = tuple[int, PeerStatus]


def state_key(state: State) -> tuple[int, int]:
    return (state[0], STATUS_RANK[state[1]])


def supersedes(new: State, old: State) -> bool:
    """True if `new` strictly overrides `old`."""
    return state_key(new) > state_key(old)


def merge_state(a: State, b: State) -> State:
    return a if state_key(a) >= state_key(b) else b


def _digest_tiebreak(d: Digest) -> tuple[str, tuple[tuple[str, float], ...]]:
    return (repr(d.meta), d.bandwidth)


def digest_newer(new: Digest, old: Digest) -> bool:
    """True if `new` strictly overrides `old` (higher version; a tie broken by content)."""
    if new.version != old.version:
        return new.version > old.version
    if new == old:
        return False
    return _digest_tiebreak(new) > _digest_tiebreak(old)


def merge_digest(a: Digest, b: Digest) -> Digest:
    return b if digest_newer(b, a) else a


class Member:
    """The local record of one peer (mutable, owned by the core)."""

    __slots__ = (
        "digest",
        "digest_at",
        "incarnation",
        "name",
        "sample",
        "sample_at",
        "sample_meta",
        "sample_version",
        "since",
        "status",
    )

    def __init__(
        self, name: str, incarnation: int, status: PeerStatus, digest: Digest, now: float
    ) -> None:
        self.name = name
        self.incarnation = incarnation
        self.status: PeerStatus = status
        self.since = now
        self.digest = digest
        self.digest_at = now
        # The freshest load sample (capacity, queued_s, active_shares), the digest version it
        # was taken under, and when it was taken (our clock, estimated from its age).
        self.sample: tuple[float, float, int] | None = None
        self.sample_version = -1
        self.sample_at = -math.inf
        self.sample_meta: PeerMeta | None = None  # built when first needed

    def load(self) -> tuple[PeerMeta, float]:
        """This peer's metadata with its freshest load, and when that load was current."""
        sample = self.sample
        if sample is None or self.sample_version < self.digest.version:
            return self.digest.meta, self.digest_at
        # Taken while that digest version (or a newer one) was current: newer content.
        sm = self.sample_meta
        base = self.digest.meta
        if sm is None or sm.name != base.name or sm.gossip_addr != base.gossip_addr:
            if (base.capacity, base.queued_s, base.active_shares) == sample:
                sm = base
            else:
                sm = replace(base, capacity=sample[0], queued_s=sample[1], active_shares=sample[2])
            self.sample_meta = sm
        return sm, self.sample_at

    @property
    def addr(self) -> Addr:
        return self.digest.meta.gossip_addr

    @property
    def state(self) -> State:
        return (self.incarnation, self.status)

    @property
    def live(self) -> bool:
        return self.status == "alive" or self.status == "suspect"


class MemberTable:
    """All known peers (self included), with O(1) random sampling and tombstones.

    Keeps the count of live (alive + suspect) peers and the set of dead/left peers so that
    reaping touches only those.
    """

    __slots__ = ("_down", "_idx", "_members", "_others", "_rng", "_tombstones", "live", "local")

    def __init__(self, local: Member, rng: random.Random) -> None:
        self.local = local.name
        self._rng = rng
        self._members: dict[str, Member] = {local.name: local}
        self._others: list[str] = []  # names of other members, for O(1) sampling
        self._idx: dict[str, int] = {}
        self._down: dict[str, None] = {}  # dead or left (other) members; ordered for determinism
        self._tombstones: dict[str, tuple[int, float]] = {}
        self.live = 1  # alive + suspect, self included

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def get(self, name: str) -> Member | None:
        return self._members.get(name)

    def __getitem__(self, name: str) -> Member:
        return self._members[name]

    def values(self) -> Iterator[Member]:
        return iter(self._members.values())

    def names(self) -> list[str]:
        return list(self._members)

    def admits(self, name: str, incarnation: int) -> bool:
        """False for a reaped peer's stale incarnation (its tombstone outranks it)."""
        tomb = self._tombstones.get(name)
        return tomb is None or incarnation > tomb[0]

    def add(self, m: Member) -> None:
        self._tombstones.pop(m.name, None)
        self._members[m.name] = m
        self._idx[m.name] = len(self._others)
        self._others.append(m.name)
        if m.live:
            self.live += 1
        else:
            self._down[m.name] = None

    def set_state(self, m: Member, incarnation: int, status: PeerStatus, now: float) -> bool:
        """Apply a state; True if the peer became live again."""
        was_live = m.live
        m.incarnation = incarnation
        m.status = status
        m.since = now
        if m.name == self.local:
            return False
        if was_live and not m.live:
            self.live -= 1
            self._down[m.name] = None
        elif m.live and not was_live:
            self.live += 1
            self._down.pop(m.name, None)
            return True
        return False

    def sample(
        self, k: int, exclude: tuple[str, ...], include_dead_since: float | None = None
    ) -> list[str]:
        """Up to k distinct random live peers (and dead ones that died after the horizon)."""
        others = self._others
        if not others or k <= 0:
            return []
        limit = 3 * k + 8
        if len(others) <= limit:
            pool = others[:]
            self._rng.shuffle(pool)
        else:
            pool = [others[self._rng.randrange(len(others))] for _ in range(limit)]
        chosen: list[str] = []
        for name in pool:
            if name in chosen or name in exclude:
                continue
            m = self._members[name]
            if m.live or (
                include_dead_since is not None
                and m.status == "dead"
                and m.since >= include_dead_since
            ):
                chosen.append(name)
                if len(chosen) == k:
                    break
        return chosen

    def dead_count(self) -> int:
        return sum(1 for n in self._down if self._members[n].status == "dead")

    def random_dead(self) -> str | None:
        dead = [n for n in self._down if self._members[n].status == "dead"]
        return None if not dead else dead[self._rng.randrange(len(dead))]

    def reap(self, now: float, dead_reap_s: float, tombstone_s: float) -> list[Member]:
        """Forget peers dead or left for longer than `dead_reap_s`; remember a tombstone."""
        cutoff = now - dead_reap_s
        names = [n for n in self._down if self._members[n].since <= cutoff]
        gone = []
        for name in names:
            m = self._members.pop(name)
            gone.append(m)
            self._down.pop(name, None)
            self._tombstones[name] = (m.incarnation, now + tombstone_s)
            i = self._idx.pop(name)
            last = self._others.pop()
            if last != name:
                self._others[i] = last
                self._idx[last] = i
        for name in [n for n, (_, until) in self._tombstones.items() if until <= now]:
            del self._tombstones[name]
        return gone


class Membership:
    """The membership rules of one peer: incarnations, refutation, suspicion, digests.

    Applies alive / suspect / dead / left broadcasts and load updates in the merge order above,
    queues what must be re-gossiped, refutes accusations against this peer by raising its
    incarnation, and starts suspicion timers (the core expires them). Shares the member table,
    broadcast queue and output list with the core that owns it.
    """

    def __init__(
        self,
        name: str,
        config: GossipConfig,
        table: MemberTable,
        queue: BroadcastQueue,
        local: LocalMeta,
        health: LocalHealth,
        counters: dict[str, int],
        out: list[Any],
        on_live: Callable[[str], None],
        on_fresh_sample: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.name = name
        self.config = config
        self.table = table
        self.queue = queue
        self.local = local
        self.health = health
        self.counters = counters
        self.out = out
        self.on_live = on_live
        self.on_fresh_sample = on_fresh_sample
        self.incarnation = 0
        self.leaving = False
        self.suspicions: dict[str, Suspicion] = {}

    def leave(self) -> None:
        self.leaving = True
        self.table[self.name].status = "left"
        self.queue.put(("m", self.name), encode_broadcast(Left(self.name, self.incarnation)))

    def state_members(self) -> tuple[MemberState, ...]:
        out = []
        for m in self.table.values():
            if m.name == self.name:
                status: PeerStatus = "left" if self.leaving else "alive"
                out.append(MemberState(m.name, self.incarnation, status, self.local.digest))
            else:
                out.append(MemberState(m.name, m.incarnation, m.status, m.digest))
        return tuple(out)

    # -- broadcasts -------------------------------------------------

    def on_broadcast(self, b: Broadcast, now: float, sender: str | None = None) -> None:
        """Apply one broadcast; `sender` is who sent the datagram (None: unknown)."""
        if isinstance(b, Alive):
            self.on_alive(b, now)
        elif isinstance(b, Suspect):
            self.on_suspect(b, now)
        elif isinstance(b, Dead):
            self.on_dead(b, now)
        elif isinstance(b, Left):
            if sender != b.name:
                self.counters["dropped_forged"] += 1
                return
            self.on_left(b, now)
        elif isinstance(b, LoadSample):
            self.on_sample(b, now)
        else:
            self.on_load(b, now)

    def on_sample(self, s: LoadSample, now: float) -> bool:
        """Apply a load sample if it is fresher than what we hold; True if it was."""
        if s.name == self.name:
            return False
        m = self.table.get(s.name)
        taken = now - s.age_s
        if m is None or taken <= m.sample_at or self.version_implausible(s.name, s.version):
            return False
        before = m.sample if m.sample_version >= m.digest.version else None
        value = (s.capacity, s.queued_s, s.active_shares)
        if value != m.sample:
            m.sample_meta = None
        m.sample = value
        m.sample_version = s.version
        m.sample_at = taken
        self.on_fresh_sample(s.name)
        if before != value and (before is not None or s.version >= m.digest.version):
            meta = m.digest.meta
            if before is not None or (meta.capacity, meta.queued_s, meta.active_shares) != value:
                self.notify(m)
        return True

    def implausible(self, name: str, incarnation: int) -> bool:
        """True (and counted) if `incarnation` jumps too far past the one held for `name`."""
        held = self.incarnation if name == self.name else None
        if held is None:
            m = self.table.get(name)
            if m is None:
                return False
            held = m.incarnation
        if incarnation - held > MAX_INCARNATION_JUMP:
            self.counters["dropped_out_of_range"] += 1
            return True
        return False

    def refute(self, incarnation: int) -> None:
        self.incarnation = min(MAX_INCARNATION, max(self.incarnation, incarnation) + 1)
        self.table[self.name].incarnation = self.incarnation
        self.counters["refutations"] += 1
        self.health.apply(1)
        self.queue.put(
            ("m", self.name),
            encode_broadcast(Alive(self.name, self.incarnation, self.local.digest)),
        )

    def accused(self, incarnation: int) -> None:
        """Someone suspects us (or declared us dead or gone): refute, or repeat a refutation."""
        if self.leaving:
            return
        if incarnation >= self.incarnation:
            self.refute(incarnation)
        elif self.queue.transmits(("m", self.name)) is None:
            # A stale accusation still circulates: re-announce our current incarnation.
            self.queue.put(
                ("m", self.name),
                encode_broadcast(Alive(self.name, self.incarnation, self.local.digest)),
            )

    def on_alive(
        self, a: Alive, now: float, gossip_new: bool = True, current: bool = False
    ) -> None:
        """Apply an alive message; `gossip_new=False` learns a new peer without re-gossiping it.

        `current`: the message is a live peer's present belief (a push-pull state), not a
        broadcast that may have circulated for a while, so a tombstone does not block it: a
        peer we forgot during a partition is alive to a peer that can still reach it.
        """
        name = a.name
        if self.implausible(name, a.incarnation):
            return
        if name == self.name:
            if a.incarnation > self.incarnation and not self.leaving:
                self.refute(a.incarnation)
            self.on_digest(a.digest, now)
            return
        m = self.table.get(name)
        if m is None:
            if not current and not self.table.admits(name, a.incarnation):
                return
            m = Member(name, a.incarnation, "alive", a.digest, now)
            self.table.add(m)
            self.on_live(name)
            if gossip_new:
                self.queue.put(("m", name), encode_broadcast(a))
            self.notify(m)
            self.on_digest(a.digest, now)
            return
        if supersedes((a.incarnation, "alive"), m.state):
            self.set_state(m, a.incarnation, "alive", now)
            self.queue.put(("m", name), encode_broadcast(a))
        self.on_digest(a.digest, now)

    def on_suspect(self, s: Suspect, now: float) -> None:
        if self.implausible(s.name, s.incarnation):
            return
        if s.name == self.name:
            self.accused(s.incarnation)
            return
        m = self.table.get(s.name)
        if m is None or s.incarnation < m.incarnation:
            return
        susp = self.suspicions.get(s.name)
        if m.status == "suspect" and susp is not None and s.incarnation == susp.incarnation:
            if susp.confirm(s.src):
                self.queue.put(("m", s.name), encode_broadcast(s))
            return
        if not supersedes((s.incarnation, "suspect"), m.state):
            return
        self.set_state(m, s.incarnation, "suspect", now)
        n = self.table.live
        expected = min(self.config.indirect_checks, max(0, n - 2))
        self.suspicions[s.name] = Suspicion(
            s.incarnation,
            now,
            s.src,
            expected,
            self.config.suspicion_min_s(n),
            self.config.suspicion_max_s(n),
        )
        self.queue.put(("m", s.name), encode_broadcast(s))

    def on_dead(self, d: Dead, now: float) -> None:
        if self.implausible(d.name, d.incarnation):
            return
        if d.name == self.name:
            self.accused(d.incarnation)
            return
        m = self.table.get(d.name)
        if m is None or d.incarnation < m.incarnation:
            return
        if not supersedes((d.incarnation, "dead"), m.state):
            return
        self.set_state(m, d.incarnation, "dead", now)
        self.queue.put(("m", d.name), encode_broadcast(d))

    def on_left(self, lft: Left, now: float) -> None:
        """A peer's own announcement that it leaves (the caller checked the sender)."""
        if lft.name == self.name or self.implausible(lft.name, lft.incarnation):
            return
        m = self.table.get(lft.name)
        if m is None or lft.incarnation < m.incarnation:
            return
        if not supersedes((lft.incarnation, "left"), m.state):
            return
        self.set_state(m, lft.incarnation, "left", now)  # not relayed: see the module header

    def version_implausible(self, name: str, version: int) -> bool:
        """True (and counted) if a digest version jumps too far past the one held."""
        if name == self.name:
            held = self.local.digest.version
        else:
            m = self.table.get(name)
            if m is None:
                return False
            held = m.digest.version
        if version - held > MAX_INCARNATION_JUMP:
            self.counters["dropped_out_of_range"] += 1
            return True
        return False

    def on_load(self, u: Load, now: float) -> None:
        if self.version_implausible(u.name, u.version):
            return
        if u.name == self.name:
            if u.version > self.local.digest.version:
                self.publish_meta(now, at_least=u.version + 1)
            return
        m = self.table.get(u.name)
        if m is None or u.version <= m.digest.version:
            return
        meta = replace(
            m.digest.meta, capacity=u.capacity, queued_s=u.queued_s, active_shares=u.active_shares
        )
        m.digest = Digest(u.name, u.version, meta, u.bandwidth)
        m.digest_at = now
        self.queue.put(("d", u.name), encode_broadcast(u))
        self.notify(m)

    def on_digest(self, d: Digest, now: float) -> None:
        if self.version_implausible(d.name, d.version):
            return
        if d.name == self.name:
            if d.version > self.local.digest.version:
                # A record from a previous life of this peer outranks ours: jump past it.
                self.publish_meta(now, at_least=d.version + 1)
            return
        m = self.table.get(d.name)
        if m is None or not digest_newer(d, m.digest):
            return
        m.digest = d
        m.digest_at = now
        self.queue.put(("d", d.name), encode_broadcast(Load.of(d)))
        self.notify(m)

    def set_state(self, m: Member, incarnation: int, status: PeerStatus, now: float) -> None:
        if status != "suspect":
            self.suspicions.pop(m.name, None)
        if self.table.set_state(m, incarnation, status, now):
            self.on_live(m.name)
        self.notify(m)

    def notify(self, m: Member) -> None:
        self.out.append(Notify(m.name, m.status, m.incarnation, m.digest.version))

    # -- metadata ----------------------------------------------------------------------------

    def schedule_publish(self, now: float) -> None:
        n = self.table.live
        size = len(encode_broadcast(Load.of(self.local.digest)))
        if self.local.changed(now, self.config.meta_interval_s(n, size)):
            self.publish_meta(now)

    def publish_meta(self, now: float, at_least: int = 0) -> None:
        digest = self.local.publish(now, at_least)
        me = self.table[self.name]
        me.digest = digest
        me.digest_at = now
        self.queue.put(("d", self.name), encode_broadcast(Load.of(digest)))
        self.notify(me)

    def merge_remote(self, pp: PushPull, now: float) -> int:
        """Merge a full state; return how many peers it taught us of."""
        before = len(self.table)
        for ms in pp.members:
            if ms.name == self.name:
                if self.implausible(ms.name, ms.incarnation):
                    continue
                stale = ms.incarnation > self.incarnation or (
                    ms.status != "alive" and ms.incarnation == self.incarnation
                )
                if stale and not self.leaving:
                    self.refute(ms.incarnation)
                self.on_digest(ms.digest, now)
                continue
            known = ms.name in self.table
            if ms.status == "alive" or (not known and ms.status == "suspect"):
                # Peers first heard of in a full state are not re-gossiped (the sender's own
                # record excepted): whole-state transfers at join would otherwise make every
                # peer re-broadcast every other peer, N^2 x retransmits messages in all.
                self.on_alive(
                    Alive(ms.name, ms.incarnation, ms.digest),
                    now,
                    gossip_new=ms.name == pp.src,
                    current=True,
                )
            if ms.status != "alive":
                # memberlist's rule: a remote "dead" only makes us suspect, never dead at once;
                # a remote "left" too (only the peer itself can say it leaves).
                self.on_suspect(Suspect(ms.name, ms.incarnation, pp.src), now)
            if known:
                self.on_digest(ms.digest, now)
        for name, incarnation in pp.gone:
            # The sender declared us dead and forgot us (a partition, our previous life):
            # refute, so that our alive outranks its tombstone and every other one.
            if (
                name == self.name
                and not self.leaving
                and incarnation >= self.incarnation
                and not self.implausible(name, incarnation)
            ):
                self.refute(incarnation)
        return len(self.table) - before
