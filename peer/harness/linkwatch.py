"""What the peers of a running scenario believe about each other, polled, and its summaries.

A :class:`Watch` thread reads every peer's ``GET /v1/cluster`` about once a second while a
policy runs: each peer's own measured links (``links``: bytes/s, rtt, samples) and the status
it holds of every other peer. Pure functions then turn the observations into the figures of
``results.json``:

- :func:`links_summary`: per (observer, target) link and per stretch of constant configured
  rate, the configured rate, the last estimate, and how long after the stretch began (for the
  first stretch: after the observer's first sample of the link) the estimate first came
  within ±30 % of the configured rate;
- :func:`convergence`: after each ``heal`` (or ``link_up``), how long until every peer saw
  every other alive;
- :func:`prediction_summary`: per mode, the median of ``|actual / predicted - 1|``;
- :func:`loss_summary`: the requests in flight through a peer when its link went down, against
  their predicted make-span.

Times are seconds from the workload's start (negative: during warm-up).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peer.harness.scenario import Link

TOLERANCE = 0.30  # an estimate within ±30 % of the configured rate counts as right
MBIT = 1e6 / 8  # bytes per second in one Mbit/s


@dataclass(frozen=True)
class Observation:
    t: float  # perf_counter when read
    observer: int
    status: dict[str, str]  # peer name -> status held by the observer
    rates: dict[str, float | None]  # peer name -> bytes/s measured by the observer
    samples: dict[str, int]


@dataclass
class Watch:
    """Polls ``fetch(i)`` (a peer's /v1/cluster body, or None) for each peer every ``period_s``."""

    peers: int
    fetch: Callable[[int], Any]
    period_s: float = 1.0
    observations: list[Observation] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="linkwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t_next = time.perf_counter() + self.period_s
            for i in range(self.peers):
                if self._stop.is_set():
                    return
                try:
                    body = self.fetch(i)
                except (OSError, ValueError):
                    continue
                obs = parse_cluster(i, body, time.perf_counter())
                if obs is not None:
                    self.observations.append(obs)
            self._stop.wait(max(t_next - time.perf_counter(), 0.0))


def parse_cluster(observer: int, body: Any, t: float) -> Observation | None:
    """One observation from a /v1/cluster body (None: not one)."""
    if not isinstance(body, dict) or not isinstance(body.get("peers"), list):
        return None
    me = body.get("self")
    status: dict[str, str] = {}
    rates: dict[str, float | None] = {}
    samples: dict[str, int] = {}
    for p in body["peers"]:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            continue
        status[p["name"]] = str(p.get("status"))
        if p["name"] == me:
            for to, est in (p.get("links") or {}).items():
                if isinstance(est, dict):
                    r = est.get("bytes_per_s")
                    rates[to] = float(r) if isinstance(r, int | float) else None
                    samples[to] = int(est.get("samples") or 0)
    return Observation(t, observer, status, rates, samples)


# ------------------------------------------------------------------------------- summaries


def expected_mbit(links: Sequence[Link], observer: int, target: int) -> float | None:
    """The rate the observer's estimate of its link to ``target`` should read: that of the
    direction its samples' bytes mostly travel, the probe's reply (target up, observer down);
    None when nothing limits it."""
    o, t = links[observer], links[target]
    caps = [x for x in (t.up_mbit, o.down_mbit) if x is not None]
    return min(caps) if caps else None


def rate_timeline(
    links: Sequence[Link], applied: Sequence[dict[str, Any]]
) -> list[tuple[float, list[Link]]]:
    """``[(from_s, links)]``: the configured links, and again after each applied ``link`` event."""
    cur = list(links)
    out = [(-float("inf"), list(cur))]
    for ev in applied:
        if ev.get("action") != "link" or "rate set" not in str(ev.get("result", "")):
            continue
        i = int(str(ev["peer"]).lstrip("p"))
        old = cur[i]
        up = ev.get("up_mbit")
        down = ev.get("down_mbit")
        cur[i] = Link(old.up_mbit if up is None else up, old.down_mbit if down is None else down)
        out.append((float(ev["applied_at_s"]), list(cur)))
    return out


def _within(rate_bps: float | None, mbit: float | None) -> bool:
    if rate_bps is None or mbit is None:
        return False
    return abs(rate_bps / MBIT / mbit - 1.0) <= TOLERANCE


def links_summary(
    obs: Sequence[Observation],
    start: float,
    links: Sequence[Link],
    applied: Sequence[dict[str, Any]],
    names: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per (observer, target, stretch of constant configured rate) seen."""
    timeline = rate_timeline(links, applied)
    rows = []
    n = len(names)
    for o in range(n):
        mine = [x for x in obs if x.observer == o]
        for t in range(n):
            if t == o:
                continue
            seen = [(x.t - start, x.rates.get(names[t])) for x in mine if names[t] in x.rates]
            if not seen:
                continue
            first_sample_s = seen[0][0]
            for k, (from_s, cfg) in enumerate(timeline):
                until = timeline[k + 1][0] if k + 1 < len(timeline) else float("inf")
                part = [(s, r) for s, r in seen if from_s <= s < until]
                if not part:
                    continue
                exp = expected_mbit(cfg, o, t)
                began = max(from_s, first_sample_s)
                hit = next((s for s, r in part if _within(r, exp)), None)
                last = part[-1][1]
                unlimited = [r for _, r in part if r is not None]
                rows.append(
                    {
                        "observer": names[o],
                        "target": names[t],
                        "from_s": None if from_s == -float("inf") else round(from_s, 3),
                        "configured_mbit": exp,
                        "target_up_mbit": cfg[t].up_mbit,
                        "target_down_mbit": cfg[t].down_mbit,
                        "estimated_mbit": None if last is None else round(last / MBIT, 3),
                        "max_estimated_mbit": round(max(unlimited) / MBIT, 3)
                        if unlimited
                        else None,
                        "ratio": None
                        if last is None or exp is None
                        else round(last / MBIT / exp, 4),
                        "first_within_30pct_s": None if hit is None else round(hit - began, 3),
                        "polls": len(part),
                    }
                )
    return rows


def links_verdict(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first-stretch figures the issue asks for: limited links within ±30 % and how soon;
    unlimited links against the fastest limited one."""
    first = [r for r in rows if r["from_s"] is None]
    limited = [r for r in first if r["configured_mbit"] is not None]
    free = [r for r in first if r["configured_mbit"] is None and r["estimated_mbit"] is not None]
    times = [r["first_within_30pct_s"] for r in limited]
    worst_free = min((r["estimated_mbit"] for r in free), default=None)
    top_limited = max((r["configured_mbit"] for r in limited), default=None)
    return {
        "limited_links": len(limited),
        "limited_within_30pct_at_end": sum(
            1 for r in limited if r["ratio"] is not None and abs(r["ratio"] - 1) <= TOLERANCE
        ),
        "first_within_30pct_s_max": None
        if not times or None in times
        else max(t for t in times if t is not None),
        "never_within_30pct": sum(1 for t in times if t is None),
        "unlimited_links": len(free),
        "unlimited_min_estimated_mbit": worst_free,
        "unlimited_over_fastest_limited": None
        if worst_free is None or not top_limited
        else round(worst_free / top_limited, 2),
    }


def convergence(
    obs: Sequence[Observation], start: float, applied: Sequence[dict[str, Any]], n: int
) -> list[dict[str, Any]]:
    """After each heal or link_up: seconds until a full round of polls in which every peer
    holds every other alive (None: never within the run)."""
    out = []
    for ev in applied:
        if ev.get("action") not in ("heal", "link_up"):
            continue
        at = float(ev["applied_at_s"])
        after = [x for x in obs if x.t - start >= at]
        held: dict[int, bool] = {}
        done = None
        for x in after:
            held[x.observer] = sum(1 for s in x.status.values() if s == "alive") >= n
            if len(held) == n and all(held.values()):
                done = round(x.t - start - at, 3)
                break
        out.append({"action": ev["action"], "at_s": at, "all_alive_after_s": done})
    return out


def prediction_summary(policies: dict[str, Any]) -> dict[str, Any]:
    """Median |makespan / predicted - 1| per mode: over every policy, and per policy."""

    def medians(recs: list[dict[str, Any]]) -> dict[str, Any]:
        by: dict[str, list[float]] = {}
        for r in recs:
            p, a = r.get("predicted_s"), r.get("makespan_s")
            if r.get("ok") and r.get("mode") and p and a is not None and p > 0:
                by.setdefault(r["mode"], []).append(abs(a / p - 1.0))
        return {
            m: {"median_abs_error": round(statistics.median(v), 4), "requests": len(v)}
            for m, v in sorted(by.items())
        }

    every = [r for run in policies.values() for r in run.get("records", [])]
    return {
        "per_mode": medians(every),
        "per_policy": {name: medians(run.get("records", [])) for name, run in policies.items()},
    }


def loss_summary(
    records: Sequence[dict[str, Any]], applied: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The requests with a share on a peer whose link went down while they ran."""
    out = []
    for ev in applied:
        if ev.get("action") != "link_down":
            continue
        at, peer = float(ev["applied_at_s"]), ev["peer"]
        for r in records:
            if peer not in r.get("peers", []) or r.get("origin") == peer or "wall_s" not in r:
                continue
            if not r["sent_s"] <= at <= r["sent_s"] + r["wall_s"]:
                continue
            over = r["wall_s"] - r["predicted_s"]
            out.append(
                {
                    "event_at_s": at,
                    "peer": peer,
                    "request": r["index"],
                    "wall_s": r["wall_s"],
                    "predicted_s": r["predicted_s"],
                    "over_prediction_s": round(over, 3),
                    "within_5s": over <= 5.0,
                    "replans": r.get("replans", 0),
                }
            )
    return out
