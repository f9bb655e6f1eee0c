"""Process memory readings shared by the benchmarks (Linux /proc)."""
from __future__ import annotations

import ctypes
import resource


def rss_bytes() -> int:
    """Current resident size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """VmHWM: this process image's peak resident size (ru_maxrss would carry the
    parent's peak across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def trim_heap() -> None:
    """Return freed heap pages to the OS, so that later growth shows in the readings."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def reset_peak_rss() -> None:
    """Trim the heap, then reset VmHWM to the current resident size."""
    trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass
