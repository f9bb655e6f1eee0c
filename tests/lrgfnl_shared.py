"""Shared, computed-once state for the lrgfnl tests (imported by test_lrgfnl_*.py): CAMB runs once per
test session, and the nside-64 mock sets are made once and reused."""
import functools

import numpy as np
import pytest

pytest.importorskip("healpy")
pytest.importorskip("camb")

from lrgfnl.campaign import CampaignSettings, Case, measure_cases, prepare  # noqa: E402
from lrgfnl.cosmology import load_cosmology  # noqa: E402
from lrgfnl.likelihood import log_statistics  # noqa: E402

NSIDE = 64
N_MOCKS = 100        # f_NL = 0: clean, linearly contaminated, and linear weights on those
N_MOCKS_FNL100 = 50
CASES0 = (Case("clean"), Case("lin-contaminated", "linear"), Case("lin-contaminated+linear3", "linear", "linear", 3))


@functools.cache
def cosmology():
    return load_cosmology()


@functools.cache
def setup64():
    s = CampaignSettings(nside=NSIDE, n_mcmc=0, mcmc_steps=2000)  # ell 2..129, 19 bins
    return prepare(s, cosmo=cosmology())


@functools.cache
def mocks(fnl: float):
    cases = CASES0 if fnl == 0.0 else CASES0[:1]
    return measure_cases(setup64(), fnl, cases, N_MOCKS if fnl == 0.0 else N_MOCKS_FNL100)


@functools.cache
def covariance():
    """(cov of log C, log bias, number of mocks) from the clean f_NL = 0 mocks."""
    cov, bias = log_statistics(mocks(0.0)["clean"]["cl"])
    return cov, bias, N_MOCKS


def ml_fnl(measured) -> np.ndarray:
    from lrgfnl.likelihood import LogClLikelihood

    cov, bias, n = covariance()
    out = []
    for cl, noise in zip(measured["cl"], measured["noise"]):
        like = LogClLikelihood(setup64().theory, cl, noise, cov, n, bias)
        out.append(like.max_likelihood()[0])
    return np.asarray(out)
