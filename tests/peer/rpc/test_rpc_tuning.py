"""``retain_heap``: glibc ``mallopt`` calls, refused where they cannot apply."""

from __future__ import annotations

import platform
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
    assert retain_heap() is True
