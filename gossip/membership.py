"""Membership records and the merge rules, as pure functions.

A peer's membership state is (incarnation, status). States are totally ordered by
(incarnation, rank) with alive < suspect < dead < left at one incarnation, and a merge keeps the
larger, so merging is commutative, associative, idempotent and monotone in incarnation. Only the
peer itself raises its incarnation (to refute a suspicion or rejoin). Metadata digests are
ordered by version, with a deterministic tie-break so replicas agree even on a conflict.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from gossip.view import STATUS_RANK, Addr, PeerStatus
from gossip.wire import Digest

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

    __slots__ = ("digest", "digest_at", "incarnation", "name", "since", "status")

    def __init__(
        self, name: str, incarnation: int, status: PeerStatus, digest: Digest, now: float
    ) -> None:
        self.name = name
        self.incarnation = incarnation
        self.status: PeerStatus = status
        self.since = now
        self.digest = digest
        self.digest_at = now

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

    def random_dead(self) -> str | None:
        dead = [n for n in self._down if self._members[n].status == "dead"]
        return None if not dead else dead[self._rng.randrange(len(dead))]

    def reap(self, now: float, dead_reap_s: float, tombstone_s: float) -> list[str]:
        """Forget peers dead or left for longer than `dead_reap_s`; remember a tombstone."""
        cutoff = now - dead_reap_s
        gone = [n for n in self._down if self._members[n].since <= cutoff]
        for name in gone:
            m = self._members.pop(name)
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
