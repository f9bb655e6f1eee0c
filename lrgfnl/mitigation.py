"""Linear selection weights: a Poisson regression of the counts on the imaging maps.

E[n_i] = fracgood_i * nbar * (c + x_i . a), x the standardised maps. The Poisson log-likelihood is
concave in (c, a), so Newton's method with step halving (keeping every rate positive) converges in a
few steps. The weight is 1 / F with F = c + x . a normalised to mean 1 on the footprint.
"""
from __future__ import annotations

import numpy as np


def linear_selection_fit(counts, fracgood, features, max_iter: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Selection function F (mean 1 on the footprint, 1 elsewhere) from a Poisson fit."""
    sel = fracgood > 0
    n, fg = counts[sel], fracgood[sel]
    x = np.column_stack([np.ones(sel.sum()), features[sel]])
    scale = n.sum() / fg.sum()
    expo = fg * scale

    def nll(beta):
        lin = x @ beta
        return np.inf if np.any(lin <= 0) else float(np.sum(expo * lin - n * np.log(lin)))

    beta = np.zeros(x.shape[1])
    beta[0] = 1.0
    value = nll(beta)
    for _ in range(max_iter):
        lin = x @ beta
        grad = x.T @ (expo - n / lin)
        hess = (x * (n / lin**2)[:, None]).T @ x
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(beta)), grad)
        t = 1.0
        while t > 1e-6:
            trial = nll(beta - t * step)
            if trial <= value:
                break
            t /= 2
        beta, old, value = beta - t * step, value, trial
        if abs(old - value) <= tol * (1 + abs(value)):
            break
    f = np.ones_like(fracgood, dtype=float)
    f[sel] = x @ beta
    f[sel] /= f[sel].mean()
    return f
