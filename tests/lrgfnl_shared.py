"""Shared, computed-once state for the lrgfnl tests (imported by test_lrgfnl_*.py): CAMB runs once per
test session (its tables go to a session folder that the command-line tests reuse), the exact theory
integrals once per process (lrgfnl.theory), and the nside-64 mock sets and their fits are made once."""
import atexit
import functools
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("healpy")
pytest.importorskip("camb")

from lrgfnl.campaign import CampaignSettings, Case, measure_cases, prepare  # noqa: E402
from lrgfnl.cosmology import load_cosmology  # noqa: E402
from lrgfnl.likelihood import log_statistics  # noqa: E402
from lrgfnl.network import NetworkSettings  # noqa: E402

NSIDE = 64
N_MOCKS = 100        # f_NL = 0: clean, linearly contaminated, and linear weights on those
N_MOCKS_FNL100 = 50
N_MOCKS_NN = 6       # non-linearly contaminated mocks with linear and network weights (paired with clean ones)
CASES0 = (Case("clean"), Case("lin-contaminated", "linear"), Case("lin-contaminated+linear3", "linear", "linear", 3))
CASES_NN = (Case("nonlin", "nonlinear"), Case("nonlin+linear3", "nonlinear", "linear", 3),
            Case("nonlin+nn3", "nonlinear", "nn", 3))
# a small network that still learns the non-linear selection at nside 64 (6 epochs do not: f_NL stays
# biased by about 1 sigma)
FAST_NN = NetworkSettings(hidden=(20, 20), n_folds=5, n_chains=2, epochs=15, lr=0.05, batch_size=1024)


@functools.cache
def camb_cache_dir() -> str:
    path = tempfile.mkdtemp(prefix="lrgfnl-camb-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def cosmology():
    return load_cosmology(cache_dir=camb_cache_dir())


@functools.cache
def setup64():
    s = CampaignSettings(nside=NSIDE, n_mcmc=0, mcmc_steps=2000, network=FAST_NN,  # ell 2..129, 19 bins
                         n_calibration=20)
    return prepare(s, cosmo=cosmology())


@functools.cache
def mocks(fnl: float):
    cases = CASES0 if fnl == 0.0 else CASES0[:1]
    return measure_cases(setup64(), fnl, cases, N_MOCKS if fnl == 0.0 else N_MOCKS_FNL100)


@functools.cache
def nonlinear_mocks():
    """The first N_MOCKS_NN f_NL = 0 density fields, non-linearly contaminated, with and without weights."""
    return measure_cases(setup64(), 0.0, CASES_NN, N_MOCKS_NN)


@functools.cache
def covariance():
    """(cov of log C, log bias, number of mocks) from the clean f_NL = 0 mocks."""
    cov, bias = log_statistics(mocks(0.0)["clean"]["cl"])
    return cov, bias, N_MOCKS


@functools.cache
def clean_fits(fnl: float) -> np.ndarray:
    """Maximum-likelihood (f_NL, b, noise) of every clean mock."""
    return ml_fnl(mocks(fnl)["clean"])


def ml_fnl(measured, transfer=None) -> np.ndarray:
    from lrgfnl.likelihood import LogClLikelihood

    cov, bias, n = covariance()
    out = []
    for cl, noise in zip(measured["cl"], measured["noise"]):
        like = LogClLikelihood(setup64().theory, cl, noise, cov, n, bias, transfer=transfer)
        out.append(like.max_likelihood()[0])
    return np.asarray(out)
