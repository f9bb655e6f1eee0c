"""Stacked-bar PNGs of time and carbon breakdowns (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

import io
from pathlib import Path

from elastiq.cache import atomic_write_bytes

TIME_COLORS = {"compute": "#4c72b0", "exposed communication": "#dd8452", "pipeline bubble": "#c44e52",
               "prefill": "#4c72b0", "decode": "#55a868"}


def _stacked(rows, path: Path, title: str, ylabel: str, markers=None, colors=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r[0] for r in rows]
    keys = []
    for _, parts in rows:
        keys += [k for k in parts if k not in keys]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.2))
    bottom = [0.0] * len(rows)
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
    for i, k in enumerate(keys):
        vals = [parts.get(k, 0.0) for _, parts in rows]
        ax.bar(labels, vals, bottom=bottom, label=k, color=(colors or {}).get(k, palette[i % len(palette)]))
        bottom = [b + v for b, v in zip(bottom, vals)]
    if markers:
        xs = [i for i, m in enumerate(markers) if m is not None]
        ax.scatter(xs, [markers[i] for i in xs], marker="_", s=600, color="black", zorder=3, label="published")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_time_breakdown(rows, path, title: str) -> None:
    """rows: (label, {part: seconds}, published seconds or None). Bars are normalised per row when
    the totals differ by more than 10x, so that small and large cases share one axis."""
    totals = [sum(p.values()) for _, p, _ in rows]
    norm = max(totals) / max(min(totals), 1e-30) > 10
    scaled = [(lab,
               {k: v / (pub if norm and pub else 1) for k, v in parts.items()}) for lab, parts, pub in rows]
    marks = [(1.0 if norm else pub) if pub else None for _, _, pub in rows]
    _stacked(scaled, path, title, "fraction of published time" if norm else "seconds", marks, TIME_COLORS)


def plot_carbon_breakdown(rows, path, title: str) -> None:
    """rows: (label, {component: kg CO2e})."""
    _stacked(rows, path, title, "kg CO2e")
