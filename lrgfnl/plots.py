"""PNG plots of a campaign or a fit (matplotlib, Agg backend)."""
from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cls(path, ell, theory: dict, means: dict, errors: dict | None = None, title=""):
    """Mean binned C_ell per case against the windowed theory (dict label -> array)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, t in theory.items():
        ax.plot(ell, t, "-", lw=1.5, label=f"theory {label}")
    for label, m in means.items():
        err = None if errors is None else errors.get(label)
        ax.errorbar(ell, m, yerr=err, fmt="o", ms=3, capsize=2, label=label)
    ax.set(xscale="log", yscale="log", xlabel=r"$\ell$", ylabel=r"pseudo-$C_\ell$ (shot noise removed)",
           title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cross(path, ell, cross: dict, title=""):
    """Residual systematics: mean C_ell between delta and each template, per case."""
    plt = _plt()
    cases = list(cross)
    fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.4), sharey=True, squeeze=False)
    for ax, case in zip(axes[0], cases):
        for name, c in cross[case].items():
            ax.plot(ell, np.asarray(c) * ell, "-", lw=1, label=name)
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xscale="log", xlabel=r"$\ell$", title=case)
    axes[0][0].set_ylabel(r"$\ell\, C_\ell^{\delta, t}$")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recovery(path, rows: list, title=""):
    """Recovered f_NL (mean +- scatter over mocks) against the truth, one row per case."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        ax.errorbar(r["mean_fnl"], yi, xerr=r["scatter"], fmt="o", color="C0" if r["true_fnl"] == 0 else "C3")
        ax.plot([r["true_fnl"]] * 2, [yi - 0.4, yi + 0.4], "k-", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=7)
    ax.set(xlabel=r"recovered $f_{\rm NL}$ (mean $\pm$ scatter of mocks; bar = truth)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_corner(path, samples: np.ndarray, labels=("f_NL", "b", "noise"), truths=None, title=""):
    """A corner plot of the posterior samples (n, d)."""
    plt = _plt()
    d = samples.shape[1]
    fig, axes = plt.subplots(d, d, figsize=(2.2 * d, 2.2 * d))
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(samples[:, i], bins=40, histtype="step", color="k")
                q = np.percentile(samples[:, i], [16, 50, 84])
                for v in q:
                    ax.axvline(v, color="C0", lw=0.8, ls="--")
                ax.set_yticks([])
            else:
                ax.hist2d(samples[:, j], samples[:, i], bins=40, cmap="Greys")
            if truths is not None and truths[j] is not None:
                ax.axvline(truths[j], color="C3", lw=0.8)
            if i == d - 1:
                ax.set_xlabel(labels[j])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
