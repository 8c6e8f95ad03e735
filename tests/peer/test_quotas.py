"""cgroup v1 CPU quotas: groups are created with the asked quota and always removed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from peer.harness import quotas

ok, why = quotas.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"no cgroup v1 cpu quotas here: {why}")


def test_group_quota_attach_and_cleanup() -> None:
    q = quotas.CpuQuotas()
    try:
        path = q.create(0, 0.25)
        assert path.name.startswith("amcoedge-")
        assert int((path / "cpu.cfs_quota_us").read_text()) == int(0.25 * q.period_us)
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            preexec_fn=lambda: quotas.CpuQuotas.attach_self(path),
        )
        try:
            assert str(proc.pid) in (path / "cgroup.procs").read_text().split()
            # a live process inside is moved out, so the group still goes away
            assert q.close() == []
            assert not path.exists()
        finally:
            proc.kill()
            proc.wait()
    finally:
        q.close()


def test_bad_quota_is_refused() -> None:
    with quotas.CpuQuotas() as q, pytest.raises(quotas.QuotaError):
        q.create(0, 0.0)
