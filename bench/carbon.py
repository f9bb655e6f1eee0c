"""Carbon accounting against ACT's published examples and LLMCarbon's validation table, and what
a weight format buys in carbon per 1,000 generated tokens.

    .venv/bin/python bench/carbon.py              # compute, print, write JSON + PNG
    .venv/bin/python bench/carbon.py --markdown   # print the docs/planning.md tables from the JSON

ACT (Gupta et al., ISCA 2022): the Dell PowerEdge R740 and Fairphone 3 examples of its
repository (exps/dellr740, exps/fairphone3), to the precision it prints. LLMCarbon (Faiz et
al., ICLR 2024): the operational tCO2e of T5, GPT-3, GShard, Switch and XLM, and XLM's embodied
carbon. Writes bench/results/carbon.json and bench/results/carbon.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from elastiq.cache import atomic_write_text  # noqa: E402
from elastiq.labs.planning import carbon as C  # noqa: E402
from elastiq.labs.planning.plots import plot_carbon_breakdown  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# (name, device, group, expected kg, decimals ACT prints in its paper/README)
ACT = [("Dell R740 CPU", "dell-r740", "CPU", 23.14, 2), ("Dell R740 DRAM", "dell-r740", "DRAM", 330.43, 2),
       ("Dell R740 SSD main (v1 script: NAND + cache + packages)", "dell-r740", "SSD main", 1477.0, 0),
       ("Fairphone 3 RAM + flash", "fairphone-3", "RAM + flash", 5.310, 3),
       ("Fairphone 3 CPU", "fairphone-3", "CPU", 0.899, 3), ("Fairphone 3 other ICs", "fairphone-3", "other ICs", 5.692, 3)]
FORMATS = ["bf16", "int8", "mxfp8_e4m3", "mxfp6_e2m3", "nvfp4", "mxfp4", "nxfp4"]
PER_TOKEN = [("llama-2-7b", "h100-80gb", 1, "usa"), ("llama-2-7b", "h100-80gb", 32, "usa"),
             ("llama-3-8b", "laptop-m2", 1, "europe"), ("smollm2-135m", "laptop-m2", 1, "europe")]


def run() -> dict:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    act = []
    for name, dev, group, expected, dec in ACT:
        ours = C.device_embodied(dev)[group]
        act.append({"name": name, "device": dev, "expected_kg": expected, "ours_kg": ours, "decimals": dec,
                    "exact_to_stated_precision": round(ours, dec) == round(expected, dec)})
    t = Table(title="ACT's published examples (kg CO2e)")
    for col in ("example", "ACT", "ours", "same to stated precision"):
        t.add_column(col)
    for a in act:
        t.add_row(a["name"], f"{a['expected_kg']:.{a['decimals']}f}", f"{a['ours_kg']:.{a['decimals'] + 2}f}",
                  "yes" if a["exact_to_stated_precision"] else "NO")
    console.print(t)

    val = C.table("llmcarbon_validation")
    llm = []
    for row in val["operational"]:
        params = row.get("active_params_b", row["params_b"]) * 1e9
        tr = C.training_carbon(params, row["tokens_b"] * 1e9, row["devices"], row["peak_tflops"] * 1e12,
                               row["hardware_efficiency"], row["system_power_w"], row["ci_kg_per_kwh"], row["pue"])
        llm.append({"name": f"{row['name']} operational tCO2e", "published": row["published_tco2e"], "ours": tr.operational_t,
                    "error": tr.operational_t / row["published_tco2e"] - 1, "days": tr.days, "energy_mwh": tr.energy_mwh})
    for e in val["embodied"]:
        ours = C.llmcarbon_embodied_t(e["hardware"], e["days"])
        llm.append({"name": f"{e['name']} tCO2e", "published": e["published_tco2e"], "ours": ours,
                    "error": ours / e["published_tco2e"] - 1})
    t = Table(title="LLMCarbon validation (published training runs)")
    for col in ("run", "published t", "ours t", "error"):
        t.add_column(col)
    for x in llm:
        t.add_row(x["name"], f"{x['published']:.3g}", f"{x['ours']:.3g}", f"{100 * x['error']:+.1f}%")
    console.print(t)

    per_token = []
    for model, system, batch, region in PER_TOKEN:
        for fmt in FORMATS:
            try:
                r = C.per_1k_tokens(model, system, weights=fmt, region=region, batch=batch, prompt=512, new_tokens=512)
            except ValueError as e:   # e.g. the model does not fit this device in this format
                per_token.append({"model": model, "system": system, "batch": batch, "weights": fmt, "region": region,
                                  "error": str(e).split(". ")[0]})
                continue
            per_token.append(r | {"g_per_1k": 1000 * r["total_kg"]})
    t = Table(title="Carbon per 1,000 generated tokens (prompt 512, 512 new tokens)")
    for col in ("model", "system", "batch", "weights", "bits/weight", "weights GiB", "tokens/s", "W", "g CO2e / 1k tok", "vs bf16"):
        t.add_column(col)
    base = {}
    for x in per_token:
        key = (x["model"], x["system"], x["batch"])
        if "error" in x:
            t.add_row(x["model"], x["system"], str(x["batch"]), x["weights"], "-", "-", "-", "-", "does not fit", "-")
            continue
        base.setdefault(key, x["g_per_1k"] if x["weights"] == "bf16" else None)
        rel = f"{x['g_per_1k'] / base[key]:.2f}x" if base.get(key) else "-"
        x["vs_bf16"] = x["g_per_1k"] / base[key] if base.get(key) else None
        t.add_row(x["model"], x["system"], str(x["batch"]), x["weights"], f"{x['bits_per_weight']:.3g}", f"{x['weight_gib']:.2f}",
                  f"{x['tokens_per_s']:.0f}", f"{x['watts']:.0f}", f"{x['g_per_1k']:.4f}", rel)
    console.print(t)

    devices = {d: C.device_embodied(d) for d in C.devices()}
    out = {"meta": {"date": datetime.date.today().isoformat(),
                    "sources": {"act": "facebookresearch/ACT exps/dellr740, exps/fairphone3",
                                "llmcarbon": val["source"]}},
           "act_examples": act, "llmcarbon": llm, "per_1k_tokens": per_token, "devices_kg": devices}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "carbon.json", json.dumps(out, indent=2))
    plot_carbon_breakdown([(d, {k: v for k, v in g.items() if k != "total"}) for d, g in devices.items()],
                          RESULTS / "carbon.png", "Embodied carbon by component (ACT model; panels have their own scales)")
    console.print(f"wrote {RESULTS / 'carbon.json'} and {RESULTS / 'carbon.png'}")
    return out


def markdown(data: dict) -> str:
    out = ["| ACT example | ACT kg | ours kg | same to stated precision |", "|---|---|---|---|"]
    for a in data["act_examples"]:
        out.append(f"| {a['name']} | {a['expected_kg']:.{a['decimals']}f} | {a['ours_kg']:.{a['decimals'] + 2}f} | "
                   f"{'yes' if a['exact_to_stated_precision'] else '**no**'} |")
    out += ["", "| LLMCarbon run | published t | ours t | error |", "|---|---|---|---|"]
    for x in data["llmcarbon"]:
        out.append(f"| {x['name']} | {x['published']:.3g} | {x['ours']:.3g} | {100 * x['error']:+.1f}% |")
    out += ["", "| model | system | batch | weights | bits/weight | weights GiB | tokens/s | W | g CO2e per 1k tokens | vs bf16 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for x in data["per_1k_tokens"]:
        if "error" in x:
            out.append(f"| {x['model']} | {x['system']} | {x['batch']} | {x['weights']} | - | - | - | - | does not fit | - |")
            continue
        rel = "-" if x.get("vs_bf16") is None else f"{x['vs_bf16']:.2f}x"
        out.append(f"| {x['model']} | {x['system']} | {x['batch']} | {x['weights']} | {x['bits_per_weight']:.3g} | "
                   f"{x['weight_gib']:.2f} | {x['tokens_per_s']:.0f} | {x['watts']:.0f} | {x['g_per_1k']:.4f} | {rel} |")
    out += ["", "| device | " + " | ".join(["component groups (kg CO2e)", "total kg"]) + " |", "|---|---|---|"]
    for d, g in data["devices_kg"].items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in g.items() if k != "total")
        out.append(f"| {d} | {parts} | {g['total']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true", help="print the Markdown tables from bench/results/carbon.json")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads((RESULTS / "carbon.json").read_text())))
    else:
        run()
