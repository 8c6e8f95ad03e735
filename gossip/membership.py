"""Membership records and the merge rules, as pure functions.

A peer's membership state is (incarnation, status). States are totally ordered by
(incarnation, rank) with alive < suspect < dead < left at one incarnation, and a merge keeps the
larger, so merging is commutative, associative, idempotent and monotone in incarnation. Only the
peer itself raises its incarnation (to refute a suspicion or rejoin). Metadata digests are
ordered by version, with a deterministic tie-break so replicas agree even on a conflict.
"""

from __future__ import annotations

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
