"""Reports of profiling results: a rich table, a stacked-bar PNG, JSON (all written whole or not at all)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from rich.table import Table

from elastiq.cache import atomic_write_bytes, atomic_write_text

from . import classes as C
from .result import ProfileResult

COLORS = {C.CONV: "tab:blue", C.LINEAR: "tab:orange", C.ATTN_SELF: "tab:red", C.ATTN_CROSS: "lightcoral",
          C.ATTN_TEMPORAL: "darkred", C.NORM: "tab:green", C.ELEMENTWISE: "tab:purple", C.MEMORY: "tab:gray",
          C.OTHER: "black"}


def table(r: ProfileResult) -> Table:
    """Per class: time per step, share of operator time (and its range over steps), FLOPs per step."""
    t = Table(title=f"{r.name} ({r.family}): {r.steps} {r.step_name}s, {r.device}, {r.threads} thread(s), "
                    f"attention backend {r.backend}")
    for col in ("operator class", "ms / step", "share", "share range over steps", "GFLOP / step", "FLOP share"):
        t.add_column(col, justify="left" if col == "operator class" else "right")
    step_shares = r.step_shares
    for c in C.CLASSES:
        lo, hi = min(s[c] for s in step_shares), max(s[c] for s in step_shares)
        t.add_row(C.LABELS[c], f"{1e3 * r.times[c] / r.steps:.2f}", f"{100 * r.shares[c]:.1f}%",
                  f"{100 * lo:.1f}-{100 * hi:.1f}%", f"{r.flops[c] / r.steps / 1e9:.3f}",
                  f"{100 * r.flop_shares[c]:.1f}%")
    lens = sorted(set(r.seq_lens()))
    t.caption = (f"median wall {1e3 * r.median_step_wall:.1f} ms / {r.step_name} (under the profiler); operators "
                 f"{100 * r.op_time_share_of_wall:.0f}% of it. Linear+conv (what elastiq compresses): "
                 f"{100 * r.compressible_time_share:.1f}% of time, {100 * r.compressible_weight_share:.1f}% of "
                 f"weight bytes. Attention query lengths {lens} (spread {r.seq_len_spread():.0f}x); temporal "
                 f"{100 * r.share_of_attention(C.ATTN_TEMPORAL):.1f}% of attention time.")
    return t


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _stacked(ax, labels, share_rows) -> None:
    bottom = [0.0] * len(labels)
    for c in C.CLASSES:
        vals = [100 * s[c] for s in share_rows]
        if any(vals):
            ax.bar(labels, vals, bottom=bottom, color=COLORS[c], label=C.LABELS[c], width=0.7)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("share of operator time (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def plot(r: ProfileResult, path) -> None:
    """Stacked bars of the class shares: one bar per step and one for all steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{i + 1}" for i in range(r.steps)] + ["all"]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.45 * len(labels) + 4), 4.2))
    _stacked(ax, labels, r.step_shares + [r.shares])
    ax.set_xlabel(r.step_name)
    ax.set_title(f"{r.name}: operator time by class ({r.device}, {r.threads} thread(s), {r.backend} attention)",
                 fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(Path(path), _png(fig))
    plt.close(fig)


def plot_models(results: list[ProfileResult], path, title: str) -> None:
    """Stacked bars of the class shares, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.3 * len(results) + 4, 4.5))
    _stacked(ax, [r.name for r in results], [r.shares for r in results])
    ax.set_title(title, fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(Path(path), _png(fig))
    plt.close(fig)


def write_json(data, path) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=1))
