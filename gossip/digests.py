"""This peer's own metadata: its bandwidth row (bytes/s, EWMA of transfers) and digest versions."""

from __future__ import annotations

import math

from gossip.errors import ConfigError
from gossip.view import MAX_NAME, PeerMeta
from gossip.wire import MAX_VERSION, Digest


class BandwidthRow:
    """EWMA bandwidth per destination peer, with the time of the last sample."""

    __slots__ = ("_alpha", "_rows")

    def __init__(self, alpha: float) -> None:
        self._alpha = alpha
        self._rows: dict[str, tuple[float, float]] = {}

    def record(self, dst: str, nbytes: int, seconds: float, now: float) -> float:
        if not isinstance(dst, str) or not 0 < len(dst) <= MAX_NAME:
            raise ConfigError("dst must be a peer name")
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
            raise ConfigError("nbytes must be a positive int")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ConfigError("seconds must be a positive finite number")
        sample = nbytes / seconds
        old = self._rows.get(dst)
        est = sample if old is None else self._alpha * sample + (1 - self._alpha) * old[0]
        self._rows[dst] = (est, now)
        return est

    def get(self, dst: str) -> float | None:
        row = self._rows.get(dst)
        return None if row is None else row[0]

    def as_dict(self) -> dict[str, float]:
        return {k: v[0] for k, v in self._rows.items()}

    def top(self, k: int) -> tuple[tuple[str, float], ...]:
        """The k most recently updated estimates, sorted by peer name."""
        recent = sorted(self._rows.items(), key=lambda kv: kv[1][1], reverse=True)[:k]
        return tuple(sorted((name, est) for name, (est, _) in recent))


class LocalMeta:
    """This peer's metadata and bandwidth row, and the rate-limited versioning of its digest.

    The local view changes at once; a new digest version is cut at most once per
    `min_interval_s` (a change inside the interval is published when it ends).
    """

    __slots__ = ("_min_interval_s", "_row_max", "at", "bw", "digest", "due", "last_publish", "meta")

    def __init__(
        self, meta: PeerMeta, alpha: float, min_interval_s: float, row_max: int, now: float
    ) -> None:
        self.meta = meta
        self.at = now
        self.bw = BandwidthRow(alpha)
        self.digest = Digest(meta.name, 0, meta, ())
        self.due: float | None = None
        self.last_publish = -math.inf  # version 0 rides with Alive: the first change goes at once
        self._min_interval_s = min_interval_s
        self._row_max = row_max

    def changed(self, now: float, interval_s: float | None = None) -> bool:
        """Record a local change; True if a new version should be published now.

        `interval_s` (at least the configured minimum) spaces successive versions.
        """
        self.at = now
        due = self.last_publish + max(self._min_interval_s, interval_s or 0.0)
        if due <= now:
            return True
        if self.due is None:
            self.due = due
        return False

    def publish(self, now: float, at_least: int = 0) -> Digest:
        self.due = None
        self.last_publish = now
        version = min(MAX_VERSION, max(self.digest.version + 1, at_least))
        self.digest = Digest(self.meta.name, version, self.meta, self.bw.top(self._row_max))
        return self.digest
