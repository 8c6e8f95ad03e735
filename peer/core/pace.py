"""How far one request's shares run behind their predictions: the scale of its overrun deadlines.

A remote share that overruns a deadline derived from its prediction is re-planned (its holder
may be stuck behind a dead link). But when the cost model is off for the whole request (a large
repair canvas, a busy host), every share runs late alike, and re-planning them one after the
other only cancels work that was nearly done and piles it on the origin (seen in
``bench shares``: three tile shares overran 3x their predictions, were cancelled and re-planned,
and the request ended on the origin alone). So the deadline is measured in the request's own
pace: the worst ratio of actual to predicted time among its finished shares, and the elapsed
over predicted time of the origin's own share while it runs (that one cannot be lost). A holder
is then judged late only against how late its siblings are. Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JobPace:
    """One request's pace (>= 1): how many times its predictions its shares are taking."""

    finished: float = 1.0  # worst actual / predicted among finished shares
    own: dict[int, tuple[float, float]] = field(
        default_factory=dict
    )  # running here: start, predicted
    _keys: int = 0
    begun: float | None = None  # when its first share was sent (perf_counter)

    def waited(self, now: float) -> float:
        """Seconds since the request's first share was sent (0 for the first)."""
        if self.begun is None:
            self.begun = now
        return max(now - self.begun, 0.0)

    def start_own(self, now: float, predicted_s: float) -> int:
        """The origin's own share starts; returns its key for ``finish_own``."""
        self._keys += 1
        self.own[self._keys] = (now, max(predicted_s, 1e-3))
        return self._keys

    def finish_own(self, key: int, now: float) -> None:
        start, predicted = self.own.pop(key, (now, 1.0))
        self.finished_share(now - start, predicted)

    def finished_share(self, actual_s: float, predicted_s: float) -> None:
        if actual_s > 0 and predicted_s > 0:
            self.finished = max(self.finished, actual_s / predicted_s)

    def factor(self, now: float) -> float:
        running = (max(now - s, 0.0) / p for s, p in self.own.values())
        return max(1.0, self.finished, *running)
