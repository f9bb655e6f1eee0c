"""Gaussian and log-normal Poisson mocks on the sphere, and their imaging contamination.

A mock is counts n_i ~ Poisson(nbar_pix * fracgood_i * F_i * (1 + delta_i)) with delta a Gaussian
or log-normal field whose C_ell is the theory's, and F a selection function of the imaging maps
(F = 1 for clean mocks). The log-normal field is exp(G - sigma_G^2 / 2) - 1 with G Gaussian; the
spectrum of G comes from glass, which inverts xi_LN = exp(xi_G) - 1 on the band-limited sphere.
"""
from __future__ import annotations

import numpy as np

from .templates import NAMES3, gaussian_map, standardize

# DESI DR9 LRG targets: about 12 million over 14,000 deg^2
LRG_DENSITY_PER_DEG2 = 12.0e6 / 14000.0


def nbar_per_pixel(nside: int, density_per_deg2: float = LRG_DENSITY_PER_DEG2) -> float:
    import healpy as hp

    return density_per_deg2 * hp.nside2pixarea(nside, degrees=True)


def gaussian_cl_for_lognormal(cl: np.ndarray) -> np.ndarray:
    """C_ell of the Gaussian field G whose exp(G) - 1 has spectrum cl (glass's band-limited solver)."""
    import glass

    return np.asarray(glass.compute_gaussian_spectra([glass.grf.Lognormal(1.0)], [np.asarray(cl, float)])[0])


def density_field(cl: np.ndarray, nside: int, rng: np.random.Generator, kind: str = "lognormal",
                  cl_gauss: np.ndarray | None = None) -> np.ndarray:
    """delta on the pixel centres; cl runs over ell = 0..lmax (lmax = 3 nside - 1 is typical)."""
    if kind == "gaussian":
        return gaussian_map(cl, nside, rng)
    if kind != "lognormal":
        raise ValueError(f"unknown mock kind {kind!r}: use 'lognormal' or 'gaussian'")
    cg = gaussian_cl_for_lognormal(cl) if cl_gauss is None else cl_gauss
    g = gaussian_map(cg, nside, rng)
    var = np.sum((2 * np.arange(len(cg)) + 1) / (4 * np.pi) * cg)
    return np.exp(g - var / 2) - 1.0


def poisson_counts(delta, nbar_pix, fracgood, selection, rng) -> np.ndarray:
    lam = nbar_pix * fracgood * selection * np.clip(1.0 + delta, 0.0, None)
    return rng.poisson(lam).astype(float)


def linear_selection(templates: dict, footprint: np.ndarray) -> np.ndarray:
    """A known linear selection in the three primary maps, mean 1 over the footprint."""
    x = standardize(np.stack([templates[n] for n in NAMES3], axis=1), footprint)
    f = 1.0 - 0.06 * x[:, 0] + 0.05 * x[:, 1] - 0.04 * x[:, 2]
    return _normalise(np.clip(f, 0.05, None), footprint)


def nonlinear_selection(templates: dict, footprint: np.ndarray) -> np.ndarray:
    """A known non-linear selection: extinction losses that saturate, a depth threshold below which
    targets drop out, and a seeing-depth interaction. Mean 1 over the footprint."""
    x = standardize(np.stack([templates[n] for n in NAMES3], axis=1), footprint)
    ebv, depth, seeing = x[:, 0], x[:, 1], x[:, 2]
    f = (1.0 - 0.12 * np.tanh(np.clip(ebv, 0, None))
         - 0.15 / (1.0 + np.exp(4.0 * (depth + 0.8)))
         + 0.03 * seeing * depth + 0.03 * seeing**2)
    return _normalise(np.clip(f, 0.05, None), footprint)


def _normalise(f, footprint):
    sel = footprint > 0
    out = np.ones_like(f)
    out[sel] = f[sel] / f[sel].mean()
    return out


SELECTIONS = {"none": None, "linear": linear_selection, "nonlinear": nonlinear_selection}
