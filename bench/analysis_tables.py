"""Render bench/results/numerics.json and resilience.json as the tables of docs/analysis.md.

    .venv/bin/python bench/analysis_tables.py numerics
    .venv/bin/python bench/analysis_tables.py resilience
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _e(v) -> str:
    return f"{v:.2e}"


def numerics(d: dict) -> str:
    m = d["meta"]
    out = [f"torch {m['torch']}, {m['threads']} thread, mean over {m['seeds']} seeds of N(0, 1) inputs, one head, "
           f"head dim 64 unless stated, {m['date']}.", ""]
    lens = m["seq_lens"]
    out += ["**Max |O - O_fp64| by sequence length** (flash: tile 64 x 64)", "",
            "| impl | precision | " + " | ".join(f"S={s}" for s in lens) + " |", "|---|---|" + "---|" * len(lens)]
    keys = list(dict.fromkeys((r["impl"], r["precision"]) for r in d["sweep"]))
    for impl, prec in keys:
        vals = {r["seq_len"]: r["max_abs"] for r in d["sweep"] if (r["impl"], r["precision"]) == (impl, prec)}
        out.append(f"| {impl} | {prec} | " + " | ".join(_e(vals[s]) for s in lens) + " |")
    if d.get("long"):
        sl = m["long_seq_len"]
        lb = next(r["max_abs"] for r in d["long"] if r["impl"] == "baseline")
        out += ["", f"**bf16 at S={sl}** (mean over {m['long_seeds']} seeds)", "",
                "| impl | tile | max dev | mean dev | rel. error | max dev vs baseline |", "|---|---|---|---|---|---|"]
        for r in d["long"]:
            out.append(f"| {r['impl']} | {r['block'] or '-'} | {_e(r['max_abs'])} | {_e(r['mean_abs'])} | {_e(r['rel'])} | "
                       f"{r['max_abs'] / lb:.2f}x |")
    base = {r["seq_len"]: r["max_abs"] for r in d["sweep"] if (r["impl"], r["precision"]) == ("baseline", "bf16")}
    s = lens[-1]
    out += ["", f"**Flash at bf16, S={s}: tile size** (ratio to baseline bf16 {_e(base[s])})", "",
            "| tile | max dev | mean dev | rel. error | vs baseline |", "|---|---|---|---|---|"]
    for r in d["tiles"]:
        out.append(f"| {r['block']} | {_e(r['max_abs'])} | {_e(r['mean_abs'])} | {_e(r['rel'])} | {r['max_abs'] / base[s]:.2f}x |")
    out += ["", "**Head dimension** (bf16, S=512)", "", "| impl | d=32 | d=64 | d=128 |", "|---|---|---|---|"]
    for impl in dict.fromkeys(r["impl"] for r in d["head_dims"]):
        vals = {r["head_dim"]: r["max_abs"] for r in d["head_dims"] if r["impl"] == impl}
        out.append(f"| {impl} | " + " | ".join(_e(vals[k]) for k in (32, 64, 128)) + " |")
    out += ["", "**Formats as the attention precision** (every stage, S=512)", "",
            "| precision | baseline max dev | flash max dev | flash rel. error |", "|---|---|---|---|"]
    for prec in dict.fromkeys(r["precision"] for r in d["formats"]):
        b = next(r for r in d["formats"] if r["precision"] == prec and r["impl"] == "baseline")
        f = next(r for r in d["formats"] if r["precision"] == prec and r["impl"] == "flash")
        out.append(f"| `{prec}` | {_e(b['max_abs'])} | {_e(f['max_abs'])} | {_e(f['rel'])} |")
    a0 = d["attribution"][0]["max_abs"]
    out += ["", f"**Which precision makes flash deviate** (S={s}, tile 64)", "",
            "| configuration | impl | max dev | vs all-bf16 baseline |", "|---|---|---|---|"]
    for r in d["attribution"]:
        out.append(f"| {r['config']} | {r['impl']} | {_e(r['max_abs'])} | {r['max_abs'] / a0:.2f}x |")
    t = d["training"]
    st = t["setup"]
    out += ["", f"**Weights during training** ({st['steps']} steps, batch {st['batch']} x {st['seq_len']} bytes, "
            f"{st['layers']} layers, dim {st['dim']}, {st['heads']} heads, AdamW lr {st['lr']})", "",
            "| pair | W at step " + " | W at step ".join(str(c["step"]) for c in list(t["curves"].values())[0][4::4]) + " | max abs diff (final) |",
            "|---|" + "---|" * (len(list(t["curves"].values())[0][4::4]) + 1)]
    for name, curve in t["curves"].items():
        out.append(f"| {name} | " + " | ".join(_e(c["wasserstein"]) for c in curve[4::4]) + f" | {_e(curve[-1]['max_abs'])} |")
    out += ["", "| run | final loss (mean of last 20 steps) |", "|---|---|"]
    out += [f"| {k} | {v:.4f} |" for k, v in t["final_loss"].items()]
    return "\n".join(out)


def resilience(d: dict) -> str:
    m = d["meta"]
    dg = d["digits"]
    out = [f"Digits: {m['digits']['seeds']} training seeds, {m['digits']['trials_per_layer_and_setting']} runs per layer and "
           f"setting, each run one flipped bit in every good test image; {m['date']}.", "",
           f"Accuracy (mean over seeds): standard head {dg['accuracy']['standard']:.2%}, text-guided head "
           f"{dg['accuracy']['text']:.2%}. Golden top-1/top-2 softmax margin: standard {dg['golden_top2_margin']['standard']:.4f}, "
           f"text-guided {dg['golden_top2_margin']['text']:.4f}.", "",
           "| fault | last layer, standard | last layer, text-guided | gain | overall, standard | overall, text-guided | gain |",
           "|---|---|---|---|---|---|---|"]
    for name, s in dg["settings"].items():
        out.append(f"| {name} | {s['standard']['per_layer']['last layer']['rate']:.3%} | {s['text']['per_layer']['last layer']['rate']:.3%} | "
                   f"{s['gain_last_layer']:.2f}x | {s['standard']['overall']['rate']:.3%} | {s['text']['overall']['rate']:.3%} | "
                   f"{s['gain_overall']:.2f}x |")
    out += ["", "Per layer (mismatch rate):", "", "| fault | head | conv1 | conv2 | fc1 | fc2 | last layer |", "|---|---|---|---|---|---|---|"]
    for name, s in dg["settings"].items():
        for head in ("standard", "text"):
            pl = s[head]["per_layer"]
            out.append(f"| {name} | {head} | " + " | ".join(f"{pl[k]['rate']:.3%}" if k in pl else "(= last)"
                                                          for k in ("conv1", "conv2", "fc1", "fc2", "last layer")) + " |")
    lm = m["lm"]
    out += ["", f"SmolLM2-135M, {lm['tokens']} tokens of {lm['text']} ({lm['windows']} windows), {lm['trials_per_bit']} runs per "
            f"bit position, each run one flipped bit in one random weight of one random decoder linear layer.", "",
            "| stored as | golden ppl | mismatch, random stored bit | element code bits (mean) | scale bits (mean) | selector bits (mean) | worst bit |",
            "|---|---|---|---|---|---|---|"]
    for st, r in d["formats"].items():
        by = r["mean_rate_by_site"]
        w = r["worst_bit"]
        el = by.get("codes", by.get("value"))
        out.append(f"| {st} | {r['golden_perplexity']:.3f} | {r['random_bit_rate']:.3%} | {el:.3%} | "
                   f"{by['scales']:.3%} | " if "scales" in by else f"| {st} | {r['golden_perplexity']:.3f} | {r['random_bit_rate']:.3%} | {el:.3%} | - | ")
        out[-1] += (f"{by['selectors']:.3%} | " if "selectors" in by else "- | ") + f"{w['site']} bit {w['bit']}: {w['rate']:.2%} |"
    out += ["", "Per bit position (next-token mismatch rate; median perplexity change):", "",
            "| stored as | site | " + " | ".join(f"bit {i}" for i in range(16)) + " |", "|---|---|" + "---|" * 16]
    for st, r in d["formats"].items():
        for site in dict.fromkeys(x["site"] for x in r["rows"]):
            rows = {x["bit"]: x for x in r["rows"] if x["site"] == site}
            out.append(f"| {st} | {site} | " + " | ".join(
                f"{rows[i]['rate']:.1%} ({rows[i]['median_delta_ppl']:+.2g})" if i in rows else "" for i in range(16)) + " |")
    lr = d["lm_layers_mxfp4"]
    out += ["", f"SmolLM2-135M in mxfp4, {lr['overall']['runs']} runs of one flipped code bit, by layer kind:", "",
            "| layer kind | runs | mismatch rate | median Δppl |", "|---|---|---|---|"]
    for k, v in sorted(lr["per_group"].items()):
        out.append(f"| `{k}` | {v['runs']} | {v['rate']:.3%} | {v['median_delta_ppl']:+.3g} |")
    out.append(f"| overall | {lr['overall']['runs']} | {lr['overall']['rate']:.3%} | {lr['overall']['median_delta_ppl']:+.3g} |")
    return "\n".join(out)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    render = {"numerics": numerics, "resilience": resilience}.get(which)
    if render is None:
        sys.exit("usage: bench/analysis_tables.py numerics|resilience")
    print(render(json.loads((RESULTS / f"{which}.json").read_text())))


if __name__ == "__main__":
    main()
