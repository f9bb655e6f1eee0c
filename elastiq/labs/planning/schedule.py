"""A two-stream schedule: one compute stream, one communication stream, and dependencies.

Each op goes on its stream in program order; it starts when its stream is free and every op
it depends on has finished (the MAD-Max idea, written from the paper's description). The
makespan minus the busy compute time is the communication that nothing hid ("exposed").
"""
from __future__ import annotations

from dataclasses import dataclass, field

COMPUTE, COMM = "compute", "comm"


@dataclass
class Op:
    name: str
    stream: str
    seconds: float
    deps: tuple = ()
    start: float = 0.0
    end: float = 0.0


@dataclass
class Schedule:
    ops: list = field(default_factory=list)

    def add(self, name: str, stream: str, seconds: float, deps=()) -> int:
        """Append an op; ``deps`` are indices returned by earlier ``add`` calls. Returns its index."""
        if stream not in (COMPUTE, COMM):
            raise ValueError(f"stream must be {COMPUTE!r} or {COMM!r}, got {stream!r}")
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"op {name}: duration must be a non-negative number, got {seconds}")
        for d in deps:
            if not 0 <= d < len(self.ops):
                raise ValueError(f"op {name}: dependency {d} is not an earlier op")
        self.ops.append(Op(name, stream, float(seconds), tuple(deps)))
        return len(self.ops) - 1

    def run(self) -> "Timeline":
        cursor = {COMPUTE: 0.0, COMM: 0.0}
        busy = {COMPUTE: 0.0, COMM: 0.0}
        for op in self.ops:
            op.start = max([cursor[op.stream]] + [self.ops[d].end for d in op.deps])
            op.end = op.start + op.seconds
            cursor[op.stream] = op.end
            busy[op.stream] += op.seconds
        total = max(cursor.values())
        return Timeline(total, busy[COMPUTE], busy[COMM], self.ops)


@dataclass
class Timeline:
    total_s: float
    compute_s: float
    comm_s: float
    ops: list

    @property
    def exposed_comm_s(self) -> float:
        """Time the compute stream is not busy: waiting on communication."""
        return max(0.0, self.total_s - self.compute_s)

    @property
    def overlapped_comm_s(self) -> float:
        return max(0.0, self.comm_s - self.exposed_comm_s)
