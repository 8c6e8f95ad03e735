"""Value types the runtime and the simulator share: candidates, requests, decisions, the ledger."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from policy.fleet.errors import PolicyError


@dataclass(frozen=True, slots=True)
class Candidate:
    """One peer the origin may recruit, as the origin believes it to be now.

    Times are seconds. ``wait_s`` is the peer's queued work from the view, aged forward to now;
    ``own_pending_s`` is what this origin itself dispatched there since the view was taken.
    A share of ``x`` units on this peer is predicted to finish after
    ``wait_s + own_pending_s + fixed_s + x * (unit_s + xfer_s_per_unit)``.
    """

    name: str
    is_self: bool
    wait_s: float
    view_age_s: float
    fixed_s: float
    unit_s: float
    xfer_s_per_unit: float = 0.0
    own_pending_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Request:
    """A request to split: ``units`` whole work units (images, tiles or steps)."""

    units: int
    deadline_s: float = math.inf


@dataclass(frozen=True, slots=True)
class Decision:
    """The chosen peers (indices into the candidate list) and their shares (>= 0, sum 1)."""

    selected: tuple[int, ...]
    shares: tuple[float, ...]
    predicted_makespan_s: float
    policy: str
    provider: str | None = None
    fallback: str | None = None


def validate_request(req: Request) -> None:
    if isinstance(req.units, bool) or not isinstance(req.units, int):
        raise PolicyError(f"units must be an int, got {type(req.units).__name__}")
    if req.units < 1:
        raise PolicyError(f"units must be >= 1, got {req.units}")
    d = req.deadline_s
    if not isinstance(d, int | float) or math.isnan(d) or d <= 0:
        raise PolicyError(f"deadline_s must be a positive number, got {d!r}")


_FIELDS = ("wait_s", "view_age_s", "fixed_s", "unit_s", "xfer_s_per_unit", "own_pending_s")


def validate_candidates(cands: list[Candidate] | tuple[Candidate, ...]) -> None:
    if len(cands) == 0:
        raise PolicyError("at least one candidate is required")
    n_self = 0
    names: set[str] = set()
    for i, c in enumerate(cands):
        if not isinstance(c, Candidate):
            raise PolicyError(f"candidate {i} is not a Candidate: {type(c).__name__}")
        if c.name in names:
            raise PolicyError(f"duplicate candidate name {c.name!r}")
        names.add(c.name)
        n_self += bool(c.is_self)
        for f in _FIELDS:
            v = getattr(c, f)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise PolicyError(f"candidate {c.name!r}: {f} must be a finite number, got {v!r}")
            if v < 0:
                raise PolicyError(f"candidate {c.name!r}: {f} must be >= 0, got {v!r}")
        if c.unit_s + c.xfer_s_per_unit <= 0:
            raise PolicyError(f"candidate {c.name!r}: unit_s + xfer_s_per_unit must be > 0")
    if n_self > 1:
        raise PolicyError(f"at most one candidate may be the origin itself, got {n_self}")


def validate_decision(d: Decision, n_candidates: int) -> None:
    """Check a decision's shape: indices in range and distinct, shares >= 0 summing to 1."""
    if len(d.selected) == 0 or len(d.selected) != len(d.shares):
        raise PolicyError("a decision needs as many shares as selected peers, at least one")
    if len(set(d.selected)) != len(d.selected):
        raise PolicyError("selected peers must be distinct")
    for i in d.selected:
        if not 0 <= i < n_candidates:
            raise PolicyError(f"selected index {i} out of range for {n_candidates} candidates")
    for s in d.shares:
        if not math.isfinite(s) or s < 0:
            raise PolicyError(f"shares must be finite and >= 0, got {s!r}")
    if abs(sum(d.shares) - 1.0) > 1e-9:
        raise PolicyError(f"shares must sum to 1, got {sum(d.shares)!r}")


@dataclass(slots=True)
class _Log:
    times: list[float] = field(default_factory=list)
    cum: list[float] = field(default_factory=list)


class DispatchLedger:
    """Seconds of work this origin sent to each peer, queried by time window. Time is an argument.

    ``pending(name, since)`` is the total recorded strictly after ``since``: the work the origin
    dispatched there since its view of that peer was taken. Records must come in time order
    per peer. ``prune(before)`` forgets records at or before ``before``.
    """

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}

    def record(self, name: str, seconds: float, now: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise PolicyError(f"seconds must be finite and >= 0, got {seconds!r}")
        if not math.isfinite(now):
            raise PolicyError(f"now must be finite, got {now!r}")
        log = self._logs.setdefault(name, _Log())
        if log.times and now < log.times[-1]:
            raise PolicyError(
                f"records for {name!r} must be in time order ({now} < {log.times[-1]})"
            )
        log.times.append(now)
        log.cum.append((log.cum[-1] if log.cum else 0.0) + seconds)

    def pending(self, name: str, since: float) -> float:
        log = self._logs.get(name)
        if log is None or not log.times:
            return 0.0
        i = bisect.bisect_right(log.times, since)
        if i >= len(log.times):
            return 0.0
        before = log.cum[i - 1] if i > 0 else 0.0
        return log.cum[-1] - before

    def prune(self, before: float) -> None:
        for name, log in list(self._logs.items()):
            i = bisect.bisect_right(log.times, before)
            if i == 0:
                continue
            base = log.cum[i - 1]
            log.times = log.times[i:]
            log.cum = [c - base for c in log.cum[i:]]
            if not log.times:
                del self._logs[name]
