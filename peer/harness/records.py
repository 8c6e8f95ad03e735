"""The figures every scenario table reports, from a list of request records.

A record (``scenario run``, ``scenario sim``, pooled rounds) has ``ok``; a served one its
``wall_s`` (client make-span) and ``peers``; a failed one its ``error`` code.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from amcoedge.stats import percentile


def request_figures(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, failure rate, errors by code, make-span mean / p50 / p95 and peers per request
    (the make-span and peers over the served requests)."""
    ok = [r for r in records if r["ok"]]
    walls = sorted(r["wall_s"] for r in ok)
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    n = len(records)
    return {
        "requests": n,
        "ok": len(ok),
        "failed": n - len(ok),
        "failure_rate": (n - len(ok)) / n if n else 0.0,
        "errors": errors,
        "makespan_mean_s": statistics.fmean(walls) if walls else None,
        "makespan_p50_s": percentile(walls, 50),
        "makespan_p95_s": percentile(walls, 95),
        "mean_peers_per_request": statistics.fmean(len(r["peers"]) for r in ok) if ok else None,
    }
