"""GGUF export, checked in llama.cpp: the built-in model packed in int4 and in int8, and one
option of an elastic artifact near 100 MiB, exported with `elastiq.interop.export_gguf`,
loaded by llama-cpp-python, scored on the same tokens as elastiq scores the same weights.

    .venv/bin/python bench/export.py --artifact ~/.cache/elastiq/elastic/smollm2-135m-v1
    .venv/bin/python bench/export.py --artifact A --max-tokens 2048 --no-docs     # a quick run

The protocol is bench/quality.py's: the built-in wiki-eval text, its first --max-tokens
tokens, windows of --context tokens (elastiq.data.windows), each token scored once.
elastiq: elastiq.evaluate on the packed model. llama.cpp: the same windows evaluated with
logits_all, the same log-softmax and mean. Decode speed: --new-tokens greedy tokens after a
--prompt-tokens prompt, --threads threads (1: see its help), timed as bench/quality.py times llama.cpp.

Writes bench/results/export.json and the table in docs/interop.md (between its
<!-- export:begin --> and <!-- export:end --> lines).
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs/interop.md"


def llama_cpp_perplexity(path: Path, wins, context: int, threads: int) -> float:
    """Perplexity in llama.cpp over elastiq's windows: each window evaluated from a fresh
    context with logits for every position, the scored positions' log-softmax."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=context, n_batch=context, n_ubatch=context, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False)
    nll, count = 0.0, 0
    for win, n_scored in wins:
        llm.reset()
        llm.eval(win.tolist())
        logits = np.asarray(llm.scores[: len(win)], dtype=np.float64)[-n_scored - 1:-1]
        top = logits.max(1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
        nll -= float(logp[np.arange(n_scored), win[-n_scored:].numpy()].sum())
        count += n_scored
    llm.close()
    return math.exp(nll / count)


def llama_cpp_decode(path: Path, prompt: list[int], new_tokens: int, threads: int) -> float:
    """Greedy decode tokens per second after ``prompt`` (the prompt's prefill is not timed)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(prompt) + new_tokens + 8, n_batch=len(prompt), n_threads=threads,
                n_threads_batch=threads, verbose=False)
    gen = llm.generate(prompt, temp=0.0, top_k=1, reset=True)
    next(gen)  # the prompt, then the first token
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        next(gen)
    tps = new_tokens / (time.perf_counter() - t0)
    llm.close()
    return tps


def tokenizer_agrees(path: Path, tokenizer, text: str) -> bool:
    """llama.cpp's tokenization of a stretch of the text, from the exported metadata, is elastiq's."""
    from llama_cpp import Llama

    from elastiq.data import tokenize

    llm = Llama(model_path=str(path), n_ctx=64, vocab_only=True, verbose=False)
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    llm.close()
    return theirs == tokenize(tokenizer, text).tolist()


def measure(name: str, model, tokenizer, path: Path, report: dict, args, text: str, wins, prompt) -> dict:
    from elastiq.evaluate import evaluate

    ev = evaluate(model, tokenizer, text, max_tokens=args.max_tokens, context=args.context, progress=False)
    theirs = llama_cpp_perplexity(path, wins, args.context, args.threads)
    row = {"name": name, "file_bytes": report["bytes"], "types": report["types"], "elastiq_ppl": ev.perplexity,
           "llama_cpp_ppl": theirs, "rel_diff": theirs / ev.perplexity - 1, "tokens": ev.tokens,
           "llama_cpp_decode_tps": llama_cpp_decode(path, prompt, args.new_tokens, args.threads),
           "tokenizer_agrees": tokenizer_agrees(path, tokenizer, text[: args.tokenizer_chars])}
    if "option" in report:
        row.update(option=report["option"], option_bytes=report["option_bytes"])
    print(json.dumps(row), flush=True)
    return row


def table(data: dict) -> str:
    m = data["meta"]
    out = [f"SmolLM2-135M-Instruct, {m['tokens']} tokens of {m['text']}, context {m['context']}; llama-cpp-python "
           f"{m['llama_cpp_python']}, {m['threads']} threads, decode of {m['new_tokens']} tokens after "
           f"{m['prompt_tokens']}; {m['date']}.", "",
           "| exported model | GGUF types (tensors) | file MiB | elastiq ppl | llama.cpp ppl | difference | "
           "llama.cpp decode tok/s | same tokenization |",
           "|---|---|---|---|---|---|---|---|"]
    for r in data["models"]:
        types = ", ".join(f"{k} {v}" for k, v in sorted(r["types"].items()))
        out.append(f"| {r['name']} | {types} | {r['file_bytes'] / 2**20:.1f} | {r['elastiq_ppl']:.4f} | "
                   f"{r['llama_cpp_ppl']:.4f} | {100 * r['rel_diff']:+.3f}% | {r['llama_cpp_decode_tps']:.1f} | "
                   f"{'yes' if r['tokenizer_agrees'] else '**no**'} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--formats", default="int4,int8", help="formats of the linear layers, each exported once")
    ap.add_argument("--embedding", default="int8", help="format of the token embedding (and the head tied to it)")
    ap.add_argument("--artifact", type=Path, help="an elastic artifact whose option nearest --option-mib is exported")
    ap.add_argument("--option-mib", type=float, default=100.0)
    ap.add_argument("--text", default="wiki-eval")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--tokenizer-chars", type=int, default=20000, help="characters of the text whose tokens are compared")
    ap.add_argument("--tokenizer-pre", default="smollm", help="llama.cpp's pre-tokenizer name for the model")
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp's threads (and torch's); on a machine shared by other jobs, 2 threads spin-wait at "
                         "llama.cpp's barriers and decode 50x slower than 1")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/export.json")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the table in docs/interop.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the docs table from an existing --out file")
    ap.add_argument("--extra-buffers", action="store_true", help="let llama.cpp use its AMX/repacked weight layouts")
    args = ap.parse_args()
    if args.render:
        from markdown import write_section  # bench/markdown.py (bench/ is this script's folder)

        return write_section(DOC, "export", table(json.loads(args.out.read_text())))

    import llama_cpp

    if not args.extra_buffers:  # llama.cpp's AMX buffers crash on this machine (bench/llama_peer.py)
        from llama_peer import plain_buffers  # bench/ is this script's folder

        plain_buffers()

    import elastiq
    from elastiq.data import load_text, tokenize, windows
    from elastiq.interop import export_gguf, export_model

    torch.set_num_threads(args.threads)
    text = load_text(args.text)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = tokenizer = None
        for fmt in [f for f in args.formats.split(",") if f]:
            model, tokenizer = elastiq.load(args.model)
            ids = tokenize(tokenizer, text, args.max_tokens)
            wins = windows(ids, context=args.context, max_tokens=args.max_tokens)
            prompt = tokenize(tokenizer, load_text("wiki-calib"), args.prompt_tokens).tolist()
            elastiq.quantize(model, fmt, embedding=args.embedding, progress=False)
            path = Path(tmp) / f"{fmt}.gguf"
            report = export_model(model, tokenizer, path, tokenizer_pre=args.tokenizer_pre, name=f"{args.model}-{fmt}")
            rows.append(measure(f"{fmt} (embedding {args.embedding})", model, tokenizer, path, report, args, text, wins,
                                prompt))
            del model
        if args.artifact:
            from elastiq.elastic import ElasticModel

            host = ElasticModel(args.artifact)
            option = min(host.options, key=lambda o: abs(host.sizes[o] - args.option_mib * 2**20))
            path = Path(tmp) / "option.gguf"
            report = export_gguf(args.artifact, path, option=option, tokenizer_pre=args.tokenizer_pre)
            host.swap(option)
            tokenizer = host.tokenizer
            ids = tokenize(tokenizer, text, args.max_tokens)
            wins = windows(ids, context=args.context, max_tokens=args.max_tokens)
            prompt = tokenize(tokenizer, load_text("wiki-calib"), args.prompt_tokens).tolist()
            rows.append(measure(f"{args.artifact.name} option {option} ({host.sizes[option] / 2**20:.1f} MiB)",
                                host.model, tokenizer, path, report, args, text, wins, prompt))
    meta = {"model": args.model, "text": args.text, "tokens": rows[0]["tokens"], "context": args.context,
            "threads": args.threads, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
            "llama_cpp_python": llama_cpp.__version__, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "artifact": str(args.artifact) if args.artifact else None, "extra_buffers": args.extra_buffers}
    data = {"meta": meta, "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(table(data))
    if not args.no_docs:
        from markdown import write_section  # bench/markdown.py (bench/ is this script's folder)

        write_section(DOC, "export", table(data))
        print(f"wrote {args.out} and the table in {DOC}")


if __name__ == "__main__":
    main()
