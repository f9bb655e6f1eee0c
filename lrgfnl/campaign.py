"""A mock campaign: theory once, mocks per f_NL, contamination, mitigation, pseudo-C_ell, and fits.

Every mock i uses the same random numbers for its density field in every case (clean, contaminated,
mitigated), so the cases differ only by what the case changes. The covariance of log C_ell and the
log-transform bias come from the clean f_NL = 0 mocks and are used for every case. With
n_calibration > 0, each mitigation is also run on that many calibration mocks (their own seeds) at
each calibration f_NL, and its transfer (lrgfnl.transfer) multiplies the model of the mitigated cases.
The calibration mocks are clean ("none"), contaminated with the true selection function of the case
("same": a diagnosis, a real analysis cannot do it), or, for every mock, contaminated with the
selection function that the mitigation estimated from that mock ("estimated": what a real analysis
can do with its one data map, see estimated_transfers).
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
from .threads import one_thread
from .transfer import MitigationTransfer


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
    n_calibration: int = 0           # mocks per calibration f_NL for each mitigation's transfer
    calibration_fnl: tuple = (0.0, 100.0)
    calibration_contamination: str = "none"   # "none", "same" or "estimated" (module docstring)
    n_calibration_per_mock: int = 8  # "estimated": calibration mocks per f_NL for each mock's own estimate

    def __post_init__(self):
        if self.calibration_contamination not in ("none", "same", "estimated"):
            raise ValueError(f"calibration_contamination {self.calibration_contamination!r}: use 'none', "
                             f"'same' or 'estimated'")


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
    """Everything a campaign computes once, on the DESI-like footprint."""
    return prepare_for_mask(settings, desi_like_mask(settings.nside), cosmo, cache_dir)


def prepare_for_mask(settings: CampaignSettings, mask, cosmo: Cosmology | None = None, cache_dir=None,
                     pixel_window: bool = False, nbar_pix: float | None = None) -> Setup:
    """As `prepare` on a given mask; pixel_window multiplies the theory by the HEALPix pixel window
    (for real galaxies counted in pixels; mocks sample the field at pixel centres and need none)."""
    import healpy as hp

    s = settings
    cosmo = cosmo or load_cosmology(cache_dir=cache_dir)
    lmax = 3 * s.nside - 1
    ell_max = s.ell_max or 2 * s.nside
    templates = imaging_templates(s.nside, seed=s.template_seed)
    features = {n: standardize(np.stack([templates[m] for m in names], axis=1), mask)
                for n, names in ((3, NAMES3), (9, NAMES9))}
    selections = {name: (np.ones_like(mask) if fn is None else fn(templates, mask))
                  for name, fn in SELECTIONS.items()}
    parts = compute_parts(cosmo, lmax, ell_exact=s.ell_exact)
    window = MaskWindow(mask, lmax)
    binning = Binning.paper(min(ell_max, lmax), ell_min=s.ell_min)
    pw = hp.pixwin(s.nside, lmax=lmax) if pixel_window else None
    theory = BinnedTheory.build(parts, window, binning, pixel_window=pw)
    return Setup(s, cosmo, mask, templates, features, selections, parts, window, binning, theory,
                 nbar_pix if nbar_pix is not None else nbar_per_pixel(s.nside), lmax)


def mock_density(setup: Setup, fnl: float, index: int, cl_gauss=None):
    rng = np.random.default_rng([setup.settings.seed, index, 0])
    return density_field(setup.cl_full(fnl), setup.settings.nside, rng, setup.settings.kind, cl_gauss)


def mock_counts(setup: Setup, delta, index: int, contamination: str):
    return counts_with_selection(setup, delta, index, setup.selections[contamination])


def counts_with_selection(setup: Setup, delta, index: int, selection):
    """Poisson counts of mock `index` under a given selection map (the same random numbers for any map)."""
    rng = np.random.default_rng([setup.settings.seed, index, 1])
    return poisson_counts(delta, setup.nbar_pix, setup.mask, selection, rng)


def weights_for(setup: Setup, counts, case: Case):
    if case.mitigation == "none":
        return None
    x = setup.features[case.maps]
    if case.mitigation == "linear":
        return linear_selection_fit(counts, setup.mask, x)
    if case.mitigation == "nn":
        return nn_selection_fit(counts, setup.mask, x, setup.settings.network)
    raise ValueError(f"unknown mitigation {case.mitigation!r}")


def gaussian_cl(setup: Setup, fnl: float):
    """The Gaussian field's C_ell of log-normal mocks at f_NL (None for Gaussian mocks)."""
    return gaussian_cl_for_lognormal(setup.cl_full(fnl)) if setup.settings.kind == "lognormal" else None


