"""A transmit-limited broadcast queue (memberlist's TransmitLimitedQueue, without locks).

Every queued broadcast is pre-encoded bytes with a key; a newer broadcast with the same key
(the same peer's membership, or the same peer's digest) replaces the older one. Each datagram
takes as many broadcasts as fit its byte budget, fewest transmissions first and, among equals,
freshest first. A broadcast is dropped after `limit(N) = mult x ceil(log10(N+1))` transmissions,
which infects the whole group with high probability.
"""

from __future__ import annotations

from collections.abc import Hashable

# Stop scanning once this many queued items in a row did not fit the remaining budget.
_MAX_MISSES = 32
_MIN_ITEM = 8


class _Item:
    __slots__ = ("data", "key", "transmits")

    def __init__(self, key: Hashable, data: bytes) -> None:
        self.key = key
        self.data = data
        self.transmits = 0


class BroadcastQueue:
    """Buckets by transmit count; insertion order within a bucket gives freshness."""

    __slots__ = ("_buckets", "_index")

    def __init__(self) -> None:
        self._buckets: list[dict[Hashable, _Item]] = [{}]
        self._index: dict[Hashable, _Item] = {}

    def __len__(self) -> int:
        return len(self._index)

    def put(self, key: Hashable, data: bytes) -> None:
        """Queue a broadcast, replacing (invalidating) any queued one with the same key."""
        old = self._index.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][key]
        item = _Item(key, data)
        self._index[key] = item
        self._buckets[0][key] = item

    def transmits(self, key: Hashable) -> int | None:
        item = self._index.get(key)
        return None if item is None else item.transmits

    def discard(self, key: Hashable) -> None:
        item = self._index.pop(key, None)
        if item is not None:
            del self._buckets[item.transmits][key]

    def take(self, budget: int, limit: int) -> list[bytes]:
        """Broadcasts for one datagram with at most `budget` bytes; counts the transmissions."""
        picked: list[_Item] = []
        misses = 0
        for bucket in self._buckets:
            if budget < _MIN_ITEM or misses >= _MAX_MISSES:
                break
            for item in reversed(bucket.values()):
                size = len(item.data)
                if size <= budget:
                    picked.append(item)
                    budget -= size
                    if budget < _MIN_ITEM:
                        break
                else:
                    misses += 1
                    if misses >= _MAX_MISSES:
                        break
        out = []
        buckets = self._buckets
        for item in picked:
            del buckets[item.transmits][item.key]
            item.transmits += 1
            out.append(item.data)
            if item.transmits >= limit:
                del self._index[item.key]
                continue
            while len(buckets) <= item.transmits:
                buckets.append({})
            buckets[item.transmits][item.key] = item
        while len(buckets) > 1 and not buckets[-1]:
            buckets.pop()
        return out

    def prune(self, limit: int) -> None:
        """Drop items already sent `limit` times (after the cluster shrank the limit)."""
        for t in range(limit, len(self._buckets)):
            for key in list(self._buckets[t]):
                del self._index[key]
            self._buckets[t] = {}
