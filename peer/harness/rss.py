"""Per-peer resident memory of local peer processes, sampled from ``/proc`` in a thread.

``RssSampler(procs_of)`` reads every ``period_s`` the ``VmRSS`` and ``VmHWM`` (the kernel's own
peak) of each peer's current process; a restarted peer is a new process, and its figures join
the same peer's. ``summary()`` gives, per peer, the peak over the run, the peak within the
first ``first_s`` seconds (the reference a soak compares against), the last sample and the
ratio of peak to first-minute peak. Where ``/proc`` is missing (not Linux), it says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def read_status_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process in KiB ({} when it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


@dataclass
class _Peer:
    peak_kib: int = 0
    first_peak_kib: int = 0
    last_kib: int = 0
    pids: set[int] = field(default_factory=set)
    samples: int = 0


class RssSampler:
    """Samples ``procs_of()`` -> {peer name: pid or None} until ``stop()``."""

    def __init__(
        self,
        procs_of: Callable[[], dict[str, int | None]],
        period_s: float = 1.0,
        first_s: float = 60.0,
    ) -> None:
        self.procs_of = procs_of
        self.period_s = period_s
        self.first_s = first_s
        self.available = Path("/proc/self/status").exists()
        self._peers: dict[str, _Peer] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()  # reset by start()

    def start(self) -> None:
        self._t0 = time.monotonic()
        if self.available:
            self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
            self._thread.start()

    def sample(self) -> None:
        elapsed = time.monotonic() - self._t0
        for name, pid in self.procs_of().items():
            if pid is None:
                continue
            st = read_status_kib(pid)
            if not st:
                continue
            p = self._peers.setdefault(name, _Peer())
            p.pids.add(pid)
            p.samples += 1
            rss = st.get("VmRSS", 0)
            p.last_kib = rss
            p.peak_kib = max(p.peak_kib, rss, st.get("VmHWM", 0))
            if elapsed <= self.first_s:
                p.first_peak_kib = max(p.first_peak_kib, rss, st.get("VmHWM", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def summary(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "why": "no /proc on this machine"}
        peers = {}
        for name, p in sorted(self._peers.items()):
            first = p.first_peak_kib
            peers[name] = {
                "peak_rss_mib": round(p.peak_kib / 1024, 1),
                "peak_first_min_mib": round(first / 1024, 1) if first else None,
                "last_rss_mib": round(p.last_kib / 1024, 1),
                "peak_over_first_min": round(p.peak_kib / first, 3) if first else None,
                "processes": len(p.pids),
                "samples": p.samples,
            }
        return {
            "available": True,
            "period_s": self.period_s,
            "first_s": self.first_s,
            "peers": peers,
        }
