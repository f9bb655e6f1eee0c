"""Legendre transforms on Gauss-Legendre nodes, the mask window and the integral constraint.

Pseudo-C_ell of a field times a mask W, divided by mean(W), has the expectation
  C~_l = 2 pi int xi(theta) xi_W(theta) P_l(cos theta) dcos(theta) / mean(W),
with xi_W the correlation of the mask; this is exact for band-limited spectra and needs no
coupling matrix. The integral constraint (density contrast measured against the footprint's own
mean) is C~_l - C~_0 C^W_l / C^W_0.
"""
from __future__ import annotations

import numpy as np


def legendre_table(lmax: int, mu: np.ndarray) -> np.ndarray:
    """P_l(mu) for l = 0..lmax by the three-term recurrence; shape (lmax+1, len(mu))."""
    p = np.empty((lmax + 1, len(mu)))
    p[0] = 1.0
    if lmax >= 1:
        p[1] = mu
    for ell in range(2, lmax + 1):
        p[ell] = ((2 * ell - 1) * mu * p[ell - 1] - (ell - 1) * p[ell - 2]) / ell
    return p


class Legendre:
    """cl <-> xi for l = 0..lmax, exact for products of band-limited spectra up to 2*lmax."""

    def __init__(self, lmax: int, n_nodes: int | None = None):
        self.lmax = lmax
        n = n_nodes or (3 * lmax // 2 + 2)
        self.mu, self.w = np.polynomial.legendre.leggauss(n)
        self.table = legendre_table(lmax, self.mu)
        self.ell = np.arange(lmax + 1)

    def cl_to_xi(self, cl):
        cl = np.asarray(cl)
        c = np.zeros(self.lmax + 1)
        c[:min(len(cl), self.lmax + 1)] = cl[:self.lmax + 1]
        return ((2 * self.ell + 1) / (4 * np.pi) * c) @ self.table

    def xi_to_cl(self, xi):
        return 2 * np.pi * (self.table @ (self.w * xi))


class MaskWindow:
    """The window of one mask: maps a full-sky C_ell to the expected pseudo-C_ell of the estimator."""

    def __init__(self, mask: np.ndarray, lmax: int):
        import healpy as hp

        mask = np.asarray(mask, float)
        self.lmax = lmax
        self.mean = float(mask.mean())
        self.cl_mask = hp.anafast(mask, lmax=lmax, iter=0)
        self.legendre = Legendre(lmax, n_nodes=2 * lmax + 2)
        self.xi_mask = self.legendre.cl_to_xi(self.cl_mask)

    def apply(self, cl: np.ndarray, integral_constraint: bool = True) -> np.ndarray:
        xi = self.legendre.cl_to_xi(cl)
        out = self.legendre.xi_to_cl(xi * self.xi_mask) / self.mean
        if integral_constraint:
            out = out - out[0] * self.cl_mask / self.cl_mask[0]
        return out
