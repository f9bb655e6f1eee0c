"""emcee over (f_NL, b, shot-noise offset) from the maximum-likelihood point, with summaries and a
convergence check (chain length against the integrated autocorrelation time)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

PARAM_NAMES = ("fnl", "b", "noise")


class ChainNotConvergedWarning(UserWarning):
    pass


@dataclass
class Posterior:
    samples: np.ndarray       # (n, 3) after burn-in and thinning
    start: np.ndarray
    tau: np.ndarray
    acceptance: float
    converged: bool

    def summary(self) -> dict:
        out = {}
        for i, name in enumerate(PARAM_NAMES):
            x = self.samples[:, i]
            q = np.percentile(x, [2.5, 16, 50, 84, 97.5])
            out[name] = {"mean": float(x.mean()), "std": float(x.std()), "median": float(q[2]),
                         "lo68": float(q[1]), "hi68": float(q[3]), "lo95": float(q[0]), "hi95": float(q[4]),
                         "sigma68": float((q[3] - q[1]) / 2)}
        return out


def run_emcee(likelihood, start, n_walkers: int = 32, n_steps: int = 1500, burn_fraction: float = 0.3,
              seed: int = 0, progress: bool = False, min_tau_multiple: float = 30.0) -> Posterior:
    import emcee

    rng = np.random.default_rng(seed)
    start = np.asarray(start, float)
    spread = np.array([2.0, 0.01, 0.05 * max(likelihood.shot_noise, 1e-12)])
    p0 = start + spread * rng.standard_normal((n_walkers, 3))
    lp0 = likelihood.log_prob(p0)
    for _ in range(100):  # pull any walker that starts outside the prior back towards the start
        bad = ~np.isfinite(lp0)
        if not bad.any():
            break
        p0[bad] = start + 0.1 * spread * rng.standard_normal((bad.sum(), 3))
        lp0 = likelihood.log_prob(p0)
    sampler = emcee.EnsembleSampler(n_walkers, 3, likelihood.log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(int(rng.integers(2**31))).get_state()
    sampler.run_mcmc(p0, n_steps, progress=progress)
    burn = int(burn_fraction * n_steps)
    tau = sampler.get_autocorr_time(discard=burn, quiet=True, tol=0)
    acc = float(np.mean(sampler.acceptance_fraction))
    converged = bool(np.all(np.isfinite(tau)) and (n_steps - burn) > min_tau_multiple * np.max(tau)
                     and acc > 0.05)
    if not converged:
        warnings.warn(ChainNotConvergedWarning(
            f"the chain has not converged: {n_steps - burn} steps after burn-in against an autocorrelation "
            f"time of {np.max(tau):.0f} (want > {min_tau_multiple:.0f} times), acceptance {acc:.2f}: "
            f"run more steps"), stacklevel=2)
    thin = max(1, int(np.nanmax(tau) / 2)) if np.all(np.isfinite(tau)) else 1
    samples = sampler.get_chain(discard=burn, thin=thin, flat=True)
    return Posterior(samples=samples, start=start, tau=tau, acceptance=acc, converged=converged)
