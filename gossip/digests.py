"""This peer's row of bandwidth estimates (bytes/s), an EWMA of observed transfers."""

from __future__ import annotations

import math

from gossip.errors import ConfigError
from gossip.view import MAX_NAME


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
