"""Linear matter power, transfer function and growth from CAMB, for one flat LCDM cosmology.

Conventions (see docs/fnl.md):
  * k in h/Mpc, distances in Mpc/h, P(k) in (Mpc/h)^3 at z = 0, normalised to sigma8.
  * T(k) is CAMB's total-matter transfer function divided by its k -> 0 limit.
  * D(z) is the linear growth factor normalised to D(0) = 1 (the "LSS" convention).
    `growth_md_norm` is D(z=0) when D is instead normalised to a = 1/(1+z) deep in matter
    domination (the "CMB" convention); f_NL(CMB) = growth_md_norm * f_NL(LSS).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import integrate

C_KM_S = 299792.458
DELTA_C = 1.686


@dataclass(frozen=True)
class CosmoParams:
    """The fiducial of Rezaie et al. (arXiv:2307.01753): h, Omega_b, Omega_cdm, m_nu, sigma8, n_s."""
    h: float = 0.6756
    omega_b: float = 0.0483
    omega_cdm: float = 0.2638
    m_nu: float = 0.06
    sigma8: float = 0.8225
    n_s: float = 0.9667


@dataclass
class Cosmology:
    params: CosmoParams
    k: np.ndarray            # h/Mpc, log-spaced
    pk0: np.ndarray          # linear P(k, z=0), (Mpc/h)^3
    transfer: np.ndarray     # T(k), -> 1 as k -> 0
    z: np.ndarray            # table for chi, H, D
    chi: np.ndarray          # comoving distance, Mpc/h
    hubble: np.ndarray       # H(z)/c in h/Mpc
    growth: np.ndarray       # D(z), D(0) = 1
    omega_m: float
    growth_md_norm: float

    def interp(self, name: str, z):
        return np.interp(z, self.z, getattr(self, name))

    def pk(self, k):
        """P(k, z=0) by log-log interpolation, power-law extrapolation outside the table."""
        return np.exp(np.interp(np.log(k), np.log(self.k), np.log(self.pk0)))

    def transfer_at(self, k):
        return np.exp(np.interp(np.log(k), np.log(self.k), np.log(self.transfer)))

    def fnl_kernel(self, k):
        """beta(k) = 3 delta_c Omega_m (H0/c)^2 / (k^2 T(k)): Delta b = f_NL (b - p) beta / D(z)."""
        h0_over_c = 100.0 / C_KM_S  # h/Mpc
        return 3.0 * DELTA_C * self.omega_m * h0_over_c**2 / (k**2 * self.transfer_at(k))


def lcdm_growth(z, omega_m):
    """Growth D(z) of flat matter + Lambda, normalised to a deep in matter domination.

    D(a) = 5/2 Omega_m E(a) int_0^a da' / (a' E(a'))^3, the exact growing mode when w = -1.
    """
    z = np.atleast_1d(np.asarray(z, float))
    e = lambda a: np.sqrt(omega_m / a**3 + 1.0 - omega_m)
    out = []
    for zi in z:
        a = 1.0 / (1.0 + zi)
        val, _ = integrate.quad(lambda x: 1.0 / (x * e(x)) ** 3, 0.0, a, limit=200)
        out.append(2.5 * omega_m * e(a) * val)
    return np.array(out)


def _run_camb(p: CosmoParams, kmin: float, kmax: float, nk: int, zmax: float):
    import camb

    pars = camb.set_params(H0=100 * p.h, ombh2=p.omega_b * p.h**2, omch2=p.omega_cdm * p.h**2,
                           mnu=p.m_nu, ns=p.n_s, As=2.1e-9, WantTransfer=True)
    pars.set_matter_power(redshifts=[0.0], kmax=max(2.0, kmax * p.h * 1.2), nonlinear=False)
    res = camb.get_results(pars)
    k, _, pk = res.get_matter_power_spectrum(minkh=kmin, maxkh=kmax, npoints=nk)
    pk = pk[0] * (p.sigma8 / res.get_sigma8_0()) ** 2
    tr = res.get_matter_transfer_data()
    kt = tr.transfer_data[0, :, -1]   # k/h
    tt = tr.transfer_data[camb.model.Transfer_tot - 1, :, -1]
    order = np.argsort(kt)
    transfer = np.interp(np.log(k), np.log(kt[order]), tt[order]) / tt[order][0]
    z = np.linspace(0.0, zmax, 400)
    chi = res.comoving_radial_distance(z) * p.h
    hubble = res.hubble_parameter(z) / C_KM_S / p.h
    omega_m = (pars.ombh2 + pars.omch2 + pars.omnuh2) / p.h**2
    return k, pk, transfer, z, chi, hubble, omega_m


def load_cosmology(params: CosmoParams | None = None, cache_dir: str | Path | None = None,
                   kmin: float = 1e-5, kmax: float = 3.0, nk: int = 800, zmax: float = 3.0) -> Cosmology:
    """Runs CAMB once (a few seconds); with cache_dir the tables are kept in an .npz keyed by the settings."""
    params = params or CosmoParams()
    settings = dict(asdict(params), kmin=kmin, kmax=kmax, nk=nk, zmax=zmax)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"camb-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        d = np.load(path)
        k, pk, transfer, z, chi, hubble = (d[n] for n in ("k", "pk", "transfer", "z", "chi", "hubble"))
        omega_m = float(d["omega_m"])
    else:
        k, pk, transfer, z, chi, hubble, omega_m = _run_camb(params, kmin, kmax, nk, zmax)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, k=k, pk=pk, transfer=transfer, z=z, chi=chi, hubble=hubble, omega_m=omega_m)
            tmp.replace(path)
    d_md = lcdm_growth(z, omega_m)
    return Cosmology(params=params, k=k, pk0=pk, transfer=transfer, z=z, chi=chi, hubble=hubble,
                     growth=d_md / d_md[0], omega_m=omega_m, growth_md_norm=float(d_md[0]))