def measure_cases(setup: Setup, fnl: float, cases, n_mocks: int, progress=None, n_cross: int = 0,
                  first_index: int = 0, keep_selection: bool = False):
    """Binned C_ell, shot noise (and, for the first n_cross mocks, template cross-spectra) per case;
    keep_selection: also each mitigated mock's estimated selection on the footprint ("selection")."""
    cg = gaussian_cl(setup, fnl)
    out = {c.name: {"cl": [], "noise": [], "full": [], "cross": [], "selection_rms": [], "selection": []}
           for c in cases}
    with one_thread():
        for i in range(first_index, first_index + n_mocks):
            _measure_one(setup, fnl, cases, i, cg, out, i - first_index < n_cross, keep_selection)
            if progress is not None:
                progress(1)
    for rec in out.values():
        for k in ("cl", "noise", "full"):
            rec[k] = np.asarray(rec[k])
    return out


def _measure_one(setup: Setup, fnl, cases, i, cg, out, cross_templates, keep_selection):
    """Mock i: one density field, counts per contamination, weights and pseudo-C_ell per case."""
    s = setup.settings
    delta = mock_density(setup, fnl, i, cg)
    counts = {}
    for c in cases:
        if c.contamination not in counts:
            counts[c.contamination] = mock_counts(setup, delta, i, c.contamination)
        n = counts[c.contamination]
        f = weights_for(setup, n, c)
        m = measure(n, setup.mask, setup.binning.lmax, s.nside, selection=f)
        rec = out[c.name]
        rec["cl"].append(setup.binning(m.cl))
        rec["full"].append(m.cl)
        rec["noise"].append(m.shot_noise)
        on = setup.mask > 0
        truth = setup.selections[c.contamination]
        est = np.ones_like(truth) if f is None else f
        rec["selection_rms"].append(float(np.sqrt(np.mean((est[on] - truth[on]) ** 2))))
        if keep_selection and f is not None:
            rec["selection"].append(f[on].astype(np.float32))
        if cross_templates:
            d, _ = density_contrast(n, setup.mask, f)
            cross = template_cross_spectra(d, setup.templates, setup.mask, setup.binning.lmax)
            rec["cross"].append({k: setup.binning(v) for k, v in cross.items()})


def signal(measured: dict) -> np.ndarray:
    """Binned pseudo-C_ell minus each mock's shot noise: (n_mocks, nbins)."""
    return measured["cl"] - measured["noise"][:, None]


CALIBRATION_FIRST_INDEX = 300_000    # the calibration mocks' seeds: apart from every case's mocks


def signal_of(setup: Setup, counts, selection) -> np.ndarray:
    """Binned pseudo-C_ell minus shot noise of one map weighted by 1 / selection."""
    m = measure(counts, setup.mask, setup.binning.lmax, setup.settings.nside, selection=selection)
    return setup.binning(m.cl) - m.shot_noise


def transfer_key(settings: CampaignSettings, case: Case) -> tuple:
    """(contamination of the calibration mocks, mitigation, maps) of a mitigated case; with "estimated"
    calibration, the key of the clean calibration it is compared with."""
    same = settings.calibration_contamination == "same"
    return (case.contamination if same else "none", case.mitigation, case.maps)


