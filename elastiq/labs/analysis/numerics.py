"""Numeric deviation of attention implementations against a float64 golden reference.

    from elastiq.labs.analysis.numerics import deviation, sweep, attribution
    d = deviation("flash", "bf16", seq_len=1024, head_dim=64, block=64, seeds=5)
    d["max_abs"], d["mean_abs"], d["rel"]          # averaged over seeds (and the worst seed)

Implementations: ``baseline`` and ``flash`` (emulated, every precision chosen; see
attention.py), ``sdpa`` / ``sdpa-math`` / ``sdpa-flash`` (PyTorch's kernels on the
inputs' dtype). The golden output is baseline attention in float64 on the same
(already rounded) inputs, so the deviation measures the arithmetic, not the rounding
of Q, K and V. Inputs are N(0, 1), one head, as in the paper's microbenchmark.
"""
from __future__ import annotations

import itertools
import statistics

import torch

from .attention import AttentionPrecision, as_precision, baseline_attention, flash_attention, sdpa_attention

IMPLEMENTATIONS = ("baseline", "flash", "sdpa", "sdpa-math", "sdpa-flash")
STAGES = ("inputs", "accumulate", "stats", "output")


def metrics(out: torch.Tensor, golden: torch.Tensor) -> dict:
    """Maximum and mean absolute deviation, and relative (Frobenius) error."""
    d = (out.double() - golden.double()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "rel": float(torch.linalg.vector_norm(d) / torch.linalg.vector_norm(golden.double()))}


def inputs(seq_len: int, head_dim: int, seed: int, heads: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(heads, seq_len, head_dim, generator=g, dtype=torch.float64) for _ in range(3)]


def run(impl: str, q, k, v, prec, block: int | tuple[int, int] = 64, acc_chunk: int | None = None, causal: bool = False):
    """The output of one implementation (float64 copy)."""
    prec = as_precision(prec)
    if impl == "baseline":
        return baseline_attention(q, k, v, prec, acc_chunk, causal)
    if impl == "flash":
        bq, bk = (block, block) if isinstance(block, int) else block
        return flash_attention(q, k, v, prec, bq, bk, acc_chunk, causal)
    if impl.startswith("sdpa"):
        if prec.inputs.dtype is None:
            raise ValueError(f"{impl} runs PyTorch's kernel, which takes a torch dtype, not the format {prec.inputs.name}")
        backend = impl.partition("-")[2] or "default"
        return sdpa_attention(q, k, v, prec.inputs.dtype, backend, causal)
    raise ValueError(f"unknown attention implementation {impl!r}: use one of {', '.join(IMPLEMENTATIONS)}")


def deviation(impl: str, prec, seq_len: int = 1024, head_dim: int = 64, block=64, seeds: int = 3,
              acc_chunk: int | None = None, causal: bool = False, first_seed: int = 0) -> dict:
    """Deviation of ``impl`` at ``prec`` from the float64 golden, over ``seeds`` input draws:
    the mean over seeds of each metric, and ``worst_max_abs`` (the largest over seeds)."""
    prec = as_precision(prec)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    per = []
    for seed in range(first_seed, first_seed + seeds):
        q, k, v = inputs(seq_len, head_dim, seed)
        q, k, v = (prec.inputs.round(t) for t in (q, k, v))  # the golden sees the same inputs
        golden = baseline_attention(q, k, v, "fp64", causal=causal)
        per.append(metrics(run(impl, q, k, v, prec, block, acc_chunk, causal), golden))
    out = {key: statistics.fmean(m[key] for m in per) for key in per[0]}
    out["worst_max_abs"] = max(m["max_abs"] for m in per)
    return out


def sweep(impls, precisions, seq_lens, head_dims=(64,), blocks=(64,), seeds: int = 3, acc_chunk: int | None = None,
          progress: bool = True) -> list[dict]:
    """Every combination (impl x precision x seq_len x head_dim x block) as a row.
    Tiles larger than a sequence are skipped; ``block`` does not apply to baseline/SDPA."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from elastiq.progress import progress_bar

    precs = [as_precision(p) for p in precisions]
    for impl in impls:
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"unknown attention implementation {impl!r}: use one of {', '.join(IMPLEMENTATIONS)}")
    combos = []
    for impl, prec, s, d in itertools.product(impls, precs, seq_lens, head_dims):
        if impl.startswith("sdpa") and prec.inputs.dtype is None:
            continue
        for b in (blocks if impl == "flash" else (None,)):
            if b is None or b <= s:
                combos.append((impl, prec, s, d, b))
    rows = []
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
    with progress_bar(*cols, enabled=progress) as prog:
        task = prog.add_task("attention deviation", total=len(combos))
        for impl, prec, s, d, b in combos:
            r = deviation(impl, prec, s, d, b or 64, seeds, acc_chunk)
            rows.append({"impl": impl, "precision": prec.label, "seq_len": s, "head_dim": d, "block": b,
                         "seeds": seeds, **r})
            prog.advance(task)
    return rows


def attribution(low="bf16", high="fp32", seq_len: int = 1024, head_dim: int = 64, block: int = 64, seeds: int = 3,
                acc_chunk: int | None = None) -> list[dict]:
    """Which precision makes flash deviate: flash (and baseline) with every stage at
    ``low``, then with one stage raised to ``high``, then with every stage but the inputs
    at ``high`` (the real-kernel recipe), then one stage lowered from there."""
    rows = []

    def add(label, impl, prec):
        rows.append({"config": label, "impl": impl, "precision": prec.label,
                     **deviation(impl, prec, seq_len, head_dim, block, seeds, acc_chunk)})

    everything_low = AttentionPrecision.of(low)
    add(f"all {low}", "baseline", everything_low)
    add(f"all {low}", "flash", everything_low)
    for stage in STAGES[1:]:
        p = AttentionPrecision.of(low, **{stage: high}) if stage != "inputs" else None
        add(f"all {low}, {stage} {high}", "flash", p)
    kernel = AttentionPrecision.of(low, accumulate=high, stats=high, output=high)
    add(f"inputs {low}, rest {high}", "baseline", kernel)
    add(f"inputs {low}, rest {high}", "flash", kernel)
    for stage in STAGES[1:]:
        kw = {s: high for s in STAGES[1:]}
        kw[stage] = low
        add(f"inputs {low}, rest {high}, {stage} {low}", "flash", AttentionPrecision.of(low, **kw))
    return rows


def plot_deviation(rows: list[dict], path, title: str = "attention deviation from float64 golden") -> None:
    """Max |deviation| against sequence length: one line per (impl, precision, tile, head dim)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elastiq.cache import atomic_write_bytes

    lines: dict = {}
    for r in rows:
        key = f"{r['impl']} {r['precision']}" + (f" tile{r['block']}" if r["block"] else "") + \
              (f" d{r['head_dim']}" if len({x['head_dim'] for x in rows}) > 1 else "")
        lines.setdefault(key, []).append((r["seq_len"], r["max_abs"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, pts in lines.items():
        pts.sort()
        style = "--" if key.startswith("sdpa") else ("-" if key.startswith("flash") else ":")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=key)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("max |O - O_fp64| (mean over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
