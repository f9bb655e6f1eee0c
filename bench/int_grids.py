"""Round-to-nearest perplexity of SmolLM2-135M on integer grids that differ only in their
levels, groups of 128 with an FP16 scale: the catalog's symmetric intN (2^N - 1 levels),
every code without a zero (uniformN, levels ±0.5 … ), every code with zero on one fixed
side (intNneg, two's complement as GPTQ's symmetric intN), and every code with the short
side picked per group (the catalog's int4x16 / int3x8). Why int4x16 and int3x8 are built
as they are (docs/calibrate.md).

    nice .venv/bin/python bench/int_grids.py            # writes bench/results/int_grids.json

Protocol as bench/quality.py: the first 4,096 tokens of wiki-eval, windows of 1,024 tokens.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPECS = {  # name: (format, levels)
    "int4": ("int4", 15), "int4 no zero": ("elem=uniform4,block=128,scale=fp16,round=even", 16),
    "int4 -8..7": ("elem=int4neg,block=128,scale=fp16,round=even", 16), "int4x16": ("int4x16", 16),
    "int3": ("int3", 7), "int3 -4..3": ("elem=int3neg,block=128,scale=fp16,round=even", 8), "int3x8": ("int3x8", 8),
}


def main() -> None:
    import elastiq
    from elastiq import formats as F
    from elastiq.data import load_text
    from elastiq.evaluate import evaluate
    from elastiq.quant import quantize_model

    torch.set_num_threads(1)
    model, tok = elastiq.load("smollm2-135m")
    model.eval()
    text = load_text("wiki-eval")
    rows = []
    for name, (fmt, levels) in SPECS.items():
        q = copy.deepcopy(model)
        quantize_model(q, fmt, progress=False)
        ppl = evaluate(q, tok, text, max_tokens=4096, context=1024, progress=False).perplexity
        rows.append({"name": name, "format": fmt, "levels": levels, "bits": F.bits_per_element(fmt), "ppl_rtn": ppl})
        print(json.dumps(rows[-1]), flush=True)
        del q
    out = {"model": "smollm2-135m", "text": "wiki-eval", "max_tokens": 4096, "context": 1024, "threads": 1,
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    (ROOT / "bench/results/int_grids.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
