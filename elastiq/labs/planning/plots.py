"""Stacked-bar PNGs of time and carbon breakdowns (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

import io
from pathlib import Path

from elastiq.cache import atomic_write_bytes

TIME_COLORS = {"compute": "#4c72b0", "exposed communication": "#dd8452", "pipeline bubble": "#c44e52",
               "prefill": "#4c72b0", "decode": "#55a868", "operational": "#dd8452"}


def _bars(ax, rows, colors, keys, markers=None):
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    bottom = [0.0] * len(rows)
    labels = [r[0] for r in rows]
    for i, k in enumerate(keys):
        vals = [parts.get(k, 0.0) for _, parts in rows]
        if not any(vals):
            continue
        ax.bar(labels, vals, bottom=bottom, label=k, color=colors.get(k, cmap(i % 20)))
        bottom = [b + v for b, v in zip(bottom, vals)]
    if markers:
        xs = [i for i, m in enumerate(markers) if m is not None]
        ax.scatter(xs, [markers[i] for i in xs], marker="_", s=600, color="black", zorder=3, label="published")
    import matplotlib.pyplot as plt
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _keys(rows):
    keys = []
    for _, parts in rows:
        keys += [k for k in parts if k not in keys]
    return keys


def plot_time_breakdown(rows, path, title: str) -> None:
    """rows: (label, {part: seconds}, published seconds or None). Bars are normalised to the published
    time when totals differ by more than 10x, so that small and large cases share one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = [sum(p.values()) for _, p, _ in rows]
    norm = max(totals) / max(min(totals), 1e-30) > 10
    scaled = [(lab, {k: v / (pub if norm and pub else 1) for k, v in parts.items()}) for lab, parts, pub in rows]
    marks = [(1.0 if norm else pub) if pub else None for _, _, pub in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.2))
    _bars(ax, scaled, TIME_COLORS, _keys(scaled), marks if any(m is not None for m in marks) else None)
    ax.set_ylabel("fraction of published time" if norm else "seconds")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_carbon_breakdown(rows, path, title: str) -> None:
    """rows: (label, {component: kg CO2e}). Rows whose totals differ by more than 20x go on separate
    panels, each with its own axis, so a phone shows next to a GPU server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: sum(r[1].values()))
    panels, cur = [], []
    for r in rows:
        if cur and sum(r[1].values()) > 20 * sum(cur[0][1].values()):
            panels.append(cur)
            cur = []
        cur.append(r)
    panels.append(cur)
    keys = _keys(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 1.3 * len(rows) + 3.5), 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [len(p) for p in panels]})
    for ax, p in zip(axes[0], panels):
        _bars(ax, p, {}, keys)
        ax.set_ylabel("kg CO2e")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
