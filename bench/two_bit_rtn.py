"""Round-to-nearest at 2 and 3 bits on SmolLM2-135M: which grid and which block scale.

    .venv/bin/python bench/two_bit_rtn.py          # ~4 minutes on 2 threads

The catalog's ``int2`` is symmetric (levels -1, 0, 1 times amax: the fourth code is never
produced, as in every symmetric intN preset), so at two bits it is ternary. This study
casts every decoder linear layer in groups of 128 along the input dimension, each group
scaled by an FP16 scale, onto: the 3 levels of ``int2``; 4 evenly spaced levels (-1,
-1/3, 1/3, 1: all four codes used); and int3's 7 levels; each with the scale set by the
group's largest magnitude (as the catalog does) or by the clip ratio (0.2 to 1.0 of it)
with the least squared error in the group. It reports the weights' relative RMS error and
the perplexity on the first 4096 tokens of wiki-eval. The amax rows cast exactly as the\ncatalog's presets do (checked element by element in tests/test_lrec.py). Writes bench/results/two_bit_rtn.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name: (levels of the grid, relative to the group scale; candidate clip ratios)
    "int2, 3 levels, amax scale (the catalog's int2)": ([-1.0, 0.0, 1.0], [1.0]),
    "int2, 3 levels, least-error scale": ([-1.0, 0.0, 1.0], [x / 20 for x in range(4, 21)]),
    "2 bits, 4 levels, amax scale": ([-1.0, -1 / 3, 1 / 3, 1.0], [1.0]),
    "2 bits, 4 levels, least-error scale": ([-1.0, -1 / 3, 1 / 3, 1.0], [x / 20 for x in range(4, 21)]),
    "int3, 7 levels, amax scale (the catalog's int3)": ([float(i) for i in range(-3, 4)], [1.0]),
    "int3, 7 levels, least-error scale": ([float(i) for i in range(-3, 4)], [x / 20 for x in range(4, 21)]),
}


def cast(w: torch.Tensor, levels: list[float], clips: list[float], block: int = 128) -> torch.Tensor:
    """``w`` (out, in) rounded to the nearest level times each group's FP16 scale, the
    clip ratio per group being the one of ``clips`` with the least squared error."""
    out_f, in_f = w.shape
    pad = -in_f % block  # groups run along each row; the last one of a row may be short (576 = 4.5 x 128)
    g = torch.nn.functional.pad(w, (0, pad)).reshape(-1, block)
    amax = g.abs().amax(1, keepdim=True)
    lv = torch.tensor(levels)
    best, best_err = None, None
    for c in clips:
        scale = (amax * c / lv.max()).half().float().clamp(min=torch.finfo(torch.float16).tiny)
        q = _nearest(g * (1.0 / scale), lv) * scale  # times the reciprocal, as the catalog's cast
        err = ((q - g) ** 2).sum(1, keepdim=True)
        if best is None:
            best, best_err = q, err
        else:
            better = err < best_err
            best, best_err = torch.where(better, q, best), torch.where(better, err, best_err)
    return best.reshape(out_f, in_f + pad)[:, :in_f]


def _nearest(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The nearest level; ties as the catalog casts them: to even on an integer grid, else
    to the level of smaller magnitude."""
    if torch.equal(levels, torch.arange(levels.min(), levels.max() + 1)):
        return torch.round(x).clamp(levels.min(), levels.max())
    by_size = levels[levels.abs().argsort(stable=True)]  # argmin keeps the first of equals
    return by_size[(x[..., None] - by_size).abs().argmin(-1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import elastiq
    from elastiq.data import load_text
    from elastiq.evaluate import evaluate

    torch.set_num_threads(args.threads)
    fp, tok = elastiq.load("smollm2-135m")
    text = load_text("wiki-eval")

    def ppl(m):
        return evaluate(m, tok, text, max_tokens=4096, context=1024, progress=False).perplexity

    rows = {"float": {"ppl": ppl(fp), "relative_rmse": 0.0}}
    for name, (levels, clips) in VARIANTS.items():
        m = copy.deepcopy(fp)
        num = den = 0.0
        with torch.no_grad():
            for layer in m.model.layers.modules():
                if isinstance(layer, nn.Linear):
                    w = layer.weight
                    q = cast(w, levels, clips)
                    num += float(((q - w) ** 2).sum())
                    den += float((w ** 2).sum())
                    w.copy_(q)
        rows[name] = {"ppl": ppl(m), "relative_rmse": (num / den) ** 0.5}
        print(f"{name:50s} relative RMS error {rows[name]['relative_rmse']:.3f}  perplexity {rows[name]['ppl']:.4g}", flush=True)
        del m
    out = ROOT / "bench/results/two_bit_rtn.json"
    out.write_text(json.dumps({"rows": rows, "eval_tokens": 4096, "torch": torch.__version__,
                               "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
