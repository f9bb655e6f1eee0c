"""Process memory readings shared by the benchmarks (Linux /proc)."""
from __future__ import annotations

import resource

from elastiq.memory import trim_heap  # noqa: F401  (the benchmarks import it from here too)


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


def reset_peak_rss() -> None:
    """Trim the heap, then reset VmHWM to the current resident size."""
    trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass
