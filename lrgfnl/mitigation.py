"""Linear selection weights: a Poisson regression of the counts on the imaging maps.

E[n_i] = fracgood_i * exp(a0) * (1 + x_i . a), x the standardised maps; the weight is 1 / F with
F = 1 + x . a normalised to mean 1 on the footprint.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize


def linear_selection_fit(counts, fracgood, features) -> np.ndarray:
    """Selection function F (mean 1 on the footprint, 1 elsewhere) from a Poisson fit."""
    sel = fracgood > 0
    n, fg, x = counts[sel], fracgood[sel], features[sel]
    scale = n.sum() / fg.sum()

    n_log_n = np.where(n > 0, n * np.log(np.where(n > 0, n, 1.0)), 0.0)

    def nll(theta):
        # Poisson deviance / 2 (zero for a perfect fit), so the optimiser's relative tolerance bites;
        # a selection that goes negative is penalised smoothly rather than refused
        lin = np.maximum(1.0 + x @ theta[1:], 1e-3)
        lam = fg * scale * np.exp(theta[0]) * lin
        value = np.sum(lam - n - n * np.log(lam) + n_log_n) / len(n)
        r = (lam - n) / len(n)
        grad = np.concatenate([[r.sum()], x.T @ (r / lin)])
        return value, grad

    res = optimize.minimize(nll, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    f = np.ones_like(fracgood, dtype=float)
    f[sel] = 1.0 + x @ res.x[1:]
    f[sel] /= f[sel].mean()
    return f
