"""The CPU quota a peer runs under, read from fake cgroup v1 and v2 trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.runtime.cpu_limit import cpu_limit, quota_slowdown


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v1_quota_of_the_group_and_the_tightest_ancestor(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n2:cpuacct:/\n1:cpu:/amcoedge-1/p3\n0::/\n")
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu" / "amcoedge-1" / "p3" / "cpu.cfs_quota_us", "25000\n")
    _write(root / "cpu" / "amcoedge-1" / "p3" / "cpu.cfs_period_us", "100000\n")
    assert cpu_limit(str(proc), str(root)) == pytest.approx(0.25)
    _write(root / "cpu" / "amcoedge-1" / "cpu.cfs_quota_us", "10000\n")  # a tighter parent
    _write(root / "cpu" / "amcoedge-1" / "cpu.cfs_period_us", "100000\n")
    assert cpu_limit(str(proc), str(root)) == pytest.approx(0.1)


def test_v2_cpu_max_and_unlimited(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "cgroup"
    proc.write_text("0::/pod/peer\n")
    _write(root / "pod" / "peer" / "cpu.max", "max 100000\n")
    assert cpu_limit(str(proc), str(root)) is None
    _write(root / "pod" / "cpu.max", "150000 100000\n")
    assert cpu_limit(str(proc), str(root)) == pytest.approx(1.5)


def test_nothing_readable_means_no_limit(tmp_path: Path) -> None:
    assert cpu_limit(str(tmp_path / "missing"), str(tmp_path)) is None
    proc = tmp_path / "cgroup"
    proc.write_text("garbage\n1:cpu:/nowhere\n")
    assert cpu_limit(str(proc), str(tmp_path)) is None


def test_slowdown_is_threads_over_the_quota() -> None:
    assert quota_slowdown(1, None) == 1.0
    assert quota_slowdown(1, 0.5) == pytest.approx(2.0)
    assert quota_slowdown(1, 0.17) == pytest.approx(1 / 0.17)
    assert quota_slowdown(2, 4.0) == 1.0  # more quota than threads: no slower
    assert quota_slowdown(1, 0.0) == 1.0


def test_the_local_cluster_tells_each_peer_its_quota(tmp_path: Path) -> None:
    """A peer under ``ip netns exec`` cannot read its cgroup (``/sys`` is remounted there), so
    the runner passes the quota it set on the command line; a peer without a group gets none."""
    from peer.harness.cluster import ClusterSpec, LocalCluster, Place

    places = tuple(
        Place(f"10.9.0.{i + 1}", 7000, 8000, ("ip", "netns", "exec", f"n{i}")) for i in range(3)
    )
    cluster = LocalCluster(ClusterSpec(peers=3, quotas=(0.5, 0.17), places=places), tmp_path)
    cluster._hosts = [pl.host for pl in places]
    cluster._ports, cluster._https = [7000] * 3, [8000] * 3
    cluster._groups = [tmp_path / "g0", tmp_path / "g1", None]  # the third: no cgroups here
    args = [cluster.peer_args(i, 0 if i else None) for i in range(3)]
    assert args[0][:4] == ["ip", "netns", "exec", "n0"]
    assert args[0][args[0].index("--cpu-cores") + 1] == "0.5"
    assert args[1][args[1].index("--cpu-cores") + 1] == "0.17"
    assert "--cpu-cores" not in args[2]
    assert args[1][args[1].index("--join") + 1] == "10.9.0.1:7000"
