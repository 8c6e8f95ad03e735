"""Suspicion timeouts that shrink with independent confirmations, and local health (Lifeguard).

A suspicion starts at `max_s` and, as k independent peers confirm it, shrinks towards `min_s`
on a log curve (memberlist's `remainingSuspicionTime`, a pure function of its inputs here).
When it expires the core probes the suspect one last time; an answer restarts the suspicion.
Local health ("awareness") is a small saturating counter: failed probes without the expected
nacks and having to refute a suspicion about ourselves raise it; successful probes lower it.
Probe timers are multiplied by (health + 1), so a slow peer slows its own verdicts instead of
accusing healthy peers.
"""

from __future__ import annotations

import math


def suspicion_timeout(confirmations: int, expected: int, min_s: float, max_s: float) -> float:
    """Total suspicion time after `confirmations` of `expected` independent confirmations."""
    if expected <= 0 or max_s <= min_s:
        return min_s
    frac = math.log(confirmations + 1) / math.log(expected + 1)
    return max(min_s, max_s - frac * (max_s - min_s))


class Suspicion:
    """One suspicion of one peer at one incarnation."""

    __slots__ = (
        "confirmers",
        "expected",
        "final_deadline",
        "final_seq",
        "incarnation",
        "max_s",
        "min_s",
        "start",
    )

    def __init__(
        self,
        incarnation: int,
        start: float,
        first_from: str,
        expected: int,
        min_s: float,
        max_s: float,
    ) -> None:
        self.incarnation = incarnation
        self.start = start
        self.confirmers = {first_from}
        self.expected = expected
        self.min_s = min_s
        self.max_s = max_s
        self.final_seq: int | None = None  # the last-chance probe, once the timeout expired
        self.final_deadline: float | None = None

    def confirm(self, src: str) -> bool:
        """Record an independent confirmation; True if it is new and counts."""
        if src in self.confirmers or len(self.confirmers) > self.expected:
            return False
        self.confirmers.add(src)
        return True

    def restart(self, now: float, by: str) -> None:
        """The suspect answered: start over with one (our own) suspicion."""
        self.start = now
        self.confirmers = {by}
        self.final_seq = None
        self.final_deadline = None

    def deadline(self) -> float:
        if self.final_deadline is not None:
            return self.final_deadline
        confirmations = len(self.confirmers) - 1
        return self.start + suspicion_timeout(confirmations, self.expected, self.min_s, self.max_s)


class LocalHealth:
    """Lifeguard's awareness score in [0, max_score); multiplies our own probe timers."""

    __slots__ = ("enabled", "max_score", "score")

    def __init__(self, max_score: int, enabled: bool = True) -> None:
        self.max_score = max_score
        self.enabled = enabled
        self.score = 0

    def apply(self, delta: int) -> None:
        if self.enabled:
            self.score = min(self.max_score - 1, max(0, self.score + delta))

    def scale(self, seconds: float) -> float:
        return seconds * (self.score + 1)
