"""``retain_heap``: a glibc ``mallopt`` call, refused where it cannot apply."""

from __future__ import annotations

import platform
import sys

import pytest

from peer.rpc.tuning import retain_heap


def test_refuses_negative_pad() -> None:
    assert retain_heap(-1) is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt(M_TOP_PAD) is glibc-only",
)
def test_applies_on_glibc() -> None:
    assert retain_heap(64 * 1024 * 1024) is True
