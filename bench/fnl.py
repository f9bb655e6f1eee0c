"""f_NL pipeline validation on log-normal mocks (lrgfnl): the table of cases and its plots.

    .venv/bin/python bench/fnl.py            # nside 128, 50 mocks per case: ~30-40 min on 2 busy cores
    .venv/bin/python bench/fnl.py --quick    # nside 32, 10 mocks: a smoke run (writes only the JSON)

Writes bench/results/fnl.json, bench/results/fnl_*.png, and the results block of docs/fnl.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lrgfnl.campaign import DEFAULT_CASES, CampaignSettings, run_campaign  # noqa: E402
from lrgfnl.network import NetworkSettings  # noqa: E402
from lrgfnl import plots  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "fnl.md"
START, END = "<!-- fnl-results:start -->", "<!-- fnl-results:end -->"


def table(res: dict) -> str:
    s = res["settings"]
    lines = [f"nside {s['nside']}, {s['kind']} mocks, {res['cases'][0]['n_mocks']} mocks per case, covariance "
             f"from {res['n_cov_mocks']} clean f_NL = 0 mocks, {res['n_bins']} bins over ell "
             f"{res['ell_edges'][0]}-{res['ell_edges'][-1] - 1}; network: {s['network']['n_folds']} folds, "
             f"{s['network']['n_chains']} chains, {s['network']['epochs']} epochs, folds of "
             f"{'random pixels' if not s['network'].get('fold_nside') else 'nside-%d patches' % s['network']['fold_nside']}"
             f"; mitigated cases fitted with the transfer of {s['n_calibration']} "
             f"{'clean' if s.get('calibration_contamination', 'none') == 'none' else 'contaminated'} calibration mocks per "
             f"f_NL in {s['calibration_fnl']}. {res['date']}, {res['wall_s'] / 60:.1f} min.", "",
             "| case | true f_NL | mean f_NL | median | scatter | mean posterior sigma (n) | bias / clean scatter "
             "| without calibration: mean f_NL, bias | selection rms | null-test chi2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        ms = "-" if r["mean_sigma"] is None else f"{r['mean_sigma']:.1f} ({r['n_mcmc']})"
        null = "-" if r.get("null_test_chi2") is None else f"{r['null_test_chi2']:.1f}"
        u = r.get("uncalibrated")
        raw = "-" if u is None else f"{u['mean_fnl']:.1f}, {u['bias_over_clean_scatter']:+.2f}"
        lines.append(f"| {r['case']} | {r['true_fnl']:g} | {r['mean_fnl']:.1f} | {r['median_fnl']:.1f} | "
                     f"{r['scatter']:.1f} | {ms} | {r['bias_over_clean_scatter']:+.2f} | {raw} | "
                     f"{r['selection_rms']:.4f} | {null} |")
    for name, t in res.get("transfers", {}).items():
        ratio = np.array(t["ratio"])
        lines.append(f"- transfer of {name} in the first bins (ell {res['ell_edges'][0]}-"
                     f"{res['ell_edges'][4] - 1}), per calibration f_NL: " + "; ".join(
                         f"{f:g}: " + " ".join(f"{x:.3f}" for x in r[:4]) for f, r in zip(t["fnl_nodes"], ratio)))
    lines += ["", f"Largest relative deviation of the clean mocks' mean C_ell from the windowed theory, over "
              f"all bins and both f_NL: **{res['theory_max_rel_dev']:.3f}**."]
    for key, t in res["theory"].items():
        dev, se = np.array(t["mock_mean_rel_dev"]), np.array(t["mock_mean_rel_se"])
        lines.append(f"- {key} ({t['n_mocks']} mocks): max |dev| {np.max(np.abs(dev)):.3f}; max |dev| / its "
                     f"sampling error {np.max(np.abs(dev) / se):.1f}; bins from ell 10: max |dev| "
                     f"{np.max(np.abs(dev[np.array(res['ell_edges'][:-1]) >= 10])):.3f}")
    return "\n".join(lines)


def make_plots(res: dict, arrays: dict, folder: Path = RESULTS):
    ell = arrays["ell"]
    fnls = sorted(arrays["theory"])
    sel = ["clean", "nonlin-contaminated", "nonlin-contaminated+linear3", "nonlin-contaminated+nn3"]
    means = {f"{c} fnl={f:g}": arrays["mean_cl"][(f, c)] for f in fnls for c in sel if (f, c) in arrays["mean_cl"]}
    errs = {f"{c} fnl={f:g}": arrays["err_cl"][(f, c)] for f in fnls for c in sel if (f, c) in arrays["err_cl"]}
    plots.plot_cls(folder / "fnl_cls.png", ell, {f"fnl={f:g}": arrays["theory"][f] for f in fnls}, means, errs,
                   title="mean pseudo-C_ell of the mocks against the windowed theory")
    cross = {c: arrays["cross"][(0.0, c)] for c in ("clean", "nonlin-contaminated", "nonlin-contaminated+linear3",
                                                     "nonlin-contaminated+nn3", "nonlin-contaminated+nn9")
             if (0.0, c) in arrays["cross"]}
    plots.plot_cross(folder / "fnl_cross.png", ell, cross, title="residual systematics: <delta x template>, f_NL = 0")
    plots.plot_recovery(folder / "fnl_recovery.png", res["cases"], title="recovered f_NL on mocks")
    for f in fnls:
        if (f, "clean") in arrays["posterior"]:
            s = arrays["posterior"][(f, "clean")].copy()
            s[:, 2] *= 1e7
            plots.plot_corner(folder / f"fnl_posterior_fnl{f:g}.png", s, labels=("f_NL", "b", "noise x 1e7"),
                              truths=(f, res["settings"]["bias"], None), title=f"posterior, one clean mock, f_NL = {f:g}")


def write_doc(res: dict):
    block = f"{START}\n{table(res)}\n{END}"
    text = DOC.read_text() if DOC.exists() else f"# f_NL\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    a, b = text.index(START), text.index(END) + len(END)
    tmp = DOC.with_name(DOC.name + ".part")
    tmp.write_text(text[:a] + block + text[b:])
    tmp.replace(DOC)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nside", type=int, default=128)
    ap.add_argument("--mocks", type=int, default=50)
    ap.add_argument("--cov-mocks", type=int, default=300)
    ap.add_argument("--mcmc", type=int, default=5)
    ap.add_argument("--calibration-mocks", type=int, default=30,
                    help="clean mocks per calibration f_NL for each mitigation's transfer (0: none)")
    ap.add_argument("--calibration-contamination", choices=("none", "same"), default="none",
                    help="calibration mocks clean, or contaminated as each case is")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: the table's)")
    ap.add_argument("--fnl", type=float, nargs="+", default=[0.0, 100.0])
    ap.add_argument("--out", default=str(RESULTS / "fnl.json"),
                    help="the plots and the docs block are written only for the default")
    a = ap.parse_args(argv)
    nn = NetworkSettings(n_folds=5, n_chains=2, epochs=6, lr=0.05, batch_size=4096)
    s = CampaignSettings(nside=a.nside, n_mocks=a.mocks, n_mcmc=a.mcmc, mcmc_steps=2000, network=nn,
                         n_calibration=a.calibration_mocks, fnl_values=tuple(a.fnl),
                         calibration_contamination=a.calibration_contamination)
    n_cov = a.cov_mocks
    if a.quick:
        s = CampaignSettings(nside=32, n_mocks=10, n_mcmc=2, mcmc_steps=1500, network=nn,
                             n_calibration=min(a.calibration_mocks, 5))
        n_cov = 60
    t0 = time.time()
    # the network on the non-linear contamination, where it matters (lin-contaminated+nn3 is left out
    # to keep the run near half an hour on two busy cores)
    cases = tuple(c for c in DEFAULT_CASES if c.name != "lin-contaminated+nn3")
    if a.cases:
        cases = tuple(c for c in DEFAULT_CASES if c.name in a.cases.split(","))
    res = run_campaign(s, cases, n_cov=n_cov, n_cross=5, keep=True)
    arrays = res.pop("_arrays")
    res["wall_s"] = time.time() - t0
    res["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["machine"] = f"{platform.machine()}, {platform.python_version()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    if not a.quick and out == RESULTS / "fnl.json":
        make_plots(res, arrays)
        write_doc(res)
    elif a.quick:
        make_plots(res, arrays, Path(a.out).parent)
    print(table(res))


if __name__ == "__main__":
    main()
