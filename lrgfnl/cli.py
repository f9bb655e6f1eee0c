"""The lrgfnl command: run a mock campaign, write a demonstration map set, or fit a user's maps."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import FnlInputError


def _write_json(path, obj):
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(p)


def _campaign(a):
    from .campaign import DEFAULT_CASES, CampaignSettings, run_campaign
    from .network import NetworkSettings

    cases = DEFAULT_CASES
    if a.cases != "all":
        wanted = a.cases.split(",")
        known = {c.name: c for c in DEFAULT_CASES}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise FnlInputError(f"unknown case {unknown[0]!r}: choose from {', '.join(known)}")
        cases = tuple(known[w] for w in wanted)
    if a.nside < 16 or a.nside & (a.nside - 1):
        raise FnlInputError(f"--nside {a.nside}: use a power of two, 16 or more")
    s = CampaignSettings(nside=a.nside, n_mocks=a.mocks, fnl_values=tuple(a.fnl), kind=a.kind, ell_max=a.ell_max,
                         n_mcmc=a.mcmc, mcmc_steps=a.steps, seed=a.seed,
                         network=NetworkSettings(n_chains=a.nn_chains, epochs=a.nn_epochs, fold_nside=a.nn_fold_nside),
                         n_calibration=a.calibration_mocks, calibration_contamination=a.calibration_contamination)
    res = run_campaign(s, cases, n_cov=a.cov_mocks, cache_dir=a.cache)
    _write_json(a.out, res)
    for r in res["cases"]:
        print(f"{r['label']:38s} mean {r['mean_fnl']:8.1f}  scatter {r['scatter']:6.1f}  "
              f"bias/sigma {r['bias_over_clean_scatter']:+6.2f}")
    print(f"theory max rel dev {res['theory_max_rel_dev']:.3f}; wrote {a.out}")


def _mock(a):
    import numpy as np

    from .campaign import CampaignSettings, mock_counts, mock_density, prepare
    from .inputs import write_healpix

    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup = prepare(CampaignSettings(nside=a.nside, seed=a.seed), cache_dir=a.cache)
    delta = mock_density(setup, a.fnl, 0)
    counts = mock_counts(setup, delta, 0, a.contamination)
    write_healpix(out / "counts.fits", counts, a.overwrite)
    write_healpix(out / "mask.fits", setup.mask, a.overwrite)
    for name, t in setup.templates.items():
        write_healpix(out / f"{name.lower()}.fits", np.where(setup.mask > 0, t, 0.0), a.overwrite)
    print(f"wrote counts.fits, mask.fits and {len(setup.templates)} templates to {out}")


def _fit(a):
    from .fit_map import fit_user_maps
    from .inputs import read_user_maps
    from .network import NetworkSettings

    maps = read_user_maps(a.counts, a.mask, a.templates)
    res, post = fit_user_maps(maps, mitigation=a.mitigation, n_cov=a.cov_mocks, ell_max=a.ell_max,
                              mcmc_steps=a.steps, pixel_window=not a.no_pixel_window,
                              network=NetworkSettings(n_chains=a.nn_chains, epochs=a.nn_epochs, fold_nside=a.nn_fold_nside), cache_dir=a.cache,
                              n_calibration=a.calibration_mocks, calibration_contamination=a.calibration_contamination)
    _write_json(a.out, res)
    if a.plot:
        from .plots import plot_corner

        plot_corner(a.plot, post.samples, title="posterior")
    f = res["posterior"]["fnl"]
    print(f"f_NL = {f['median']:.1f} +{f['hi68'] - f['median']:.1f} -{f['median'] - f['lo68']:.1f} (68%), "
          f"max likelihood {res['max_likelihood']['fnl']:.1f}; wrote {a.out}")


CALIBRATION_CHOICES = ("none", "estimated")
CALIBRATION_HELP = ("calibration mocks clean, or contaminated with the selection function the mitigation "
                    "estimated from the map (in a campaign: each mock's own estimate, on 8 calibration mocks per "
                    "f_NL, and --calibration-mocks clean ones for comparison)")


def build_parser():
    ap = argparse.ArgumentParser(prog="lrgfnl", description=__doc__)
    ap.add_argument("--cache", default=None, help="folder for the CAMB tables (default: recompute)")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("campaign", help="run a mock campaign and write its JSON summary")
    c.add_argument("--nside", type=int, default=64)
    c.add_argument("--mocks", type=int, default=50, help="mocks per case and f_NL")
    c.add_argument("--cov-mocks", type=int, default=200, help="clean f_NL = 0 mocks for the covariance")
    c.add_argument("--fnl", type=float, nargs="+", default=[0.0, 100.0])
    c.add_argument("--cases", default="all", help="comma-separated case names, or all")
    c.add_argument("--kind", choices=("lognormal", "gaussian"), default="lognormal")
    c.add_argument("--ell-max", type=int, default=None)
    c.add_argument("--mcmc", type=int, default=10, help="mocks per case that get an emcee posterior")
    c.add_argument("--steps", type=int, default=2000)
    c.add_argument("--nn-chains", type=int, default=3)
    c.add_argument("--nn-epochs", type=int, default=60)
    c.add_argument("--nn-fold-nside", type=int, default=0,
                   help="0: the network's k-fold deals random pixels; n: whole nside-n patches")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--calibration-mocks", type=int, default=20,
                   help="mocks per calibration f_NL (0 and 100) for the mitigation's over-correction (0: none)")
    c.add_argument("--calibration-contamination", choices=CALIBRATION_CHOICES, default="none",
                   help=CALIBRATION_HELP)
    c.add_argument("--out", default="fnl_campaign.json")
    c.set_defaults(func=_campaign)
    m = sub.add_parser("mock", help="write one mock (counts, mask, 9 templates) as FITS maps")
    m.add_argument("--nside", type=int, default=64)
    m.add_argument("--fnl", type=float, default=0.0)
    m.add_argument("--contamination", choices=("none", "linear", "nonlinear"), default="none")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--out-dir", required=True)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=_mock)
    f = sub.add_parser("fit", help="fit f_NL to a HEALPix counts map with its mask and templates (FITS)")
    f.add_argument("--counts", required=True)
    f.add_argument("--mask", required=True, help="fraction of good area per pixel, 0 off the footprint")
    f.add_argument("--templates", nargs="*", default=[])
    f.add_argument("--mitigation", choices=("none", "linear", "nn"), default="linear")
    f.add_argument("--cov-mocks", type=int, default=100)
    f.add_argument("--ell-max", type=int, default=None)
    f.add_argument("--steps", type=int, default=3000)
    f.add_argument("--nn-chains", type=int, default=3)
    f.add_argument("--nn-epochs", type=int, default=60)
    f.add_argument("--nn-fold-nside", type=int, default=0,
                   help="0: the network's k-fold deals random pixels; n: whole nside-n patches")
    f.add_argument("--calibration-mocks", type=int, default=20,
                   help="mocks per calibration f_NL (0 and 100) for the mitigation's over-correction (0: none)")
    f.add_argument("--calibration-contamination", choices=CALIBRATION_CHOICES, default="none",
                   help=CALIBRATION_HELP)
    f.add_argument("--no-pixel-window", action="store_true", help="for maps sampled at pixel centres (mocks)")
    f.add_argument("--out", default="fnl_fit.json")
    f.add_argument("--plot", default=None, help="PNG path for a corner plot of the posterior")
    f.set_defaults(func=_fit)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_a, **_k: print(f"lrgfnl: warning: {message}", file=sys.stderr)
            args.func(args)
    except FnlInputError as exc:
        print(f"lrgfnl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
