"""Fault injection: text-guided vs standard classifier heads, and stored formats of an LM.

    .venv/bin/python bench/resilience.py            # about 24 minutes on 2 shared cores (1,411 s: meta.seconds)
    .venv/bin/python bench/resilience.py --quick    # a smoke run

Writes bench/results/resilience.json, resilience_digits.png, resilience_bits.png,
resilience_lm_layers.png. Studies:
1. digits: a small CNN on scikit-learn's handwritten digits with a standard head and a
   text-guided head (all-MiniLM-L6-v2 embeddings of class descriptions), trained with
   several seeds; GoldenEye-style campaigns on both: one flipped bit in one fp32 output
   value per image (uniform bit), with and without the range detector, and one flipped
   bit of one fp32 weight per run; mismatch rate per layer, in the last (critical) layer
   and overall.
2. formats: SmolLM2-135M with its decoder linear layers stored in fp16, int4, mxfp4 and
   nxfp4; every bit position of every stored site (but the one per-tensor scale) flipped --trials-per-bit times in a
   random weight of a random layer; next-token mismatch and perplexity change.
3. LM layers: one mxfp4-stored SmolLM2, random code bits, mismatch per layer kind.
Single-threaded torch (set here): on a contended 2-core machine it is the faster choice.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elastiq.labs.analysis.inject import Injector, profile_ranges  # noqa: E402
from elastiq.labs.analysis.resilience import CampaignSpec, bit_study, classifier_campaign, lm_campaign, plot  # noqa: E402
from elastiq.labs.analysis.textguided import class_embeddings, digits_split, good_inputs, train_digits  # noqa: E402
from elastiq.cache import atomic_write_bytes, atomic_write_text  # noqa: E402

SETTINGS = {
    "activation fp32, range detector": dict(kind="activation", range_detector=True),
    "activation fp32": dict(kind="activation"),
    "weight fp32": dict(kind="weight"),
}


def digits_study(seeds, trials, log) -> dict:
    emb = class_embeddings()
    data = digits_split(0)
    pooled = {h: {s: {} for s in SETTINGS} for h in ("standard", "text")}
    acc = {"standard": [], "text": []}
    margins = {"standard": [], "text": []}
    for seed in seeds:
        for head in ("standard", "text"):
            model, a = train_digits(head, data, emb, seed=seed)
            acc[head].append(a)
            x = good_inputs(model, data[2], data[3])
            layers = ["conv1", "conv2", "fc1", "fc2"] + (["head"] if head == "text" else [])
            ranges = profile_ranges(model, layers, [data[0]])
            inj = Injector(model, layers=layers)
            for name, kw in SETTINGS.items():
                r = classifier_campaign(model, x, CampaignSpec(layers=layers, trials=trials, seed=seed, **kw),
                                        injector=inj, ranges=ranges)
                margins[head].append(r["golden_top2_margin"])
                for layer, v in r["per_layer"].items():
                    key = "last layer" if layer == model.critical_layer else layer
                    p = pooled[head][name].setdefault(key, {"injections": 0, "mismatches": 0})
                    p["injections"] += v["injections"]
                    p["mismatches"] += v["mismatches"]
            log(f"digits seed {seed} {head}: accuracy {a:.4f}, {len(x)} good test images")
    out = {"accuracy": {h: statistics.fmean(v) for h, v in acc.items()}, "accuracy_per_seed": acc,
           "golden_top2_margin": {h: statistics.fmean(v) for h, v in margins.items()}, "settings": {}}
    for name in SETTINGS:
        per = {}
        for head in ("standard", "text"):
            layers = pooled[head][name]
            rates = {k: v["mismatches"] / v["injections"] for k, v in layers.items()}
            tot_i = sum(v["injections"] for v in layers.values())
            tot_m = sum(v["mismatches"] for v in layers.values())
            per[head] = {"per_layer": {k: {"rate": rates[k], **layers[k]} for k in layers},
                         "overall": {"rate": tot_m / tot_i, "injections": tot_i, "mismatches": tot_m}}
        s, t = per["standard"], per["text"]
        out["settings"][name] = {
            **per,
            "gain_last_layer": _ratio(s["per_layer"]["last layer"]["rate"], t["per_layer"]["last layer"]["rate"]),
            "gain_overall": _ratio(s["overall"]["rate"], t["overall"]["rate"]),
        }
    return out


def _ratio(a, b):
    return a / b if b else (float("inf") if a else 1.0)


def plot_digits(study: dict, path: Path) -> None:
    res = {}
    for name in ("activation fp32, range detector", "weight fp32"):
        for head in ("standard", "text"):
            res[f"{head} head, {name}"] = {"per_layer": study["settings"][name][head]["per_layer"]}
    plot(res, path, "digits CNN: mismatch (SDC) rate per layer, one flipped bit", by="per_layer")


def plot_bits(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    storages = list(dict.fromkeys(r["storage"] for r in rows))
    fig, axes = plt.subplots(1, len(storages), figsize=(3.2 * len(storages), 3.6), sharey=True)
    for ax, st in zip(axes, storages):
        labels, vals = [], []
        for r in rows:
            if r["storage"] == st:
                labels.append(f"{r['site'][0]}{r['bit']}")
                vals.append(r["rate"])
        ax.bar(range(len(vals)), vals)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_title(st)
    axes[0].set_ylabel("next-token mismatch rate")
    fig.suptitle("SmolLM2-135M: one flipped stored bit (c=code, s=scale, v=value, s..=selector)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def format_study(model, ids, storages, trials_per_bit, log) -> dict:
    out = {}
    for st in storages:
        t = time.perf_counter()
        r = bit_study(copy.deepcopy(model), ids, st, trials_per_bit=trials_per_bit, exclude=("tensor_scale",))
        # a random memory bit of the stored layer lands in a site in proportion to the bits the site holds
        first = r["sites"]
        held = {s: v["entries_in_first_layer"] * v["bits"] for s, v in first.items() if any(x["site"] == s for x in r["rows"])}
        total = sum(held.values())
        by_site = {s: statistics.fmean(x["rate"] for x in r["rows"] if x["site"] == s) for s in held}
        r["mean_rate_by_site"] = by_site
        r["random_bit_rate"] = sum(by_site[s] * held[s] / total for s in held)
        r["worst_bit"] = max(r["rows"], key=lambda x: x["rate"])
        out[st] = r
        log(f"format {st}: random-bit mismatch {r['random_bit_rate']:.4%}, {time.perf_counter() - t:.0f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100, help="digits: runs per layer and setting")
    ap.add_argument("--trials-per-bit", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--formats", default="fp16,int4,mxfp4,nxfp4")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    q = args.quick
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    digits = digits_study(range(1 if q else args.seeds), 5 if q else args.trials, log)

    import elastiq
    from elastiq.data import load_text, tokenize

    model, tok = elastiq.load("smollm2-135m")
    tokens = 64 if q else args.tokens
    ids = tokenize(tok, load_text("wiki-eval"))[:tokens].view(-1, 64)
    fmts = args.formats.split(",")[:2] if q else args.formats.split(",")
    formats = format_study(model, ids, fmts, 1 if q else args.trials_per_bit, log)

    lm_model = copy.deepcopy(model)
    from elastiq.quant import quantize_model

    quantize_model(lm_model, {"model.layers.*": "mxfp4"}, progress=False)
    inj = Injector(lm_model, decoded=True, layers=["model.layers.*"])
    lm_layers = lm_campaign(lm_model, ids, CampaignSpec(layers=["model.layers.*"], site="codes", trials=6 if q else 70,
                                                        per_layer=False, seed=0), injector=inj)
    log("LM per-layer campaign done")

    std, txt = "standard", "text"
    main_setting = digits["settings"]["activation fp32, range detector"]
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": 1, "quick": q,
                 "digits": {"seeds": 1 if q else args.seeds, "trials_per_layer_and_setting": 5 if q else args.trials,
                            "split": "scikit-learn digits, 70/30 stratified (seed 0), test images the model gets right"},
                 "lm": {"model": "smollm2-135m", "tokens": int(ids.numel()), "windows": int(ids.shape[0]),
                        "text": "wiki-eval", "trials_per_bit": 1 if q else args.trials_per_bit,
                        "layers": "model.layers.* (decoder linear layers; the head and embeddings not injected)"},
                 "seconds": round(time.perf_counter() - t0)},
        "text_guided_gain": main_setting["gain_last_layer"],
        "text_guided_gain_overall": main_setting["gain_overall"],
        "accuracy_standard": digits["accuracy"][std],
        "accuracy_text_guided": digits["accuracy"][txt],
        "digits": digits,
        "formats": formats,
        "random_bit_mismatch_by_format": {k: v["random_bit_rate"] for k, v in formats.items()},
        "lm_layers_mxfp4": {k: lm_layers[k] for k in ("spec", "tokens", "golden_perplexity", "overall", "per_group")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "resilience.json", json.dumps(result, indent=2, default=str))
    plot_digits(digits, args.out / "resilience_digits.png")
    plot_bits([r for v in formats.values() for r in v["rows"]], args.out / "resilience_bits.png")
    plot({"mxfp4 codes": lm_layers}, args.out / "resilience_lm_layers.png",
         "SmolLM2-135M (mxfp4): next-token mismatch per layer kind, one flipped code bit", by="per_group")
    print(json.dumps({k: result[k] for k in ("text_guided_gain", "text_guided_gain_overall", "accuracy_standard",
                                             "accuracy_text_guided", "random_bit_mismatch_by_format")}, indent=2))
    for name, s in digits["settings"].items():
        print(f"{name}: last layer {s[std]['per_layer']['last layer']['rate']:.4%} vs {s[txt]['per_layer']['last layer']['rate']:.4%}"
              f" (gain {s['gain_last_layer']:.2f}x), overall {s[std]['overall']['rate']:.4%} vs {s[txt]['overall']['rate']:.4%}"
              f" (gain {s['gain_overall']:.2f}x)")
    log("done")


if __name__ == "__main__":
    main()
