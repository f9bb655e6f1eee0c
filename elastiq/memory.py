"""Process memory that follows what the model holds (glibc's allocator, Linux).

By default glibc raises its mmap threshold each time a large block is freed; after that,
blocks up to 32 MiB come from the heap and stay resident once freed. Pinning the
threshold makes every larger allocation its own mapping, returned to the system when
freed. Process-wide; no-ops where the C library is not glibc.
"""
from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def pin_mmap_threshold(nbytes: int) -> None:
    """Allocations of ``nbytes`` or more get their own mappings from now on."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, int(nbytes))


def trim_heap() -> None:
    """Hand the heap's free pages back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
