"""The process's resident memory, and handing freed heap back to the system.

``rss_bytes()`` reads ``VmRSS`` from ``/proc/self/status`` (Linux); elsewhere it falls back to
the peak (``ru_maxrss``), an upper bound. ``trim()`` calls glibc's ``malloc_trim(0)``: after a
large request, the freed blocks at the top of each malloc arena and whole free pages inside
them go back to the system instead of staying in the process. Where glibc is missing it does
nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from functools import cache
from pathlib import Path
from typing import Any


def rss_bytes() -> int:
    """This process's resident set in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        return lib if hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


def trim() -> bool:
    """Return free heap to the system (glibc ``malloc_trim``); False where it is not glibc."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
