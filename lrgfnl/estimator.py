"""Pseudo-C_ell of the galaxy density contrast, the paper's ell binning, and template cross-spectra.

delta_i = n_i / (nbar fracgood_i F_i) - 1 on the footprint, with nbar measured on the footprint
itself (hence the integral constraint), F the selection function the weights undo (1 if none).
C_ell = anafast(delta * fracgood) / mean(fracgood), as in Rezaie et al.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# ell edges of the paper: 2, 4, ..., 20, then 30, 40, ..., 300
PAPER_EDGES = np.array(list(range(2, 21, 2)) + list(range(30, 301, 10)))


@dataclass
class Binning:
    """Bins [edges[i], edges[i+1]) averaged with weights 2 ell + 1."""
    edges: np.ndarray
    lmax: int

    @classmethod
    def paper(cls, ell_max: int, ell_min: int = 2):
        """The paper's bins that lie whole in ell_min..ell_max."""
        e = PAPER_EDGES[(PAPER_EDGES >= ell_min) & (PAPER_EDGES <= ell_max + 1)]
        if len(e) < 2:
            raise ValueError(f"no whole bin of the paper's binning lies in ell {ell_min}..{ell_max}")
        return cls(edges=e, lmax=int(e[-1]) - 1)

    @functools.cached_property
    def matrix(self) -> np.ndarray:
        m = np.zeros((len(self.edges) - 1, self.lmax + 1))
        for i, (lo, hi) in enumerate(zip(self.edges[:-1], self.edges[1:])):
            ell = np.arange(lo, hi)
            m[i, ell] = (2 * ell + 1) / np.sum(2 * ell + 1)
        return m

    @property
    def centres(self) -> np.ndarray:
        return self.matrix @ np.arange(self.lmax + 1)

    def __call__(self, cl) -> np.ndarray:
        return np.asarray(cl)[..., : self.lmax + 1] @ self.matrix.T


def density_contrast(counts, fracgood, selection=None):
    """(delta map, nbar per unit fracgood) with delta = 0 off the footprint."""
    fg = np.asarray(fracgood, float)
    sel = fg > 0
    f = np.ones_like(fg) if selection is None else np.asarray(selection, float)
    weighted = np.zeros_like(fg)
    weighted[sel] = counts[sel] / f[sel]
    nbar = weighted[sel].sum() / fg[sel].sum()
    delta = np.zeros_like(fg)
    delta[sel] = weighted[sel] / (nbar * fg[sel]) - 1.0
    return delta, nbar


def pseudo_cl(delta, fracgood, lmax: int) -> np.ndarray:
    import healpy as hp

    return hp.anafast(delta * fracgood, lmax=lmax, iter=0) / np.mean(fracgood)


def shot_noise(counts, fracgood, selection, nbar, nside: int) -> float:
    """Expected Poisson noise in the pseudo-C_ell: Omega_pix sum(W^2 n / (nbar fg F)^2) / sum(W)."""
    import healpy as hp

    fg = np.asarray(fracgood, float)
    sel = fg > 0
    f = np.ones_like(fg) if selection is None else np.asarray(selection, float)
    expected = nbar * fg[sel] * f[sel]
    return float(hp.nside2pixarea(nside) * np.sum(fg[sel] ** 2 * counts[sel] / expected**2) / fg.sum())


def template_cross_spectra(delta, templates: dict, fracgood, lmax: int) -> dict:
    """C_ell between delta and each template's contrast (t / mean - 1 on the footprint): null tests."""
    import healpy as hp

    fg = np.asarray(fracgood, float)
    sel = fg > 0
    out = {}
    for name, t in templates.items():
        c = np.zeros_like(fg)
        c[sel] = t[sel] / np.average(t[sel], weights=fg[sel]) - 1.0
        out[name] = hp.anafast(delta * fg, c * fg, lmax=lmax, iter=0) / np.mean(fg)
    return out


@dataclass
class Measurement:
    cl: np.ndarray          # pseudo-C_ell, ell = 0..lmax
    shot_noise: float
    nbar: float


def measure(counts, fracgood, lmax: int, nside: int, selection=None) -> Measurement:
    delta, nbar = density_contrast(counts, fracgood, selection)
    return Measurement(cl=pseudo_cl(delta, fracgood, lmax),
                       shot_noise=shot_noise(counts, fracgood, selection, nbar, nside), nbar=nbar)
