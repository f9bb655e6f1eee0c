"""The elastiq model in lm-evaluation-harness against elastiq.perplexity, on the built-in text.

    .venv/bin/python bench/interop_lm_eval.py                      # nxfp4 (embedding too), 8192 tokens, context 1024
    .venv/bin/python bench/interop_lm_eval.py --max-tokens 2048 --no-docs

The first --max-tokens tokens of wiki-eval, scored by lm-eval's loglikelihood_rolling through
`elastiq.interop.lm_eval_model` (a local task: nothing is downloaded) and by `elastiq.perplexity`
at the same context, two ways:
- as documents of context - 1 tokens: lm-eval scores each in one window after its prefix token,
  and elastiq.perplexity scores each with that token before it (bos_id): the same tokens with
  the same context, so the two must agree;
- as one document: lm-eval's convention (its first window starts with the prefix token, and the
  first token is scored from it) against elastiq's default (no prefix token; the first token is
  not scored), reported to show what that convention changes.
Then the multiple-choice task of tests/data/lm_eval. Writes bench/results/lm_eval.json and the
table in docs/interop.md (between <!-- lm_eval:begin --> and <!-- lm_eval:end -->).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def table(d: dict) -> str:
    s, o = d["same_windows"], d["one_document"]
    return "\n".join([
        f"{d['model']} packed in {d['format']} (embedding {d['embedding']}), {d['tokens']} tokens of {d['text']}, "
        f"context {d['context']}, lm-eval {d['lm_eval']}; {d['date']}.", "",
        "| scoring | elastiq.perplexity | lm-eval loglikelihood_rolling, per token | difference |", "|---|---|---|---|",
        f"| {s['documents']} documents of ≤ {d['context'] - 1} tokens, each after the prefix token "
        f"({s['tokens']} tokens scored) | {s['elastiq_ppl']:.4f} | {s['lm_eval_ppl']:.4f} | {100 * s['rel_diff']:+.4f}% |",
        f"| one document: elastiq's default against lm-eval's convention ({o['elastiq_tokens']} and "
        f"{o['lm_eval_tokens']} tokens scored) | {o['elastiq_ppl']:.4f} | {o['lm_eval_ppl']:.4f} | {100 * o['rel_diff']:+.3f}% |",
        "", f"elastiq_mc accuracy (8 questions, tests/data/lm_eval): {d['mc_acc']:.3f}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--format", default="nxfp4")
    ap.add_argument("--embedding", default="same")
    ap.add_argument("--text", default="wiki-eval")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/lm_eval.json")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from elastiq.data import load_text, tokenize
    from elastiq.evaluate import evaluate
    from elastiq.interop.lm_eval_model import ElastiqLM, documents, rolling_perplexity

    torch.set_num_threads(args.threads)
    lm = ElastiqLM(pretrained=args.model, format=args.format, embedding=args.embedding, max_length=args.context)
    tok = lm.tokenizer
    ids = tokenize(tok, load_text(args.text), args.max_tokens).tolist()
    docs = documents(tok, ids, args.context - 1)
    parts = [evaluate(lm.model, tok, doc, context=args.context, bos_id=lm.prefix_token_id, progress=False) for doc in docs]
    scored = sum(p.tokens for p in parts)
    ours_docs = math.exp(sum(math.log(p.perplexity) * p.tokens for p in parts) / scored)
    whole = tok.decode(ids)
    ours = evaluate(lm.model, tok, whole, context=args.context, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        theirs_docs, _ = rolling_perplexity(lm, docs, tmp)
        theirs, _ = rolling_perplexity(lm, [whole], tmp)
    os.chdir(ROOT)  # the multiple-choice task names its data relative to the repository root
    mc = simple_evaluate(model=lm, tasks=["elastiq_mc"], bootstrap_iters=0,
                         task_manager=TaskManager(include_path=str(ROOT / "tests/data/lm_eval"), include_defaults=False))
    d = {"model": args.model, "format": args.format, "embedding": args.embedding, "text": args.text,
         "tokens": len(ids), "context": args.context,
         "same_windows": {"documents": len(docs), "tokens": scored, "elastiq_ppl": ours_docs, "lm_eval_ppl": theirs_docs,
                          "rel_diff": theirs_docs / ours_docs - 1},
         "one_document": {"elastiq_tokens": ours.tokens, "lm_eval_tokens": len(tok(whole, add_special_tokens=False)["input_ids"]),
                          "elastiq_ppl": ours.perplexity, "lm_eval_ppl": theirs, "rel_diff": theirs / ours.perplexity - 1},
         "mc_acc": mc["results"]["elastiq_mc"]["acc,none"], "lm_eval": lm_eval.__version__,
         "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(d, indent=2) + "\n")
    print(table(d))
    if not args.no_docs:
        from markdown import write_section  # bench/markdown.py (bench/ is this script's folder)

        write_section(ROOT / "docs/interop.md", "lm_eval", table(d))


if __name__ == "__main__":
    main()
