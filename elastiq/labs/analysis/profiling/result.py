"""The result of profiling one workload, and the summary numbers drawn from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from . import classes as C
from .flops import AttentionCall


def _shares(d: dict[str, float]) -> dict[str, float]:
    total = sum(d.values())
    return {k: (v / total if total else 0.0) for k, v in d.items()}


@dataclass
class ProfileResult:
    name: str
    family: str
    backend: str
    device: str
    step_name: str
    config: dict
    step_times: list[dict[str, float]]        # per step: seconds per class (operator time)
    step_wall: list[float]                    # per step: wall seconds under the profiler
    step_flops: list[dict[str, int]]          # per step: FLOPs per class
    step_calls: list[list[AttentionCall]]     # per step: every attention call
    weight_bytes: dict[str, int]              # conv, linear, other
    threads: int = 1
    ops: dict = field(default_factory=dict)  # {class: {aten operator: seconds over all steps}}
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.step_times)

    @property
    def times(self) -> dict[str, float]:
        """Seconds per class over all steps."""
        return {c: sum(s[c] for s in self.step_times) for c in C.CLASSES}

    @property
    def shares(self) -> dict[str, float]:
        """Share of operator time per class over all steps (sums to 1)."""
        return _shares(self.times)

    @property
    def step_shares(self) -> list[dict[str, float]]:
        return [_shares(s) for s in self.step_times]

    @property
    def flops(self) -> dict[str, int]:
        return {c: sum(s[c] for s in self.step_flops) for c in C.CLASSES}

    @property
    def flop_shares(self) -> dict[str, float]:
        return _shares(self.flops)

    @property
    def attention_time(self) -> float:
        return sum(self.times[c] for c in C.ATTENTION)

    def share_of_attention(self, cls: str) -> float:
        """cls's share of all attention time (e.g. temporal attention in a video model)."""
        total = self.attention_time
        return self.times[cls] / total if total else 0.0

    @property
    def compressible_time_share(self) -> float:
        """Share of operator time in linear and convolution: the operators elastiq formats compress."""
        return sum(self.shares[c] for c in C.COMPRESSIBLE)

    @property
    def compressible_weight_share(self) -> float:
        total = sum(self.weight_bytes.values())
        return (self.weight_bytes["conv"] + self.weight_bytes["linear"]) / total if total else 0.0

    @property
    def median_step_wall(self) -> float:
        return median(self.step_wall)

    @property
    def op_time_share_of_wall(self) -> float:
        """Operator time / wall time: the rest is Python and framework overhead between operators."""
        wall = sum(self.step_wall)
        return sum(self.times.values()) / wall if wall else 0.0

    def seq_lens(self, step: int = 0, kinds=("self", "cross")) -> list[int]:
        """Query lengths of the step's attention calls of these kinds (spatial tokens for a UNet)."""
        return [c.q_len for c in self.step_calls[step] if c.kind in kinds and c.q_len]

    def seq_len_spread(self, step: int = 0, kinds=("self", "cross")) -> float:
        """max / min query length over the step's attention calls (1.0 when all are equal)."""
        lens = self.seq_lens(step, kinds)
        return max(lens) / min(lens) if lens else 0.0

    def top_ops(self, cls: str, n: int = 5) -> list[tuple[str, float]]:
        """The n operators with most time in a class."""
        return sorted(self.ops.get(cls, {}).items(), key=lambda kv: -kv[1])[:n]

    def as_dict(self, calls_of_steps: int = 1) -> dict:
        """JSON-ready; attention calls listed for the first calls_of_steps steps only (they repeat)."""
        return {
            "name": self.name, "family": self.family, "backend": self.backend, "device": self.device,
            "threads": self.threads, "steps": self.steps, "step_name": self.step_name, "config": self.config,
            "shares": self.shares, "times_s": self.times, "flops": self.flops, "flop_shares": self.flop_shares,
            "step_shares": self.step_shares, "step_wall_s": self.step_wall,
            "median_step_wall_s": self.median_step_wall, "op_time_share_of_wall": self.op_time_share_of_wall,
            "attention_share": sum(self.shares[c] for c in C.ATTENTION),
            "temporal_share_of_attention": self.share_of_attention(C.ATTN_TEMPORAL),
            "compressible_time_share": self.compressible_time_share,
            "compressible_weight_share": self.compressible_weight_share, "weight_bytes": self.weight_bytes,
            "seq_len_spread": self.seq_len_spread(), "seq_lens": sorted(set(self.seq_lens())),
            "top_ops": {c: dict(self.top_ops(c)) for c in C.CLASSES if self.ops.get(c)},
            "attention_calls": [[c.as_dict() for c in calls] for calls in self.step_calls[:calls_of_steps]],
            **self.extra,
        }
