"""lrgfnl mocks: the mean pseudo-C_ell of clean log-normal mocks against the windowed theory, and the
footprint, templates and selection functions."""
import numpy as np
from lrgfnl_shared import mocks, setup64

from lrgfnl.templates import NAMES9


def test_clean_mock_mean_matches_windowed_theory():
    s = setup64()
    m = mocks(0.0)["clean"]
    signal = m["cl"] - m["noise"][:, None]
    theory = s.theory.cl(0.0, s.settings.bias)[0]
    rel = signal.mean(axis=0) / theory - 1
    se = signal.std(axis=0, ddof=1) / np.sqrt(len(signal)) / theory
    # 5% in every bin whose mock-mean error allows it (ell >= 10 here: error <= 1.6%); the lowest
    # bins, with 3-10% sampling error from 100 mocks, within 3 standard errors
    assert np.all(np.abs(rel) < np.maximum(0.05, 3 * se)), (rel, se)
    assert np.all(np.abs(rel[s.binning.edges[:-1] >= 10]) < 0.05)


def test_shot_noise_is_the_white_level_of_the_mocks():
    s = setup64()
    m = mocks(0.0)["clean"]
    nbar_sr = s.nbar_pix / (4 * np.pi / len(s.mask))
    np.testing.assert_allclose(m["noise"].mean(), 1 / nbar_sr, rtol=0.01)


def test_footprint_and_templates_are_desi_like():
    s = setup64()
    assert 0.35 <= s.mask.mean() <= 0.40
    on = s.mask > 0
    t = {n: s.templates[n][on] for n in NAMES9}
    corr = lambda a, b: np.corrcoef(t[a], t[b])[0, 1]
    assert corr("EBV", "STARDENS") > 0.3
    assert corr("GALDEPTH_G", "GALDEPTH_Z") > 0.8
    assert corr("GALDEPTH_Z", "PSFSIZE_Z") < -0.3
    assert np.all(np.isfinite(np.stack(list(t.values()))))


def test_selection_functions_have_mean_one_and_known_form():
    s = setup64()
    on = s.mask > 0
    for name in ("linear", "nonlinear"):
        f = s.selections[name]
        assert abs(f[on].mean() - 1) < 1e-12 and f.min() > 0
        assert f[on].std() > 0.05
    # the linear one is exactly linear in the standardised primary maps
    x = np.column_stack([np.ones(on.sum()), s.features[3][on]])
    coef, *_ = np.linalg.lstsq(x, s.selections["linear"][on], rcond=None)
    assert np.max(np.abs(x @ coef - s.selections["linear"][on])) < 1e-10


def test_gaussian_mocks_are_gaussian_and_lognormal_are_skewed():
    from lrgfnl.mocks import density_field

    cl = setup64().cl_full(0.0) * 50   # a strongly clustered field shows the skewness
    rng = np.random.default_rng(3)
    g = density_field(cl, 64, rng, "gaussian")
    ln = density_field(cl, 64, rng, "lognormal")
    skew = lambda x: np.mean((x - x.mean()) ** 3) / x.std() ** 3
    assert abs(skew(g)) < 0.1 and skew(ln) > 0.5
    assert ln.min() > -1