def calibrate_transfers(setup: Setup, cases, progress=None) -> dict:
    """transfer_key -> MitigationTransfer: every mitigation of `cases` run on the same calibration
    mocks (clean, or contaminated as the case is) at each calibration f_NL, against those mocks
    clean and unweighted."""
    s = setup.settings
    keys = sorted({transfer_key(s, c) for c in cases if c.mitigation != "none"})
    calib = [Case("clean")] + [Case(f"{cont}+{m}{k}", cont, m, k) for cont, m, k in keys]
    sig = {c.name: [] for c in calib}
    for fnl in s.calibration_fnl:
        meas = measure_cases(setup, fnl, calib, s.n_calibration, progress, first_index=CALIBRATION_FIRST_INDEX)
        for c in calib:
            sig[c.name].append(signal(meas[c.name]))
    return {(cont, m, k): MitigationTransfer.from_signals(s.calibration_fnl, sig["clean"], sig[f"{cont}+{m}{k}"])
            for cont, m, k in keys}


def estimated_transfers(setup: Setup, case: Case, selections, n_mocks: int, progress=None) -> list:
    """One MitigationTransfer per estimated selection function (footprint values, as the case's
    mitigation estimated them from a data map): n_mocks calibration mocks per calibration f_NL,
    contaminated with that estimate, weighted by the same mitigation, against the same mocks clean and
    unweighted. This is what an analysis of real data can do: it never uses the true selection. The
    calibration density fields and Poisson draws are the same for every estimate."""
    s = setup.settings
    on = setup.mask > 0
    fields, clean = [], []
    with one_thread():
        for fnl in s.calibration_fnl:
            cg = gaussian_cl(setup, fnl)
            idx = range(CALIBRATION_FIRST_INDEX, CALIBRATION_FIRST_INDEX + n_mocks)
            fields.append([(i, mock_density(setup, fnl, i, cg)) for i in idx])
            clean.append(np.array([signal_of(setup, mock_counts(setup, d, i, "none"), None) for i, d in fields[-1]]))
        out = []
        for est in selections:
            sel = np.ones_like(setup.mask, dtype=float)
            sel[on] = est
            mitigated = []
            for mocks in fields:
                sig = []
                for i, d in mocks:
                    n = counts_with_selection(setup, d, i, sel)
                    sig.append(signal_of(setup, n, weights_for(setup, n, case)))
                    if progress is not None:
                        progress(1)
                mitigated.append(np.array(sig))
            out.append(MitigationTransfer.from_signals(s.calibration_fnl, clean, mitigated))
    return out


def fit_mocks(setup: Setup, measured: dict, cov_log, log_bias, n_cov: int, n_mcmc: int, progress=None,
              transfer=None):
    """Maximum-likelihood f_NL of every mock, and emcee posteriors of the first n_mcmc; transfer: one
    MitigationTransfer for all mocks, or a list with one per mock."""
    best, sigmas, posteriors = [], [], []
    per_mock = transfer if isinstance(transfer, list) else [transfer] * len(measured["cl"])
    with one_thread():
        for i, (cl, noise) in enumerate(zip(measured["cl"], measured["noise"])):
            _fit_one(setup, cl, noise, cov_log, log_bias, n_cov, i < n_mcmc, i, best, sigmas, posteriors,
                     per_mock[i])
            if progress is not None:
                progress(1)
    return np.asarray(best), np.asarray(sigmas), posteriors


def _fit_one(setup, cl, noise, cov_log, log_bias, n_cov, with_mcmc, i, best, sigmas, posteriors, transfer):
    from .sampling import run_emcee

    like = LogClLikelihood(setup.theory, cl, noise, cov_log, n_cov, log_bias, transfer=transfer)
    theta, _ = like.max_likelihood()
    best.append(theta)
    if with_mcmc:
        post = run_emcee(like, theta, n_steps=setup.settings.mcmc_steps, seed=i)
        sigmas.append(post.summary()["fnl"]["sigma68"])
        posteriors.append(post)


