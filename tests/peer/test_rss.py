"""RssSampler: per-peer peak RSS from /proc, across restarts of a peer's process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peer.harness.rss import RssSampler, read_status_kib

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

GROW = "import sys, time; b = bytearray(int(sys.argv[1]) * 2**20); b[::4096] = b'x' * len(b[::4096]); print('up', flush=True); time.sleep(30)"


def spawn(mib: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", GROW, str(mib)], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline() == b"up\n"
    return p


def test_peak_first_minute_and_restarts_are_recorded() -> None:
    procs = {"p0": spawn(40), "p1": spawn(5)}
    s = RssSampler(lambda: {k: v.pid for k, v in procs.items()}, first_s=3600.0)
    try:
        s.sample()
        procs["p1"].kill()
        procs["p1"].wait()
        procs["p1"] = spawn(80)  # the restarted peer is bigger
        s.sample()
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    got = s.summary()["peers"]
    assert got["p0"]["processes"] == 1 and got["p1"]["processes"] == 2
    assert got["p0"]["peak_rss_mib"] >= 40 and got["p1"]["peak_rss_mib"] >= 80
    assert got["p1"]["peak_first_min_mib"] == got["p1"]["peak_rss_mib"]
    assert got["p0"]["peak_rss_mib"] >= got["p0"]["last_rss_mib"] > 0
    assert read_status_kib(2**22 + 12345) == {}  # a pid that is not there
