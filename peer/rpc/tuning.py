"""Process-level tuning for moving large frames.

glibc returns the top of the heap to the OS as soon as it is free and faults it back in on
the next allocation; a peer that receives and sends MiB-sized frames then spends much of its
time in page faults (measured here: ~480 minor faults and ~0.7 ms of system time per 1 MiB
echo round trip, both ends in one process). Keeping some free heap at the top
(``M_TOP_PAD``) removes those faults. It is a process-wide setting: the peer's entry point
may call ``retain_heap()`` once; the library never does it on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TOP_PAD = -2  # glibc <malloc.h>
DEFAULT_TOP_PAD = 64 * 1024 * 1024


def retain_heap(top_pad: int = DEFAULT_TOP_PAD) -> bool:
    """Ask glibc to keep ``top_pad`` bytes of free heap; False where that is not possible."""
    if not sys.platform.startswith("linux") or top_pad < 0:
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
    return bool(mallopt(M_TOP_PAD, min(top_pad, 2**31 - 1)))