def summarise(true_fnl, best, sigmas, clean_scatter=None):
    fnl = best[:, 0]
    scatter = float(np.std(fnl, ddof=1))
    unit = clean_scatter or scatter
    return {"true_fnl": float(true_fnl), "mean_fnl": float(np.mean(fnl)), "median_fnl": float(np.median(fnl)),
            "scatter": scatter, "mean_sigma": float(np.mean(sigmas)) if len(sigmas) else None,
            "n_mocks": int(len(fnl)), "n_mcmc": int(len(sigmas)), "mean_b": float(np.mean(best[:, 1])),
            "bias_over_clean_scatter": float((np.mean(fnl) - true_fnl) / unit)}


def _mean_transfer(transfers: list) -> dict:
    """The mean and spread over mocks of their own transfers (estimated calibration)."""
    ratios = np.array([t.ratio for t in transfers])
    return {"fnl_nodes": transfers[0].fnl_nodes.tolist(), "ratio": ratios.mean(axis=0).tolist(),
            "ratio_std": ratios.std(axis=0, ddof=1).tolist() if len(ratios) > 1 else None,
            "n_mocks": transfers[0].n_mocks, "n_estimates": len(transfers)}


def settings_dict(settings: CampaignSettings) -> dict:
    d = asdict(settings)
    d["fnl_values"] = list(settings.fnl_values)
    d["calibration_fnl"] = list(settings.calibration_fnl)
    return d


def null_test_chi2(cross_case: list, cross_clean: list) -> float:
    """Reduced chi^2 of the mean template cross-spectra of a case against zero, with the scatter of
    the clean mocks' cross-spectra: about 1 when no systematic is left, far above when one is."""
    names = list(cross_clean[0])
    case = np.array([[c[n] for n in names] for c in cross_case])     # (mocks, templates, bins)
    clean = np.array([[c[n] for n in names] for c in cross_clean])
    var = clean.var(axis=0, ddof=1) / len(case)
    return float(np.mean(case.mean(axis=0) ** 2 / var))


