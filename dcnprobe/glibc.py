"""glibc's allocator, seen from Python: give free memory back, and say how much it holds.

RSS alone gives false leak alarms: glibc keeps freed memory in its arenas, so RSS can
grow while nothing is really retained. `mallinfo()` separates bytes in use from bytes
the allocator merely holds. Both functions are no-ops off glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        libc = ctypes.CDLL(path)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim"):
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _Mallinfo2
    return libc


def malloc_trim() -> bool:
    """Return free heap memory to the OS. True when glibc did it."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def mallinfo() -> dict[str, int] | None:
    """{'in_use': bytes handed out, 'free_held': bytes free but kept} or None off glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    info = libc.mallinfo2()
    # hblkhd: large blocks served by mmap, which are in use until freed.
    return {"in_use": info.uordblks + info.hblkhd, "free_held": info.fordblks}
