"""lrgfnl likelihood and sampling on nside-64 log-normal mocks: recovery of f_NL = 0 and 100, the
posterior width against the mocks' scatter, the bias of contaminated mocks and its removal."""
import copy
import warnings
from dataclasses import replace

import numpy as np
import pytest
from lrgfnl_shared import N_MOCKS_FNL100, covariance, ml_fnl, mocks, setup64
from lrgfnl_shared import clean_fits as shared_clean_fits

from lrgfnl.campaign import (CampaignSettings, Case, calibrate_transfers, estimated_transfers, measure_cases,
                             mock_counts, mock_density, weights_for)
from lrgfnl.errors import FnlInputError
from lrgfnl.likelihood import LogClLikelihood, hartlap_factor
from lrgfnl.sampling import ChainNotConvergedWarning, run_emcee
from lrgfnl.transfer import MitigationTransfer


@pytest.fixture(scope="module")
def clean_fits():
    return {f: shared_clean_fits(f) for f in (0.0, 100.0)}


@pytest.mark.parametrize("truth", [0.0, 100.0])
def test_clean_mocks_recover_the_injected_fnl(clean_fits, truth):
    est = clean_fits[truth][:, 0]
    sigma = est.std(ddof=1)
    assert abs(est.mean() - truth) <= 0.5 * sigma, (est.mean(), sigma)
    assert abs(clean_fits[truth][:, 1].mean() - setup64().settings.bias) < 0.05


def test_posterior_width_matches_the_mock_scatter(clean_fits):
    cov, bias, n = covariance()
    m = mocks(0.0)["clean"]
    sigmas = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChainNotConvergedWarning)
        for i in range(6):
            like = LogClLikelihood(setup64().theory, m["cl"][i], m["noise"][i], cov, n, bias)
            post = run_emcee(like, clean_fits[0.0][i], n_steps=1500, seed=i)
            sigmas.append(post.summary()["fnl"]["sigma68"])
    scatter = clean_fits[0.0][:, 0].std(ddof=1)
    assert abs(np.mean(sigmas) / scatter - 1) < 0.3, (np.mean(sigmas), scatter)


def test_contamination_biases_fnl_and_linear_weights_remove_it(clean_fits):
    clean = clean_fits[0.0][:, 0]
    sigma = clean.std(ddof=1)
    n = 50  # paired with the clean fits of the same density fields
    take = lambda m: {k: m[k][:n] for k in ("cl", "noise")}
    dirty = ml_fnl(take(mocks(0.0)["lin-contaminated"]))[:, 0]
    assert dirty.mean() > 5 * sigma                    # spurious large-scale power looks like f_NL > 0
    cleaned = ml_fnl(take(mocks(0.0)["lin-contaminated+linear3"]))[:, 0]
    assert abs(cleaned.mean()) <= 0.5 * sigma, (cleaned.mean(), sigma)
    assert abs((cleaned - clean[:n]).mean()) <= 0.5 * sigma


def test_calibration_removes_the_over_correction_of_nine_map_weights(clean_fits):
    """Nine-map weights on clean f_NL = 100 mocks remove part of their large-scale power and pull f_NL
    down; the transfer calibrated on other clean mocks, put into the model, brings it back."""
    s = setup64()
    transfer = calibrate_transfers(s, [Case("any", "none", "linear", 9)])[("none", "linear", 9)]
    assert transfer(100.0)[0, 0] < transfer(0.0)[0, 0] < 1      # more large-scale power, more removed
    assert np.all(np.abs(transfer.ratio[:, s.binning.edges[:-1] >= 30] - 1) < 0.02)
    clean = clean_fits[100.0][:, 0]
    sigma = clean.std(ddof=1)
    m = measure_cases(s, 100.0, [Case("clean+linear9", "none", "linear", 9)], N_MOCKS_FNL100)["clean+linear9"]
    raw, calibrated = ml_fnl(m)[:, 0], ml_fnl(m, transfer=transfer)[:, 0]
    # paired with the clean fits of the same density fields
    assert (raw - clean).mean() < -0.3 * sigma, ((raw - clean).mean(), sigma)
    assert abs((calibrated - clean).mean()) < 0.2 * sigma, ((calibrated - clean).mean(), sigma)
    assert abs(calibrated.mean() - 100.0) <= 0.5 * sigma


