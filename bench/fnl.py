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
from dataclasses import replace
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


def calibration_text(s: dict) -> str:
    cont = s.get("calibration_contamination", "none")
    if cont == "estimated":
        return (f"the transfer of {s['n_calibration_per_mock']} calibration mocks per f_NL in {s['calibration_fnl']} "
                f"contaminated with the selection function that the case's mitigation estimated from that mock "
                f"(each mock calibrated on its own estimate; no use of the true selection)")
    return (f"the transfer of {s['n_calibration']} {'clean' if cont == 'none' else 'truly contaminated'} "
            f"calibration mocks per f_NL in {s['calibration_fnl']}")


def pair(row, key) -> str:
    r = row.get(key)
    return "-" if r is None else f"{r['mean_fnl']:.1f}, {r['bias_over_clean_scatter']:+.2f}"


def table(res: dict) -> str:
    s = res["settings"]
    estimated = s.get("calibration_contamination") == "estimated"
    lines = [f"nside {s['nside']}, {s['kind']} mocks" + (f" (seed {s['seed']})" if s.get("seed", 1) != 1 else "") + ","
             f" {res['cases'][0]['n_mocks']} mocks per case, covariance "
             f"from {res['n_cov_mocks']} clean f_NL = 0 mocks, {res['n_bins']} bins over ell "
             f"{res['ell_edges'][0]}-{res['ell_edges'][-1] - 1}; network: {s['network']['n_folds']} folds, "
             f"{s['network']['n_chains']} chains, {s['network']['epochs']} epochs, batch {s['network']['batch_size']}, "
             + (f"weight decay {s['network']['weight_decay']:g}, " if s['network'].get('weight_decay') else "")
             + "folds of "
             f"{'random pixels' if not s['network'].get('fold_nside') else 'nside-%d patches' % s['network']['fold_nside']}"
             f"; mitigated cases fitted with {calibration_text(s)}. {res['date']}, {res['wall_s'] / 60:.1f} min.", "",
             "| case | true f_NL | mean f_NL | median | scatter | mean posterior sigma (n) | bias / clean scatter "
             "| without calibration: mean f_NL, bias | "
             + ("clean calibration: mean f_NL, bias | " if estimated else "") + "selection rms | null-test chi2 |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if estimated else "")]
    for r in res["cases"]:
        ms = "-" if r["mean_sigma"] is None else f"{r['mean_sigma']:.1f} ({r['n_mcmc']})"
        null = "-" if r.get("null_test_chi2") is None else f"{r['null_test_chi2']:.1f}"
        extra = f" {pair(r, 'clean_calibration')} |" if estimated else ""
        lines.append(f"| {r['case']} | {r['true_fnl']:g} | {r['mean_fnl']:.1f} | {r['median_fnl']:.1f} | "
                     f"{r['scatter']:.1f} | {ms} | {r['bias_over_clean_scatter']:+.2f} | {pair(r, 'uncalibrated')} |"
                     f"{extra} {r['selection_rms']:.4f} | {null} |")
    for name, t in res.get("transfers", {}).items():
        ratio = np.array(t["ratio"])
        if "n_estimates" in t:
            name = f"{name} (mean over the {t['n_estimates']} mocks)"
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


def _run(s, cases, n_cov, progress=True):
    res = run_campaign(s, cases, n_cov=n_cov, n_cross=5, keep=True, progress=progress)
    return res, res.pop("_arrays")


def run_split(s, cases, n_cov, jobs):
    """The campaign, its f_NL values run in `jobs` processes (each makes its own covariance and
    calibration mocks, with the same seeds, so the parts agree), merged as one run."""
    if jobs == 1 or len(s.fnl_values) == 1:
        return _run(s, cases, n_cov)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [pool.submit(_run, replace(s, fnl_values=(f,)), cases, n_cov, i == 0)
                 for i, f in enumerate(s.fnl_values)]
        parts = [p.result() for p in parts]
    res, arrays = parts[0]
    for r, a in parts[1:]:
        res["cases"] += r["cases"]
        res["theory"].update(r["theory"])
        res["transfers"].update(r["transfers"])
        res["theory_max_rel_dev"] = max(res["theory_max_rel_dev"], r["theory_max_rel_dev"])
        for k, v in a.items():
            if isinstance(v, dict):
                arrays[k].update(v)
    res["settings"]["fnl_values"] = list(s.fnl_values)
    return res, arrays


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nside", type=int, default=128)
    ap.add_argument("--mocks", type=int, default=50)
    ap.add_argument("--cov-mocks", type=int, default=300)
    ap.add_argument("--mcmc", type=int, default=5)
    ap.add_argument("--calibration-mocks", type=int, default=30,
                    help="clean mocks per calibration f_NL for each mitigation's transfer (0: none)")
    ap.add_argument("--calibration-contamination", choices=("none", "same", "estimated"), default="none",
                    help="calibration mocks clean, contaminated with the true selection of the case (a diagnosis), "
                         "or with the selection each mock's mitigation estimated")
    ap.add_argument("--calibration-per-mock", type=int, default=8,
                    help="with 'estimated': calibration mocks per f_NL for each mock's own estimate")
    ap.add_argument("--nn-epochs", type=int, default=6)
    ap.add_argument("--nn-weight-decay", type=float, default=0.0, help="AdamW's decoupled weight decay")
    ap.add_argument("--nn-fold-nside", type=int, default=0,
                    help="0: k-fold over random pixels; n: folds of whole nside-n patches")
    ap.add_argument("--nn-chains", type=int, default=2)
    ap.add_argument("--nn-batch-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1,
                    help="seed of every mock (cases, covariance, calibration); the table uses 1")
    ap.add_argument("--jobs", type=int, choices=(1, 2), default=1,
                    help="2: the f_NL values split over two processes")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: the table's)")
    ap.add_argument("--fnl", type=float, nargs="+", default=[0.0, 100.0])
    ap.add_argument("--out", default=str(RESULTS / "fnl.json"),
                    help="the plots and the docs block are written only for the default")
    a = ap.parse_args(argv)
    nn = NetworkSettings(n_folds=5, n_chains=a.nn_chains, epochs=a.nn_epochs, lr=0.05, batch_size=a.nn_batch_size,
                         weight_decay=a.nn_weight_decay, fold_nside=a.nn_fold_nside)
    s = CampaignSettings(nside=a.nside, n_mocks=a.mocks, n_mcmc=a.mcmc, mcmc_steps=2000, network=nn, seed=a.seed,
                         n_calibration=a.calibration_mocks, fnl_values=tuple(a.fnl),
                         calibration_contamination=a.calibration_contamination,
                         n_calibration_per_mock=a.calibration_per_mock)
    n_cov = a.cov_mocks
    if a.quick:
        s = replace(s, nside=32, n_mocks=10, n_mcmc=2, mcmc_steps=1500, n_calibration=min(a.calibration_mocks, 5),
                    n_calibration_per_mock=min(a.calibration_per_mock, 2))
        n_cov = 60
    t0 = time.time()
    # the network on the non-linear contamination, where it matters (lin-contaminated+nn3 is left out
    # to keep the run near half an hour on two busy cores)
    cases = tuple(c for c in DEFAULT_CASES if c.name != "lin-contaminated+nn3")
    if a.cases:
        cases = tuple(c for c in DEFAULT_CASES if c.name in a.cases.split(","))
    res, arrays = run_split(s, cases, n_cov, a.jobs)
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
