"""Posterior width against the mocks' scatter (lrgfnl): clean log-normal mocks at nside 128 with an
emcee posterior for every mock (bench/fnl.py runs emcee on only 5 mocks per case).

    .venv/bin/python bench/fnl_sigma.py      # ~10 min on 2 busy cores

Writes bench/results/fnl_sigma.json.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lrgfnl.campaign import CampaignSettings, Case, run_campaign  # noqa: E402

OUT = ROOT / "bench" / "results" / "fnl_sigma.json"


def main():
    s = CampaignSettings(nside=128, n_mocks=50, n_mcmc=50, mcmc_steps=2000)
    t0 = time.time()
    res = run_campaign(s, (Case("clean"),), n_cov=300, n_cross=0)
    res["wall_s"] = time.time() - t0
    res["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for r in res["cases"]:
        r["sigma_over_scatter"] = r["mean_sigma"] / r["scatter"]
    tmp = OUT.with_name(OUT.name + ".part")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(OUT)
    for r in res["cases"]:
        print(f"f_NL {r['true_fnl']:g}: mean {r['mean_fnl']:.1f}, scatter {r['scatter']:.1f}, mean posterior "
              f"sigma {r['mean_sigma']:.1f} over {r['n_mcmc']} chains: ratio {r['sigma_over_scatter']:.2f}, "
              f"converged {r['converged_fraction']:.2f}")


if __name__ == "__main__":
    main()