def test_estimated_calibration_contaminates_its_mocks_with_the_estimate_not_the_truth():
    """The transfer of calibration mocks contaminated with a given estimate of the selection: with the
    estimate F = 1 it is the clean calibration's, with the true selection the "same" calibration's
    (the same mocks and random numbers); with a real estimate, linear weights fitted on a non-linearly
    contaminated mock, it is neither: a linear estimate is removed whole by linear weights, so it
    leaves none of the large-scale residual power that the true non-linear selection leaves."""
    s = copy.copy(setup64())
    s.settings = replace(s.settings, n_calibration=10)
    case = Case("nonlin+linear3", "nonlinear", "linear", 3)
    on = s.mask > 0
    truth = s.selections["nonlinear"]
    data = mock_counts(s, mock_density(s, 0.0, 0), 0, "nonlinear")
    estimate = weights_for(s, data, case)
    assert 0.03 < np.sqrt(np.mean((estimate[on] - truth[on]) ** 2)) < 0.08   # an estimate, not the truth
    ones, true, est = estimated_transfers(s, case, [np.ones(on.sum()), truth[on], estimate[on]], 10)
    clean = calibrate_transfers(s, [case])[("none", "linear", 3)]
    s.settings = replace(s.settings, calibration_contamination="same")
    same = calibrate_transfers(s, [case])[("nonlinear", "linear", 3)]
    np.testing.assert_array_equal(ones.ratio, clean.ratio)
    np.testing.assert_array_equal(true.ratio, same.ratio)
    assert np.all(same.ratio[0, :4] > 2)        # f_NL = 0, ell 2-9: the true selection's residual power
    assert not np.array_equal(est.ratio, clean.ratio)
    assert np.all(np.abs(est.ratio[:, :4] - clean.ratio[:, :4]) < 0.1), (est.ratio[:, :4], clean.ratio[:, :4])


def test_an_unknown_calibration_contamination_is_refused():
    with pytest.raises(ValueError, match="calibration_contamination 'truth': use 'none', 'same' or 'estimated'"):
        CampaignSettings(calibration_contamination="truth")


def test_transfer_interpolates_in_fnl_and_the_likelihood_uses_it():
    nbins = len(setup64().binning.edges) - 1
    ratio = np.stack([np.full(nbins, 0.9), np.full(nbins, 0.7)])
    t = MitigationTransfer(np.array([0.0, 100.0]), ratio)
    np.testing.assert_allclose(t([-50.0, 0.0, 25.0, 100.0, 300.0])[:, 0], [0.9, 0.9, 0.85, 0.7, 0.7])
    # data = transfer x theory: the maximum-likelihood point is the input, and not without the transfer
    s = setup64()
    cov, _, n = covariance()
    data = s.theory.cl(60.0, 1.5)[0] * t(60.0)[0] + 3e-7
    like = LogClLikelihood(s.theory, data, 3e-7, cov, n, np.zeros(nbins), transfer=t)
    np.testing.assert_allclose(like.max_likelihood()[0][:2], [60.0, 1.5], rtol=1e-3)
    plain = LogClLikelihood(s.theory, data, 3e-7, cov, n, np.zeros(nbins))
    assert abs(plain.max_likelihood()[0][0] - 60.0) > 5


def test_a_short_chain_warns_that_it_has_not_converged():
    cov, bias, n = covariance()
    m = mocks(0.0)["clean"]
    like = LogClLikelihood(setup64().theory, m["cl"][0], m["noise"][0], cov, n, bias)
    with pytest.warns(ChainNotConvergedWarning, match="not converged"):
        run_emcee(like, np.array([0.0, 1.43, 0.0]), n_steps=60)


def test_likelihood_refuses_bad_data_and_too_few_mocks():
    cov, bias, n = covariance()
    m = mocks(0.0)["clean"]
    bad = m["cl"][0].copy()
    bad[3] = np.nan
    with pytest.raises(FnlInputError, match="non-finite"):
        LogClLikelihood(setup64().theory, bad, m["noise"][0], cov, n, bias)
    with pytest.raises(FnlInputError, match="mocks"):
        hartlap_factor(10, 13)
    assert hartlap_factor(100, 13) == pytest.approx(85 / 99)


def test_likelihood_peaks_at_the_truth_on_noiseless_theory():
    """Data equal to the model (log bias 0): the maximum-likelihood point is the input."""
    s = setup64()
    cov, _, n = covariance()
    data = s.theory.cl(60.0, 1.5)[0] + 3e-7
    like = LogClLikelihood(s.theory, data, 3e-7, cov, n, np.zeros(len(data)))
    theta, _ = like.max_likelihood()
    np.testing.assert_allclose(theta[:2], [60.0, 1.5], rtol=1e-3)
