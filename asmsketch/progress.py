"""A dependency-free progress bar on stderr (long steps show progress)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: float, label: str, stream=sys.stderr):
        self.total, self.label, self.stream = total, label, stream
        self.done, self.t0, self.last, self.note = 0.0, time.time(), 0.0, ""

    def update(self, n: float = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        self.draw()

    def set(self, done: float, note: str = "") -> None:
        self.done, self.note = done, note or self.note
        self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        self.stream.write(f"\r{self.label} [{bar}] {100 * frac:5.1f}% {now - self.t0:6.0f}s {self.note}   ")
        self.stream.flush()

    def close(self) -> None:
        self.draw(force=True)
        self.stream.write("\n")
        self.stream.flush()
