"""Binned, windowed theory and the Gaussian likelihood in log C_ell.

Window, integral constraint and binning are linear, so they are applied once to each of the six
parts of C_ell(f_NL, b); a model evaluation is then a weighted sum of six short vectors. The
likelihood is Gaussian in log C_ell with the covariance of the mocks' log C_ell (Hartlap-corrected)
and the mocks' log-transform bias <log C> - log <C> added to the model. A mitigated map's model is
multiplied by the mitigation's transfer (lrgfnl.transfer), calibrated on clean mocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from .errors import FnlInputError
from .estimator import Binning
from .sphere import MaskWindow
from .theory import PART_NAMES, ClParts
from .transfer import MitigationTransfer

# Priors of the paper: f_NL, b, shot-noise offset
PRIORS = {"fnl": (-1000.0, 1000.0), "b": (0.0, 5.0), "noise": (-1e-3, 1e-3)}


@dataclass
class BinnedTheory:
    parts: dict                 # name -> binned, windowed part (nbins,)
    binning: Binning
    p: float = 1.0

    @classmethod
    def build(cls, cl_parts: ClParts, window: MaskWindow, binning: Binning, pixel_window=None, p=1.0):
        lmax = window.lmax
        pw = np.ones(lmax + 1) if pixel_window is None else np.asarray(pixel_window)[: lmax + 1] ** 2
        parts = {}
        for name in PART_NAMES:
            full = np.zeros(lmax + 1)
            n = min(lmax + 1, len(cl_parts.parts[name]))
            full[:n] = cl_parts.parts[name][:n] * pw[:n]
            parts[name] = binning(window.apply(full))
        return cls(parts=parts, binning=binning, p=p)

    def __post_init__(self):
        self.matrix = np.stack([self.parts[n] for n in PART_NAMES])  # (6, nbins)

    def cl(self, fnl, b):
        """Binned windowed C_ell (no noise); fnl, b arrays of shape (n,) -> (n, nbins)."""
        fnl, b = np.atleast_1d(np.asarray(fnl, float)), np.atleast_1d(np.asarray(b, float))
        p = self.p  # same order as PART_NAMES: XX, YY, ZZ, XY, XZ, YZ
        coef = np.stack([b * b, (fnl * b) ** 2, (fnl * p) ** 2, 2 * fnl * b * b, -2 * fnl * b * p,
                         -2 * fnl * fnl * b * p], axis=1)
        return coef @ self.matrix


def log_statistics(binned_cls: np.ndarray):
    """(covariance of log C, log bias <log C> - log <C>) from mocks' binned C_ell (n_mocks, nbins)."""
    if np.any(binned_cls <= 0):
        raise FnlInputError("a mock has a non-positive binned C_ell: raise the density or the ell_min")
    logs = np.log(binned_cls)
    return np.cov(logs, rowvar=False), logs.mean(axis=0) - np.log(binned_cls.mean(axis=0))


def hartlap_factor(n_mocks: int, n_bins: int) -> float:
    if n_mocks <= n_bins + 2:
        raise FnlInputError(f"{n_mocks} mocks cannot give an invertible covariance of {n_bins} bins: "
                            f"use more than {n_bins + 2} mocks or fewer bins")
    return (n_mocks - n_bins - 2) / (n_mocks - 1)


@dataclass
class LogClLikelihood:
    theory: BinnedTheory
    data: np.ndarray            # binned pseudo-C_ell of the map (with its shot noise)
    shot_noise: float
    cov_log: np.ndarray
    n_mocks: int
    log_bias: np.ndarray
    priors: dict = field(default_factory=lambda: dict(PRIORS))
    transfer: MitigationTransfer | None = None

    def __post_init__(self):
        if np.any(~np.isfinite(self.data)) or np.any(self.data <= 0):
            raise FnlInputError("the measured C_ell has non-positive or non-finite bins: check the map and mask")
        self.icov = hartlap_factor(self.n_mocks, len(self.data)) * np.linalg.inv(self.cov_log)
        self.log_data = np.log(self.data)

    def log_prob(self, theta):
        """theta = (f_NL, b, noise offset), shape (3,) or (n, 3)."""
        theta = np.atleast_2d(theta)
        fnl, b, dn = theta[:, 0], theta[:, 1], theta[:, 2]
        ok = np.ones(len(theta), bool)
        for x, name in ((fnl, "fnl"), (b, "b"), (dn, "noise")):
            lo, hi = self.priors[name]
            ok &= (x > lo) & (x < hi)
        signal = self.theory.cl(fnl, b)
        if self.transfer is not None:
            signal = signal * self.transfer(fnl)
        model = signal + (self.shot_noise + dn)[:, None]
        ok &= np.all(model > 0, axis=1)
        r = np.log(np.where(model > 0, model, 1.0)) + self.log_bias - self.log_data
        lp = -0.5 * np.sum((r @ self.icov) * r, axis=1)
        return np.where(ok, lp, -np.inf)

    def max_likelihood(self, fnl_range=(-400.0, 600.0), b_range=(0.3, 4.0)):
        """Best (f_NL, b, noise offset): the best point of a coarse (f_NL, b) grid (the likelihood can
        have a second, negative-f_NL branch), refined by Nelder-Mead."""
        fg, bg = np.meshgrid(np.linspace(*fnl_range, 201), np.linspace(*b_range, 75))
        grid = np.column_stack([fg.ravel(), bg.ravel(), np.zeros(fg.size)])
        start = grid[np.argmax(self.log_prob(grid))]
        scale = np.array([100.0, 1.0, max(self.shot_noise, 1e-12)])

        def cost(u):
            lp = self.log_prob(u * scale)[0]
            return -lp if np.isfinite(lp) else 1e30

        res = optimize.minimize(cost, start / scale, method="Nelder-Mead",
                                options={"xatol": 1e-4, "fatol": 1e-4, "maxiter": 2000})
        return res.x * scale, -res.fun
