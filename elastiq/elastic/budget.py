"""Memory budgets: how many bytes the hosted model's weights may take right now.

A budget source is a callable ``source(held) -> bytes``; ``held`` is what the model's
weights hold now, which a swap would give back, so a budget read from the machine's
free memory counts it as available. A trace is a recorded list of (seconds, bytes)
to replay.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from elastiq.errors import InputError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*$", re.IGNORECASE)
MAX_BYTES = 2**60  # one exbibyte: no machine's memory comes near; larger sizes are typos


def parse_bytes(text) -> int:
    """``"80MiB"``, ``"1.5GB"``, ``"123456"`` -> bytes; refuses what is not a size up to 1 EiB."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _SIZE.match(str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"cannot read {text!r} as a memory size: write e.g. 80MiB, 1.5GB or 123456 (bytes)")
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value > MAX_BYTES:
        raise InputError(f"a memory size of {str(text)[:40]}{'...' if len(str(text)) > 40 else ''} is beyond "
                         f"{MAX_BYTES} bytes (1 EiB): write e.g. 80MiB or 1.5GB")
    if value < 0:
        raise InputError(f"a memory size cannot be negative, got {text}")
    return int(value)


@dataclass(frozen=True)
class Fixed:
    bytes: int

    def __call__(self, held: int = 0) -> int:
        return self.bytes


@dataclass(frozen=True)
class AvailableMemory:
    """The machine's available memory (psutil) plus what the model holds, minus a reserve
    for everything else the process needs (KV cache, activations, the interpreter)."""
    reserve: int = 0

    def __call__(self, held: int = 0) -> int:
        import psutil

        return psutil.virtual_memory().available + held - self.reserve


@dataclass(frozen=True)
class CgroupLimit:
    """The cgroup's memory limit minus its current use, plus what the model holds, minus a
    reserve. Reads cgroup v2 (memory.max, memory.current) or v1 (memory.limit_in_bytes,
    memory.usage_in_bytes) under ``root``."""
    reserve: int = 0
    root: str = "/sys/fs/cgroup"

    def read(self) -> tuple[int, int]:
        root = Path(self.root)
        for limit_name, usage_name in (("memory.max", "memory.current"),
                                       ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
            limit_file, usage_file = root / limit_name, root / usage_name
            if limit_file.is_file() and usage_file.is_file():
                raw = limit_file.read_text().strip()
                if raw == "max" or int(raw) >= 2**60:
                    raise ValueError(f"{limit_file} sets no memory limit ({raw}): use the available-memory "
                                     "budget (--available) or a fixed one (--budget) instead")
                return int(raw), int(usage_file.read_text().strip())
        raise ValueError(f"no cgroup memory controller under {root} (looked for memory.max and "
                         "memory/memory.limit_in_bytes): this process runs in no memory cgroup; use --available or --budget")

    def __call__(self, held: int = 0) -> int:
        limit, usage = self.read()
        return limit - usage + held - self.reserve


def read_trace(path) -> list[tuple[float, int]]:
    """A memory trace: one ``seconds,bytes`` pair per line (sizes may carry units such as
    MiB; ``#`` starts a comment; a ``seconds,bytes`` header line is allowed). Times must
    start at or after 0 and increase."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file not found: {path}")
    events: list[tuple[float, int]] = []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file of 'seconds,bytes' lines") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or (not events and line.replace(" ", "").lower() in ("seconds,bytes", "time,bytes")):
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError("expected two fields")
            t, b = float(parts[0]), parse_bytes(parts[1])
        except ValueError as e:
            raise InputError(f"{path}:{n}: cannot read {line!r} as 'seconds,bytes' ({e})") from None
        if not math.isfinite(t):
            raise InputError(f"{path}:{n}: time {parts[0]!r} is not a finite number of seconds")
        if t < 0 or (events and t <= events[-1][0]):
            raise InputError(f"{path}:{n}: times must start at 0 or later and increase; got {t} after "
                             f"{events[-1][0] if events else 'the start'}")
        events.append((t, b))
    if not events:
        raise InputError(f"{path} holds no (seconds, bytes) events")
    return events
