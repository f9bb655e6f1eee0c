"""The elastiq model in lm-evaluation-harness against elastiq.perplexity, on the built-in text.

    .venv/bin/python bench/interop_lm_eval.py                      # nxfp4 (embedding too), 8192 tokens, context 1024
    .venv/bin/python bench/interop_lm_eval.py --max-tokens 2048 --no-docs

One document, the first --max-tokens tokens of wiki-eval (cut at a token boundary and
decoded), scored by lm-eval's loglikelihood_rolling through `elastiq.interop.lm_eval_model`
(a local task: nothing is downloaded) and by `elastiq.perplexity` at the same context; then
the multiple-choice task of tests/data/lm_eval. Writes bench/results/lm_eval.json and the
table in docs/interop.md (between <!-- lm_eval:begin --> and <!-- lm_eval:end -->).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def table(d: dict) -> str:
    return "\n".join([
        f"{d['model']} packed in {d['format']} (embedding {d['embedding']}), {d['tokens']} tokens of {d['text']}, "
        f"context {d['context']}, lm-eval {d['lm_eval']}; {d['date']}.", "",
        "| measure | value |", "|---|---|",
        f"| elastiq.perplexity | {d['elastiq_ppl']:.4f} |",
        f"| lm-eval loglikelihood_rolling, per token | {d['lm_eval_ppl']:.4f} |",
        f"| difference | {100 * d['rel_diff']:+.3f}% (goal: within 0.5%) |",
        f"| elastiq_mc accuracy (8 questions, tests/data/lm_eval) | {d['mc_acc']:.3f} |"])


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

    import elastiq
    from elastiq.data import load_text, tokenize
    from elastiq.interop.lm_eval_model import ElastiqLM, text_task, token_perplexity

    torch.set_num_threads(args.threads)
    lm = ElastiqLM(pretrained=args.model, format=args.format, embedding=args.embedding, max_length=args.context)
    tok = lm.tokenizer
    doc = tok.decode(tokenize(tok, load_text(args.text), args.max_tokens).tolist())
    ours = elastiq.perplexity(lm.model, tok, doc, context=args.context, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "text.jsonl"
        data.write_text(json.dumps({"text": doc}) + "\n")
        out = simple_evaluate(model=lm, tasks=[text_task(data)], task_manager=TaskManager(include_defaults=False),
                              log_samples=True, bootstrap_iters=0)
        theirs = token_perplexity(out["samples"]["elastiq_text"], tok)
    os.chdir(ROOT)  # the multiple-choice task names its data relative to the repository root
    mc = simple_evaluate(model=lm, tasks=["elastiq_mc"], bootstrap_iters=0,
                         task_manager=TaskManager(include_path=str(ROOT / "tests/data/lm_eval"), include_defaults=False))
    d = {"model": args.model, "format": args.format, "embedding": args.embedding, "text": args.text,
         "tokens": len(tok(doc, add_special_tokens=False)["input_ids"]), "context": args.context,
         "elastiq_ppl": ours, "lm_eval_ppl": theirs, "rel_diff": theirs / ours - 1,
         "word_perplexity": out["results"]["elastiq_text"]["word_perplexity,none"],
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
