"""lrgfnl theory: growth, C_ell against CAMB's own number-count C_ell, exact against Limber, the
quadratic split, the window and the log-normal transform."""
import numpy as np
from lrgfnl_shared import cosmology, setup64

from lrgfnl.cosmology import lcdm_growth
from lrgfnl.redshift import lrg_like_nz
from lrgfnl.sphere import Legendre, MaskWindow
from lrgfnl.theory import PART_NAMES, compute_parts, exact_parts, limber_parts


def test_growth_matches_an_ode_integration():
    from scipy.integrate import solve_ivp

    om = cosmology().omega_m
    # D'' + (3/a + dlnE/da) D' - 1.5 om / (a^5 E^2) D = 0, D = a early
    e2 = lambda a: om / a**3 + 1 - om
    dlne = lambda a: -1.5 * om / a**4 / e2(a)
    rhs = lambda a, y: [y[1], -(3 / a + dlne(a)) * y[1] + 1.5 * om / (a**5 * e2(a)) * y[0]]
    a = np.array([0.5, 0.8, 1.0])
    sol = solve_ivp(rhs, (1e-3, 1.0), [1e-3, 1.0], t_eval=a, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lcdm_growth(1 / a - 1, om), sol.y[0], rtol=2e-4)
    # the CMB-convention normalisation: D(0) of a growth that equals a in matter domination
    assert 0.75 < cosmology().growth_md_norm < 0.80


def test_fnl_zero_cl_matches_camb_number_counts():
    """CAMB's own non-Limber source C_ell (density term only, b(z) = b / D(z)) is an independent code."""
    import camb
    from camb.sources import SplinedSourceWindow

    c = cosmology()
    p = c.params
    pars = camb.set_params(H0=100 * p.h, ombh2=p.omega_b * p.h**2, omch2=p.omega_cdm * p.h**2, mnu=p.m_nu,
                           ns=p.n_s, As=2.1e-9, lmax=40, WantTransfer=True)
    pars.set_matter_power(redshifts=[0.0], kmax=2.0, nonlinear=False)
    pars.Want_CMB = False
    z, nz = lrg_like_nz(300)
    pars.SourceWindows = [SplinedSourceWindow(z=z, W=nz, bias_z=1.43 / c.interp("growth", z), source_type="counts")]
    st = pars.SourceTerms
    for name in ("counts_redshift", "counts_lensing", "counts_velocity", "counts_radial", "counts_timedelay",
                 "counts_ISW", "counts_potential", "counts_evolve", "limber_windows"):
        setattr(st, name, False)
    pars.set_for_lmax(40, lens_potential_accuracy=0)
    res = camb.get_results(pars)
    ref = res.get_source_cls_dict(raw_cl=True)["W1xW1"] * (p.sigma8 / res.get_sigma8_0()) ** 2
    mine = compute_parts(c, 40).cl(0.0, 1.43)
    ell = np.arange(2, 41)
    rel = mine[ell] / ref[ell] - 1
    # CAMB's density is in the synchronous gauge (horizon-scale terms at ell < 10) and its
    # neutrinos slow the growth slightly: 5% at ell = 2..9, 1.5% above
    assert np.all(np.abs(rel[ell < 10]) < 0.05), rel
    assert np.all(np.abs(rel[ell >= 10]) < 0.015), rel


def test_exact_and_limber_agree_at_high_ell():
    z, nz = lrg_like_nz(300)
    ells = np.array([50, 70])
    ex, li = exact_parts(cosmology(), ells, z, nz), limber_parts(cosmology(), ells, z, nz)
    for name in PART_NAMES:
        np.testing.assert_allclose(ex[name], li[name], rtol=0.012, err_msg=name)


def test_fnl_boosts_only_large_scales_and_cl_is_quadratic():
    parts = compute_parts(cosmology(), 60, ell_exact=20)
    c0, c100 = parts.cl(0.0, 1.43), parts.cl(100.0, 1.43)
    assert c100[2] / c0[2] > 10          # k^-2 scale-dependent bias dominates the largest scales
    assert abs(c100[60] / c0[60] - 1) < 0.1
    # C(fnl) at fixed b is a parabola: three points fix it and predict a fourth
    f = np.array([-50.0, 0.0, 80.0])
    vals = np.array([parts.cl(x, 1.6) for x in f])
    coef = np.polyfit(f, vals[:, 2], 2)
    np.testing.assert_allclose(np.polyval(coef, 140.0), parts.cl(140.0, 1.6)[2], rtol=1e-10)
    # b = p: no scale-dependent bias from the b term, only from the -p kernel's growth difference
    np.testing.assert_allclose(parts.cl(0.0, 2.0), 4 * parts.cl(0.0, 1.0), rtol=1e-12)


def test_legendre_round_trip_and_full_sky_window_is_identity():
    leg = Legendre(60, n_nodes=200)
    cl = 1.0 / (np.arange(61) + 1.0) ** 2
    np.testing.assert_allclose(leg.xi_to_cl(leg.cl_to_xi(cl)), cl, rtol=1e-10, atol=1e-14)
    w = MaskWindow(np.ones(12 * 16**2), 47)
    full = 1.0 / (np.arange(48) + 2.0) ** 2
    # HEALPix ring quadrature of a uniform map leaves ~1e-8 of spurious mask power
    np.testing.assert_allclose(w.apply(full, integral_constraint=False), full, rtol=0, atol=1e-6 * full[0])
    assert abs(w.apply(full)[0]) < 1e-15


def test_lognormal_gaussian_spectrum_matches_legendre_inversion():
    """glass's band-limited solver against a direct xi_G = log(1 + xi) on Gauss-Legendre nodes."""
    from lrgfnl.mocks import gaussian_cl_for_lognormal

    cl = setup64().cl_full(100.0)
    mine = Legendre(len(cl) - 1, n_nodes=2 * len(cl))
    direct = mine.xi_to_cl(np.log1p(mine.cl_to_xi(cl)))
    g = gaussian_cl_for_lognormal(cl)
    ell = np.arange(2, 120)
    np.testing.assert_allclose(g[ell], direct[ell], rtol=0.01)
