"""One long LREC run, to see where correction of a format levels off (docs/lrec.md, int2).

    .venv/bin/python -u bench/lrec_long.py --format int2 --rank 32 --steps 320 --threads 1

The float model scores --calib-tokens of wiki-calib (its top-64 next-token log-probs, in
256-token windows); the packed copy gets rank --rank bfloat16 adapters from the SVD of
each layer's quantization error and trains --steps steps (bfloat16 AdamW moments, lr
1e-3, warm-up then cosine, one window per step). Perplexity on the first 4096 tokens of
wiki-eval is measured after the SVD start and at the end; the KL loss is averaged over
every 20 steps. Writes bench/results/lrec_long_<format>.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default="int2")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=320)
    ap.add_argument("--calib-tokens", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import elastiq
    from elastiq.data import load_text
    from elastiq.evaluate import evaluate
    from elastiq.lrec import add_adapters, correct, teacher_targets
    from elastiq.options import LrecOptions

    torch.set_num_threads(args.threads)
    fp, tok = elastiq.load("smollm2-135m")
    text = load_text("wiki-eval")

    def ppl(m):
        return evaluate(m, tok, text, max_tokens=4096, context=1024, progress=False).perplexity

    targets = teacher_targets(fp, tok, load_text("wiki-calib"), context=256, max_tokens=args.calib_tokens, progress=False)
    print(f"teacher: {len(targets)} windows, {targets.tokens} tokens", flush=True)
    q = elastiq.quantize(copy.deepcopy(fp), args.format, progress=False)
    add_adapters(q, args.rank, init="svd", float_model=fp, dtype="bfloat16")
    del fp
    start = ppl(q)
    print(f"perplexity after the SVD start: {start:.1f}", flush=True)
    t0 = time.perf_counter()
    log = correct(q, targets, LrecOptions(steps=args.steps, optimizer_state="bfloat16"), progress=False)
    seconds = time.perf_counter() - t0
    losses = log.losses
    curve = [sum(losses[i:i + 20]) / len(losses[i:i + 20]) for i in range(0, len(losses), 20)]
    end = ppl(q)
    print("KL every 20 steps:", [round(x, 3) for x in curve])
    print(f"{seconds:.0f} s of training; perplexity {start:.1f} -> {end:.2f}")
    out = ROOT / f"bench/results/lrec_long_{args.format}.json"
    out.write_text(json.dumps({
        "format": args.format, "rank": args.rank, "steps": args.steps, "calib_tokens": targets.tokens,
        "threads": args.threads, "ppl_svd_start": start, "ppl_after": end, "kl_every_20_steps": curve,
        "train_seconds": seconds, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