def run_campaign(settings: CampaignSettings, cases=DEFAULT_CASES, n_cov: int = 200, n_cross: int = 10,
                 cache_dir=None, progress: bool = True, keep=False) -> dict:
    """The whole campaign; returns a JSON-ready dict (and, with keep=True, arrays for plots under
    the key "_arrays")."""
    from tqdm import tqdm

    s = settings
    setup = prepare(s, cache_dir=cache_dir)
    n_extra = n_cov * sum(1 for f in s.fnl_values if f != 0.0)
    n_mitigated = sum(1 for c in cases if c.mitigation != "none") if s.n_calibration else 0
    n_calib = len(s.calibration_fnl) * s.n_calibration if n_mitigated else 0
    estimated = s.calibration_contamination == "estimated" and n_calib > 0
    n_per_mock = (1 + len(s.calibration_fnl) * s.n_calibration_per_mock) if estimated else 0
    bar = tqdm(total=n_cov + n_extra + n_calib + len(s.fnl_values) * s.n_mocks * (
               1 + len(cases) + n_mitigated * (1 + n_per_mock)), disable=not progress, desc="mocks and fits",
               unit="step")
    cov_meas = measure_cases(setup, 0.0, [Case("clean")], n_cov, progress=bar.update,
                             first_index=100_000)["clean"]
    cov_log, log_bias = log_statistics(cov_meas["cl"])
    transfers = calibrate_transfers(setup, cases, bar.update) if n_calib else {}
    result = {"settings": settings_dict(s), "n_cov_mocks": n_cov, "n_bins": int(len(setup.binning.edges) - 1),
              "ell_edges": setup.binning.edges.tolist(), "cases": [], "theory": {},
              "transfers": {f"{m}{k}" + ("" if cont == "none" else f" on {cont}"): t.to_dict()
                            for (cont, m, k), t in transfers.items()}}
    arrays = {"ell": setup.binning.centres, "theory": {}, "mean_cl": {}, "err_cl": {}, "cross": {},
              "posterior": {}}
    devs = {}
    for fnl in s.fnl_values:
        meas = measure_cases(setup, fnl, cases, s.n_mocks, progress=bar.update, n_cross=n_cross,
                             keep_selection=estimated)
        theory = setup.theory.cl(fnl, s.bias)[0]
        # the theory check uses n_cov clean mocks at every f_NL (cheap: no weights, no fits)
        clean = cov_meas if fnl == 0.0 else measure_cases(setup, fnl, [Case("clean")], n_cov, bar.update,
                                                          first_index=200_000)["clean"]
        sig = signal(clean)
        dev = sig.mean(axis=0) / theory - 1.0
        devs[fnl] = dev
        result["theory"][f"fnl={fnl:g}"] = {"windowed_binned": theory.tolist(), "mock_mean_rel_dev": dev.tolist(),
                                            "mock_mean_rel_se": (sig.std(axis=0, ddof=1) / np.sqrt(len(sig))
                                                                 / theory).tolist(),
                                            "n_mocks": int(len(sig))}
        arrays["theory"][fnl] = theory
        clean_scatter = None
        for c in cases:
            m = meas[c.name]
            transfer = transfers.get(transfer_key(s, c))
            if estimated and transfer is not None:   # each mock calibrated on its own estimated selection
                own = estimated_transfers(setup, c, m["selection"], s.n_calibration_per_mock, bar.update)
                result["transfers"][f"{c.mitigation}{c.maps} on its estimate, {c.name} fnl={fnl:g}"] = \
                    _mean_transfer(own)
                compared, transfer = transfer, own
            best, sigmas, posts = fit_mocks(setup, m, cov_log, log_bias, n_cov, s.n_mcmc,
                                            progress=bar.update, transfer=transfer)
            row = summarise(fnl, best, sigmas, clean_scatter)
            if transfer is not None:  # the same mocks fitted without the calibration, for comparison
                raw, _, _ = fit_mocks(setup, m, cov_log, log_bias, n_cov, 0, progress=bar.update)
                row["uncalibrated"] = summarise(fnl, raw, [], clean_scatter)
            if estimated and transfer is not None:  # and with the clean calibration
                cal, _, _ = fit_mocks(setup, m, cov_log, log_bias, n_cov, 0, transfer=compared)
                row["clean_calibration"] = summarise(fnl, cal, [], clean_scatter)
            if c.name == "clean":
                clean_scatter = row["scatter"]
                row["bias_over_clean_scatter"] = float((row["mean_fnl"] - fnl) / clean_scatter)
            row.update(label=f"{c.name} fnl={fnl:g}", case=c.name, contamination=c.contamination,
                       mitigation=c.mitigation, maps=c.maps,
                       selection_rms=float(np.mean(m["selection_rms"])),
                       converged_fraction=float(np.mean([p.converged for p in posts])) if posts else None)
            if n_cross and m["cross"]:
                row["null_test_chi2"] = null_test_chi2(m["cross"], meas["clean"]["cross"])
                arrays["cross"][(fnl, c.name)] = {k: np.mean([x[k] for x in m["cross"]], axis=0)
                                                   for k in m["cross"][0]}
            result["cases"].append(row)
            arrays["mean_cl"][(fnl, c.name)] = signal(m).mean(axis=0)
            arrays["err_cl"][(fnl, c.name)] = signal(m).std(axis=0) / np.sqrt(len(m["cl"]))
            if posts:
                arrays["posterior"][(fnl, c.name)] = posts[0].samples
    bar.close()
    result["theory_max_rel_dev"] = float(max(np.max(np.abs(d)) for d in devs.values()))
    if keep:
        result["_arrays"] = arrays
    return result
