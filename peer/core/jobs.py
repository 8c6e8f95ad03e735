"""Jobs: the state machine of one client request at its origin, and the bounded book of jobs.

``queued -> running -> done | failed``, ``queued | running -> cancelled``. Every transition
and progress report appends an ``Event`` (sequence-numbered) that ``GET /v1/jobs/{id}/events``
streams. Pure: callers pass ``now``; no asyncio here.
"""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from peer.core.errors import NotFound, PeerError

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
_ALLOWED: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"done", "failed", "cancelled"}),
    "done": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


class JobStateError(PeerError):
    code = "bad_transition"


@dataclass(frozen=True)
class Event:
    seq: int
    t: float
    kind: str  # state | progress | plan | replan
    data: dict[str, Any]


@dataclass
class Job:
    id: str
    kind: str  # generate | repair
    created: float
    total_units: int
    state: JobState = "queued"
    done_units: int = 0
    events: list[Event] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    finished: float | None = None
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def _emit(self, kind: str, data: dict[str, Any], now: float) -> Event:
        ev = Event(next(self._seq), now, kind, data)
        self.events.append(ev)
        return ev

    def transition(self, to: JobState, now: float, **data: Any) -> Event:
        if to not in _ALLOWED[self.state]:
            raise JobStateError(f"job {self.id}: {self.state} -> {to} is not allowed")
        self.state = to
        if to in TERMINAL:
            self.finished = now
        return self._emit("state", {"state": to, **data}, now)

    def note(self, kind: str, now: float, **data: Any) -> Event:
        return self._emit(kind, data, now)

    def progress(self, units: int, now: float, peer: str) -> Event:
        self.done_units = min(self.total_units, self.done_units + units)
        return self._emit(
            "progress", {"done": self.done_units, "total": self.total_units, "peer": peer}, now
        )

    def finish(self, result: dict[str, Any], now: float) -> Event:
        self.result = result
        return self.transition("done", now)

    def fail(self, code: str, message: str, now: float) -> Event:
        self.error = {"code": code, "message": message}
        return self.transition("failed", now, code=code, message=message)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": {"done": self.done_units, "total": self.total_units},
            "created": self.created,
            "finished": self.finished,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


class JobBook:
    """Jobs by id; keeps at most ``keep`` finished ones (oldest dropped first)."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keys: dict[str, str] = {}  # idempotency key -> job id

    def create(self, kind: str, total_units: int, now: float, key: str | None = None) -> Job:
        job = Job(id=secrets.token_hex(8), kind=kind, created=now, total_units=total_units)
        self._jobs[job.id] = job
        if key is not None:
            self._keys[key] = job.id
        job.note("state", now, state="queued")
        self._trim()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def by_key(self, key: str) -> Job | None:
        """The job created with idempotency key ``key``, while it is kept."""
        job_id = self._keys.get(key)
        return None if job_id is None else self._jobs.get(job_id)

    def recent(self, limit: int) -> list[Job]:
        """At most ``limit`` jobs, oldest first (running ones included)."""
        return list(self._jobs.values())[-limit:] if limit > 0 else []

    def active(self) -> int:
        return sum(1 for j in self._jobs.values() if not j.terminal)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for j in self._jobs.values():
            out[j.state] = out.get(j.state, 0) + 1
        return out

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.terminal]
        excess = len(self._jobs) - self.keep
        dropped = set(finished[: max(excess, 0)])
        for k in dropped:
            del self._jobs[k]
        if dropped:
            self._keys = {key: j for key, j in self._keys.items() if j not in dropped}

    def __len__(self) -> int:
        return len(self._jobs)
