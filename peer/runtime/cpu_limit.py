"""The CPU this process may use under its cgroup's quota (cgroup v1 ``cpu.cfs_quota_us`` or v2
``cpu.max``, the tightest along its path), for the cost model.

A peer calibrates its per-step costs at start with a few single steps of a few milliseconds
each; under a CFS quota those run at full speed inside the first slice of every period, so a
0.5-core peer calibrated as fast as a whole core and published twice the capacity it could
sustain (its first shares then overran their predictions until the running correction caught
up). The node divides the calibrated speed by the quota's share of its threads. Containers
with a CPU limit (Docker ``--cpus``, Kubernetes limits) are limited the same way.
"""

from __future__ import annotations

import math
from pathlib import Path


def _v1_quota(root: Path, rel: str) -> float | None:
    best = None
    parts = [p for p in rel.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        d = root.joinpath(*parts[:depth])
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text().split()[0])
            period = int((d / "cpu.cfs_period_us").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if quota > 0 and period > 0:
            best = quota / period if best is None else min(best, quota / period)
    return best


def _v2_quota(root: Path, rel: str) -> float | None:
    best = None
    parts = [p for p in rel.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        try:
            fields = (root.joinpath(*parts[:depth]) / "cpu.max").read_text().split()
        except OSError:
            continue
        if len(fields) == 2 and fields[0] != "max":
            try:
                q = int(fields[0]) / int(fields[1])
            except (ValueError, ZeroDivisionError):
                continue
            if q > 0:
                best = q if best is None else min(best, q)
    return best


def cpu_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """Cores this process may use (e.g. 0.5), or None where no quota limits it (or unknown)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    base = Path(root)
    found: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "" and rel:  # v2 (unified); under v1 hosts it is mounted at unified/
            for v2root in (base, base / "unified"):
                q = _v2_quota(v2root, rel)
                if q is not None:
                    found.append(q)
                    break
        elif "cpu" in controllers.split(","):
            for name in (controllers, "cpu", "cpu,cpuacct"):
                q = _v1_quota(base / name, rel)
                if q is not None:
                    found.append(q)
                    break
    return min(found) if found else None


def quota_slowdown(threads: int, limit: float | None) -> float:
    """How much slower than its calibration a peer of ``threads`` threads runs sustained."""
    if limit is None or not math.isfinite(limit) or limit <= 0:
        return 1.0
    return max(1.0, threads / limit)
