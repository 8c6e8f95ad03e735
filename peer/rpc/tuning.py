"""Process-level tuning for moving large frames.

glibc serves large allocations with fresh ``mmap`` pages (or trims the top of the heap as soon
as it is free) and faults the memory back in on the next allocation; a peer that receives and
sends MiB-sized frames then spends much of its time in page faults (measured here: ~480-514
minor faults and 0.7-1.5 ms of CPU per 1 MiB echo round trip). Serving allocations up to
``mmap_threshold`` from the heap (``M_MMAP_THRESHOLD``) and keeping ``top_pad`` bytes of free
heap (``M_TOP_PAD``) removes those faults. Setting either turns off glibc's own adaptive
threshold, which is why both are set together. It is a process-wide setting: the peer's entry
point may call ``retain_heap()`` once; the library never does it on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TOP_PAD = -2  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
DEFAULT_TOP_PAD = 64 * 1024 * 1024
DEFAULT_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own adaptive maximum on 64-bit


def retain_heap(
    top_pad: int = DEFAULT_TOP_PAD, mmap_threshold: int = DEFAULT_MMAP_THRESHOLD
) -> bool:
    """Keep large allocations on a heap that is not trimmed; False where not possible."""
    if not sys.platform.startswith("linux") or top_pad < 0 or mmap_threshold < 0:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl has no mallopt)
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, min(mmap_threshold, DEFAULT_MMAP_THRESHOLD))
    return bool(ok) and bool(mallopt(M_TOP_PAD, min(top_pad, 2**31 - 1)))
