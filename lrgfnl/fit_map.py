"""Fit f_NL to a user's map: weights from the templates, pseudo-C_ell, a mock covariance made on the
user's own mask and density, the mitigation's transfer calibrated on mocks with the user's own
templates (lrgfnl.transfer; clean, or contaminated with the selection estimated from the map), maximum
likelihood and emcee."""
from __future__ import annotations

import numpy as np

from .campaign import (CampaignSettings, Case, calibrate_transfers, estimated_transfers, measure_cases,
                       prepare_for_mask)
from .estimator import measure
from .inputs import UserMaps
from .likelihood import LogClLikelihood, log_statistics
from .mitigation import linear_selection_fit
from .network import NetworkSettings, nn_selection_fit
from .templates import standardize


def fit_user_maps(maps: UserMaps, mitigation: str = "linear", n_cov: int = 100, bias_guess: float = 1.43,
                  ell_max: int | None = None, mcmc_steps: int = 3000, pixel_window: bool = True,
                  network: NetworkSettings = NetworkSettings(), cache_dir=None, progress: bool = True,
                  n_calibration: int = 20, calibration_contamination: str = "none"):
    """Returns (JSON-ready dict, posterior). n_calibration: calibration mocks per calibration f_NL for
    the mitigation's transfer (0: the model ignores the over-correction); calibration_contamination:
    "none" (clean calibration mocks) or "estimated" (contaminated with the selection function the
    mitigation estimated from the user's map)."""
    from tqdm import tqdm

    from .sampling import run_emcee

    names = list(maps.templates)
    features = standardize(np.stack([maps.templates[n] for n in names], axis=1), maps.mask) if names else None
    if mitigation != "none" and features is None:
        from .errors import FnlInputError

        raise FnlInputError("mitigation needs imaging templates: pass --templates or --mitigation none")
    if mitigation == "linear":
        selection = linear_selection_fit(maps.counts, maps.mask, features)
    elif mitigation == "nn":
        selection = nn_selection_fit(maps.counts, maps.mask, features, network)
    else:
        selection = None
    settings = CampaignSettings(nside=maps.nside, bias=bias_guess, ell_max=ell_max, network=network,
                                n_calibration=n_calibration)
    setup = prepare_for_mask(settings, maps.mask, cache_dir=cache_dir, pixel_window=pixel_window,
                             nbar_pix=float(maps.counts[maps.mask > 0].sum() / maps.mask.sum()))
    transfer = None
    if selection is not None and n_calibration:
        setup.features = {len(names): features}   # the calibration mocks are weighted with the user's maps
        case = Case("fit", "none", mitigation, len(names))
        if calibration_contamination == "estimated":
            transfer = estimated_transfers(setup, case, [selection[maps.mask > 0]], n_calibration)[0]
        else:
            transfer = calibrate_transfers(setup, [case])[("none", mitigation, len(names))]
    data = measure(maps.counts, maps.mask, setup.binning.lmax, maps.nside, selection=selection)
    bar = tqdm(total=n_cov, desc="covariance mocks", disable=not progress)
    cov_meas = measure_cases(setup, 0.0, [Case("clean")], n_cov, progress=bar.update)["clean"]
    bar.close()
    cov_log, log_bias = log_statistics(cov_meas["cl"])
    like = LogClLikelihood(setup.theory, setup.binning(data.cl), data.shot_noise, cov_log, n_cov, log_bias,
                           transfer=transfer)
    theta, best_lp = like.max_likelihood()
    post = run_emcee(like, theta, n_steps=mcmc_steps, progress=progress)
    out = {"nside": maps.nside, "mitigation": mitigation, "templates": names, "n_cov_mocks": n_cov,
           "ell_edges": setup.binning.edges.tolist(), "pixel_window": pixel_window,
           "max_likelihood": {"fnl": float(theta[0]), "b": float(theta[1]), "noise": float(theta[2]),
                              "log_like": float(best_lp)},
           "posterior": post.summary(), "converged": post.converged,
           "autocorr_time": [float(t) for t in post.tau], "acceptance": post.acceptance,
           "cl_binned": setup.binning(data.cl).tolist(), "shot_noise": data.shot_noise,
           "f_sky": float(maps.mask.mean()), "transfer": None if transfer is None else transfer.to_dict(),
           "calibration_contamination": calibration_contamination}
    return out, post
