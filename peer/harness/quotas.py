"""Per-peer CPU quotas with cgroup v1 (``/sys/fs/cgroup/cpu/<group>/cpu.cfs_quota_us``).

Used by ``cluster up --quotas`` and the demo to make local peers unequal for real. Needs root
and a cgroup v1 cpu hierarchy; ``available()`` says whether this machine allows it and why not.
Groups are uniquely named (``amcoedge-<pid>-<n>``) and removed by ``close()``, which callers run
from ``finally`` (also on Ctrl-C and errors).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from peer.core.errors import PeerError

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 50_000


class QuotaError(PeerError):
    code = "quota_failed"


def available(root: Path = CPU_ROOT) -> tuple[bool, str]:
    if os.name != "posix" or os.geteuid() != 0:
        return False, "not root"
    if not (root / "cpu.cfs_quota_us").exists():
        return False, f"no cgroup v1 cpu controller at {root}"
    if not os.access(root, os.W_OK):
        return False, f"{root} is not writable"
    return True, "cgroup v1 cpu quotas"


class CpuQuotas:
    """Creates and removes uniquely named cgroup v1 cpu groups."""

    def __init__(self, root: Path = CPU_ROOT, period_us: int = PERIOD_US) -> None:
        self.root = root
        self.period_us = period_us
        self.tag = f"amcoedge-{os.getpid()}-{secrets.token_hex(3)}"
        self.groups: list[Path] = []

    def create(self, index: int, cores: float) -> Path:
        if not 0.01 <= cores <= 1024:
            raise QuotaError(f"a quota must be in [0.01, 1024] cores, got {cores}")
        path = self.root / f"{self.tag}-{index}"
        try:
            path.mkdir()
            self.groups.append(path)
            (path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (path / "cpu.cfs_quota_us").write_text(str(int(cores * self.period_us)))
        except OSError as exc:
            raise QuotaError(f"cannot set up cgroup {path}: {exc}") from exc
        return path

    def set(self, path: Path, cores: float) -> None:
        """Change the quota of one of this object's groups."""
        if path not in self.groups:
            raise QuotaError(f"{path} is not one of this run's groups")
        if not 0.01 <= cores <= 1024:
            raise QuotaError(f"a quota must be in [0.01, 1024] cores, got {cores}")
        try:
            (path / "cpu.cfs_quota_us").write_text(str(int(cores * self.period_us)))
        except OSError as exc:
            raise QuotaError(f"cannot set the quota of {path}: {exc}") from exc

    @staticmethod
    def attach_self(path: Path) -> None:
        """Move the calling process into ``path`` (used in a child before exec)."""
        (path / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> list[str]:
        """Remove every group; returns the ones that could not be removed."""
        left: list[str] = []
        for path in reversed(self.groups):
            for _ in range(50):
                try:
                    pids = (path / "cgroup.procs").read_text().split()
                except OSError:
                    pids = []
                for pid in pids:  # processes still inside go back to the root group
                    with contextlib.suppress(OSError):
                        (self.root / "cgroup.procs").write_text(pid)
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                left.append(str(path))
        self.groups = []
        return left

    def __enter__(self) -> CpuQuotas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
