"""Ring collectives: how many bytes each device sends, and how long that takes.

``size`` is always the full logical tensor in bytes (for all-gather: the gathered output;
for reduce-scatter: the input before scattering). For a ring of n devices at per-device,
per-direction bandwidth B and per-step latency a:

    all-reduce      2(n-1)/n * size / B + 2(n-1) a      (reduce-scatter then all-gather)
    all-gather      (n-1)/n * size / B + (n-1) a
    reduce-scatter  (n-1)/n * size / B + (n-1) a
    all-to-all      (n-1)/n * size / B + (n-1) a
    point-to-point  size / B + a

A group that spans nodes runs hierarchically (the usual two-level NCCL pattern):
reduce-scatter inside the node, the collective between nodes on a 1/n_intra shard over each
device's NIC share, then all-gather inside the node.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")


def ring_bytes(kind: str, size: float, n: int) -> float:
    """Bytes each device sends for one collective of ``size`` bytes among ``n`` devices."""
    _check(kind, size, n)
    if n == 1:
        return 0.0 if kind != "p2p" else float(size)
    frac = (n - 1) / n
    return {"all_reduce": 2 * frac * size, "all_gather": frac * size, "reduce_scatter": frac * size,
            "all_to_all": frac * size, "p2p": float(size)}[kind]


def ring_steps(kind: str, n: int) -> int:
    if kind == "p2p":
        return 1
    return 0 if n == 1 else (2 * (n - 1) if kind == "all_reduce" else n - 1)


def ring_time(kind: str, size: float, n: int, bw: float, latency: float = 0.0) -> float:
    """Seconds for one flat-ring collective at per-device per-direction bandwidth ``bw``."""
    if bw <= 0:
        raise ValueError(f"bandwidth must be positive, got {bw}")
    return ring_bytes(kind, size, n) / bw + ring_steps(kind, n) * latency


@dataclass(frozen=True)
class Links:
    """Effective per-device bandwidths and latencies inside and between nodes."""
    intra_bw: float
    inter_bw: float
    intra_lat: float = 0.0
    inter_lat: float = 0.0

    @classmethod
    def of(cls, system) -> "Links":
        return cls(system.intra_bw * system.intra_eff, system.inter_bw * system.inter_eff,
                   system.intra_latency_s, system.inter_latency_s)


def collective_time(kind: str, size: float, n_intra: int, n_inter: int, links: Links) -> float:
    """Seconds for a collective over ``n_intra`` devices per node times ``n_inter`` nodes."""
    if n_intra < 1 or n_inter < 1:
        raise ValueError(f"group sizes must be >= 1, got {n_intra} x {n_inter}")
    if kind == "p2p":
        bw, lat = (links.intra_bw, links.intra_lat) if n_inter == 1 else (links.inter_bw, links.inter_lat)
        return ring_time("p2p", size, 2, bw, lat)
    if n_inter == 1:
        return ring_time(kind, size, n_intra, links.intra_bw, links.intra_lat)
    if n_intra == 1:
        return ring_time(kind, size, n_inter, links.inter_bw, links.inter_lat)
    shard = size / n_intra
    if kind == "all_reduce":
        return (ring_time("reduce_scatter", size, n_intra, links.intra_bw, links.intra_lat)
                + ring_time("all_reduce", shard, n_inter, links.inter_bw, links.inter_lat)
                + ring_time("all_gather", size, n_intra, links.intra_bw, links.intra_lat))
    if kind == "all_to_all":   # each device sends (a-1)/N of its data over NVLink, (N-a)/N over its NIC
        n = n_intra * n_inter
        return (size * (n_intra - 1) / n / links.intra_bw + (n_intra - 1) * links.intra_lat
                + size * (n - n_intra) / n / links.inter_bw + (n_inter - 1) * links.inter_lat)
    # all-gather / reduce-scatter: a pass between nodes on 1/n_intra of the data, a pass inside the node
    return (ring_time(kind, size, n_intra, links.intra_bw, links.intra_lat)
            + ring_time(kind, size / n_intra, n_inter, links.inter_bw, links.inter_lat))


def _check(kind, size, n):
    if kind not in KINDS:
        raise ValueError(f"unknown collective {kind!r}; known: {', '.join(KINDS)}")
    if size < 0:
        raise ValueError(f"collective size must not be negative, got {size}")
    if int(n) != n or n < 1:
        raise ValueError(f"collective group size must be a positive integer, got {n}")
