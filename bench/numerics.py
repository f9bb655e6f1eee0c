"""Attention numerics: deviation from a float64 golden, and weight drift in training.

    .venv/bin/python bench/numerics.py            # 12 to 15 minutes on 2 shared cores
    .venv/bin/python bench/numerics.py --quick    # a smoke run (small sizes)

Writes bench/results/numerics.json, numerics_deviation.png, numerics_tiles.png,
numerics_training.png. Studies:
1. sweep: baseline, flash (tiles 64, 256) and PyTorch SDPA at bf16 / fp16 / fp32 over
   sequence lengths, and baseline / flash (tiles 16, 64) / SDPA at bf16 at 8192 tokens; 2. tiles: flash at bf16 over tile sizes at the longest length;
   3. head dims; 4. elastiq formats as the attention precision; 5. attribution: which
   precision makes flash deviate; 6. training: Wasserstein distance of a tiny LM's weights
   between runs that differ in attention algorithm, precision or seed.
Single-threaded torch (set here): on a contended 2-core machine it is the faster choice.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elastiq.labs.analysis.numerics import attribution, plot_deviation, sweep  # noqa: E402
from elastiq.labs.analysis.training import TrainSetup, weight_study  # noqa: E402
from elastiq.cache import atomic_write_bytes, atomic_write_text  # noqa: E402


def plot_training(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in study["curves"].items():
        pts = [(c["step"], c["wasserstein"]) for c in curve if c["wasserstein"] > 0]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("Wasserstein distance of weights (mean over tensors)")
    ax.set_title("tiny byte-level LM: weight drift between training runs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    q = args.quick
    seeds = 1 if q else args.seeds
    lens = [64, 128] if q else [128, 512, 2048]
    longest = lens[-1]
    very_long = 256 if q else 8192
    t0 = time.perf_counter()
    timings = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"{name}: {timings[name]} s", flush=True)
        return out

    main_rows = timed("sweep", lambda: sweep(["baseline", "flash", "sdpa", "sdpa-math"], ["bf16", "fp16", "fp32"], lens,
                                             blocks=[64], seeds=seeds))
    long_rows = timed("long", lambda: sweep(["baseline", "flash", "sdpa"], ["bf16"], [very_long], blocks=[16, 64],
                                            seeds=min(seeds, 2)))
    tile_rows = timed("tiles", lambda: sweep(["flash"], ["bf16"], [longest], blocks=[16, 32, 64, 128, 256] if not q else [16, 64],
                                             seeds=seeds))
    dim_rows = timed("head_dims", lambda: sweep(["baseline", "flash", "sdpa"], ["bf16"], [512 if not q else 64],
                                                head_dims=[32, 64, 128], blocks=[64], seeds=seeds))
    fmt_rows = timed("formats", lambda: sweep(["baseline", "flash"], ["mxfp8_e4m3", "mxfp6_e2m3", "nxfp8", "fp8_e4m3"],
                                              [512 if not q else 64], blocks=[64], seeds=seeds))
    att = timed("attribution", lambda: attribution(seq_len=longest, block=64, seeds=seeds))
    setup = TrainSetup(steps=20 if q else args.steps, every=5 if q else 25)
    study = timed("training", lambda: weight_study(setup))

    def dev(rows, impl, block=None, prec="bf16", seq=longest):
        return next(r["max_abs"] for r in rows if r["impl"] == impl and r["precision"] == prec and r["seq_len"] == seq
                    and (block is None or r["block"] == block))

    base = dev(main_rows, "baseline")
    by_tile = {str(r["block"]): r["max_abs"] / base for r in tile_rows}
    long_base = dev(long_rows, "baseline", seq=very_long)
    final = {name: curve[-1]["wasserstein"] for name, curve in study["curves"].items()}
    mean_w = {name: sum(c["wasserstein"] for c in curve[1:]) / max(1, len(curve) - 1) for name, curve in study["curves"].items()}
    flash_pair, low_pair = "flash-bf16attn vs baseline-bf16attn", "lowprec-bf16 vs baseline"
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "machine": platform.machine(), "seeds": seeds, "seq_lens": lens, "long_seq_len": very_long,
                 "long_seeds": min(seeds, 2), "quick": q,
                 "seconds": timings, "inputs": "Q, K, V ~ N(0, 1), one head; golden = baseline attention in float64"},
        # the headline: flash (tile 64) over baseline, bf16, at the longest sequence measured
        "flash_vs_baseline_bf16": dev(long_rows, "flash", 64, seq=very_long) / long_base,
        "flash_vs_baseline_bf16_tile16": dev(long_rows, "flash", 16, seq=very_long) / long_base,
        "sdpa_vs_baseline_bf16": dev(long_rows, "sdpa", seq=very_long) / long_base,
        f"flash_vs_baseline_bf16_by_tile_at_{longest}": by_tile,
        "lowprec_vs_flash_wasserstein": final[low_pair] / final[flash_pair],
        "lowprec_vs_flash_wasserstein_mean_over_training": mean_w[low_pair] / mean_w[flash_pair],
        "final_wasserstein": final,
        "sweep": main_rows, "long": long_rows, "tiles": tile_rows, "head_dims": dim_rows, "formats": fmt_rows, "attribution": att,
        "training": study,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "numerics.json", json.dumps(result, indent=2))
    plot_deviation(main_rows, args.out / "numerics_deviation.png",
                   f"attention deviation from float64 (N(0,1) inputs, d=64, {seeds} seeds)")
    plot_deviation(tile_rows + [r for r in main_rows if r["impl"] == "baseline" and r["precision"] == "bf16"],
                   args.out / "numerics_tiles.png", "flash at bf16: tile size")
    plot_training(study, args.out / "numerics_training.png")
    print(json.dumps({k: result[k] for k in ("flash_vs_baseline_bf16", "flash_vs_baseline_bf16_tile16",
                                             f"flash_vs_baseline_bf16_by_tile_at_{longest}",
                                             "sdpa_vs_baseline_bf16", "lowprec_vs_flash_wasserstein",
                                             "lowprec_vs_flash_wasserstein_mean_over_training", "final_wasserstein")},
                     indent=2))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
