"""``retain_heap``: glibc ``mallopt`` calls, refused where they cannot apply."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from peer.rpc.tuning import retain_heap


def test_refuses_negative_values() -> None:
    assert retain_heap(-1) is False
    assert retain_heap(mmap_threshold=-1) is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc-only",
)
def test_applies_on_glibc() -> None:
    # In a child process: the setting is process-wide and must not leak into this one.
    code = "from peer.rpc.tuning import retain_heap; print(retain_heap())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
