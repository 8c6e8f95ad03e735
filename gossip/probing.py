"""Randomised round-robin probe order and the bookkeeping of probes in flight.

Targets are visited in a shuffled order; a full pass is reshuffled, and a newly learned peer is
inserted at a random position ahead of the cursor so it is probed within one pass. This bounds the
worst-case time to detect a crash (SWIM section 4.3). Pure data; the core drives it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from gossip.view import Addr


class ProbeOrder:
    __slots__ = ("_order", "_pos", "_rng")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[str] = []
        self._pos = 0

    def add(self, name: str) -> None:
        i = self._rng.randint(self._pos, len(self._order))
        self._order.insert(i, name)

    def next(self, eligible: Callable[[str], bool], exists: Callable[[str], bool]) -> str | None:
        """The next eligible target, reshuffling after a full pass; None if there is none."""
        for _ in range(2):
            while self._pos < len(self._order):
                name = self._order[self._pos]
                self._pos += 1
                if eligible(name):
                    return name
            kept = [n for n in dict.fromkeys(self._order) if exists(n)]
            self._rng.shuffle(kept)
            self._order = kept
            self._pos = 0
        return None


class Probe:
    """Our probe of one target during one protocol period."""

    __slots__ = ("end", "expected_nacks", "indirect_at", "indirect_sent", "nacks", "seq", "target")

    def __init__(self, seq: int, target: str, indirect_at: float, end: float) -> None:
        self.seq = seq
        self.target = target
        self.indirect_at = indirect_at
        self.end = end
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


class Relay:
    """A ping we send on behalf of another peer's ping-req."""

    __slots__ = ("deadline", "orig_seq", "requester_addr", "target")

    def __init__(self, orig_seq: int, requester_addr: Addr, target: str, deadline: float) -> None:
        self.orig_seq = orig_seq
        self.requester_addr = requester_addr
        self.target = target
        self.deadline = deadline
