"""A mock campaign: theory once, mocks per f_NL, contamination, mitigation, pseudo-C_ell, and fits.

Every mock i uses the same random numbers for its density field in every case (clean, contaminated,
mitigated), so the cases differ only by what the case changes. The covariance of log C_ell and the
log-transform bias come from the clean f_NL = 0 mocks and are used for every case.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .cosmology import Cosmology, load_cosmology
from .estimator import Binning, measure, template_cross_spectra, density_contrast
from .footprint import desi_like_mask
from .likelihood import BinnedTheory, LogClLikelihood, log_statistics
from .mitigation import linear_selection_fit
from .mocks import SELECTIONS, density_field, gaussian_cl_for_lognormal, nbar_per_pixel, poisson_counts
from .network import NetworkSettings, nn_selection_fit
from .sphere import MaskWindow
from .templates import NAMES3, NAMES9, imaging_templates, standardize
from .theory import compute_parts


@dataclass(frozen=True)
class Case:
    name: str
    contamination: str = "none"     # none, linear, nonlinear
    mitigation: str = "none"        # none, linear, nn
    maps: int = 3                   # 3 or 9 imaging maps for the mitigation


DEFAULT_CASES = (
    Case("clean"),
    Case("lin-contaminated", "linear"),
    Case("lin-contaminated+linear3", "linear", "linear", 3),
    Case("lin-contaminated+nn3", "linear", "nn", 3),
    Case("nonlin-contaminated", "nonlinear"),
    Case("nonlin-contaminated+linear3", "nonlinear", "linear", 3),
    Case("nonlin-contaminated+linear9", "nonlinear", "linear", 9),
    Case("nonlin-contaminated+nn3", "nonlinear", "nn", 3),
    Case("nonlin-contaminated+nn9", "nonlinear", "nn", 9),
)


@dataclass
class CampaignSettings:
    nside: int = 64
    n_mocks: int = 100
    fnl_values: tuple = (0.0, 100.0)
    bias: float = 1.43
    kind: str = "lognormal"
    ell_min: int = 2
    ell_max: int | None = None       # default 2 * nside
    ell_exact: int = 50
    n_mcmc: int = 10                 # mocks per case that also get an emcee posterior
    mcmc_steps: int = 1500
    seed: int = 1
    template_seed: int = 7
    network: NetworkSettings = field(default_factory=NetworkSettings)


@dataclass
class Setup:
    settings: CampaignSettings
    cosmo: Cosmology
    mask: np.ndarray
    templates: dict
    features: dict                  # 3 or 9 -> standardised (npix, maps)
    selections: dict                # contamination name -> F map
    cl_parts: object
    window: MaskWindow
    binning: Binning
    theory: BinnedTheory
    nbar_pix: float
    lmax: int

    def cl_full(self, fnl):
        return self.cl_parts.cl(fnl, self.settings.bias)


def prepare(settings: CampaignSettings, cosmo: Cosmology | None = None, cache_dir=None) -> Setup:
    s = settings
    cosmo = cosmo or load_cosmology(cache_dir=cache_dir)
    lmax = 3 * s.nside - 1
    ell_max = s.ell_max or 2 * s.nside
    mask = desi_like_mask(s.nside)
    templates = imaging_templates(s.nside, seed=s.template_seed)
    features = {n: standardize(np.stack([templates[m] for m in names], axis=1), mask)
                for n, names in ((3, NAMES3), (9, NAMES9))}
    selections = {name: (np.ones_like(mask) if fn is None else fn(templates, mask))
                  for name, fn in SELECTIONS.items()}
    parts = compute_parts(cosmo, lmax, ell_exact=s.ell_exact)
    window = MaskWindow(mask, lmax)
    binning = Binning.paper(ell_max, ell_min=s.ell_min, lmax=lmax)
    theory = BinnedTheory.build(parts, window, binning)
    return Setup(s, cosmo, mask, templates, features, selections, parts, window, binning, theory,
                 nbar_per_pixel(s.nside), lmax)


def mock_density(setup: Setup, fnl: float, index: int, cl_gauss=None):
    rng = np.random.default_rng([setup.settings.seed, index, 0])
    return density_field(setup.cl_full(fnl), setup.settings.nside, rng, setup.settings.kind, cl_gauss)


def mock_counts(setup: Setup, delta, index: int, contamination: str):
    rng = np.random.default_rng([setup.settings.seed, index, 1])
    return poisson_counts(delta, setup.nbar_pix, setup.mask, setup.selections[contamination], rng)


def weights_for(setup: Setup, counts, case: Case):
    if case.mitigation == "none":
        return None
    x = setup.features[case.maps]
    if case.mitigation == "linear":
        return linear_selection_fit(counts, setup.mask, x)
    if case.mitigation == "nn":
        return nn_selection_fit(counts, setup.mask, x, setup.settings.network)
    raise ValueError(f"unknown mitigation {case.mitigation!r}")


def measure_cases(setup: Setup, fnl: float, cases, n_mocks: int, progress=None, cross_templates=False):
    """Binned C_ell, shot noise (and template cross-spectra) per case and mock."""
    s = setup.settings
    cg = gaussian_cl_for_lognormal(setup.cl_full(fnl)) if s.kind == "lognormal" else None
    out = {c.name: {"cl": [], "noise": [], "full": [], "cross": [], "selection_rms": []} for c in cases}
    for i in range(n_mocks):
        delta = mock_density(setup, fnl, i, cg)
        counts = {}
        for c in cases:
            if c.contamination not in counts:
                counts[c.contamination] = mock_counts(setup, delta, i, c.contamination)
            n = counts[c.contamination]
            f = weights_for(setup, n, c)
            m = measure(n, setup.mask, setup.lmax, s.nside, selection=f)
            rec = out[c.name]
            rec["cl"].append(setup.binning(m.cl))
            rec["full"].append(m.cl)
            rec["noise"].append(m.shot_noise)
            on = setup.mask > 0
            truth = setup.selections[c.contamination]
            est = np.ones_like(truth) if f is None else f
            rec["selection_rms"].append(float(np.sqrt(np.mean((est[on] - truth[on]) ** 2))))
            if cross_templates:
                d, _ = density_contrast(n, setup.mask, f)
                cross = template_cross_spectra(d, setup.templates, setup.mask, setup.lmax)
                rec["cross"].append({k: setup.binning(v) for k, v in cross.items()})
        if progress is not None:
            progress(1)
    for rec in out.values():
        for k in ("cl", "noise", "full"):
            rec[k] = np.asarray(rec[k])
    return out


def fit_mocks(setup: Setup, measured: dict, cov_log, log_bias, n_cov: int, n_mcmc: int, progress=None):
    """Maximum-likelihood f_NL of every mock, and emcee posteriors of the first n_mcmc."""
    from .sampling import run_emcee

    best, sigmas, posteriors = [], [], []
    for i, (cl, noise) in enumerate(zip(measured["cl"], measured["noise"])):
        like = LogClLikelihood(setup.theory, cl, noise, cov_log, n_cov, log_bias)
        theta, _ = like.max_likelihood()
        best.append(theta)
        if i < n_mcmc:
            post = run_emcee(like, theta, n_steps=setup.settings.mcmc_steps, seed=i)
            summ = post.summary()
            sigmas.append(summ["fnl"]["sigma68"])
            posteriors.append(summ)
        if progress is not None:
            progress(1)
    return np.asarray(best), np.asarray(sigmas), posteriors


def summarise(true_fnl, best, sigmas, clean_scatter=None):
    fnl = best[:, 0]
    scatter = float(np.std(fnl, ddof=1))
    unit = clean_scatter or scatter
    return {"true_fnl": float(true_fnl), "mean_fnl": float(np.mean(fnl)), "median_fnl": float(np.median(fnl)),
            "scatter": scatter, "mean_sigma": float(np.mean(sigmas)) if len(sigmas) else None,
            "n_mocks": int(len(fnl)), "n_mcmc": int(len(sigmas)), "mean_b": float(np.mean(best[:, 1])),
            "bias_over_clean_scatter": float((np.mean(fnl) - true_fnl) / unit)}


def settings_dict(settings: CampaignSettings) -> dict:
    d = asdict(settings)
    d["fnl_values"] = list(settings.fnl_values)
    return d
