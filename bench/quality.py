"""Quality, size and speed of SmolLM2-135M in every format, on the built-in text.

    .venv/bin/python bench/quality.py                    # 8192 tokens, context 1024
    .venv/bin/python bench/quality.py --max-tokens 2048 --formats int4,nxfp4
    .venv/bin/python bench/quality.py --update --formats '' --speed-only   # redo the speed rows only

Writes bench/results/quality.json and bench/results/quality.png. For each format:
bits per weight (scales included), weight bytes held in memory, perplexity, change in
perplexity, KL from the float model on the same tokens; for --embedding-formats the same
with the token embedding (and the output head tied to it) packed too, as "F+emb". Then,
for the float model and packed models (--speed-format, linear layers only and with the
embedding packed too; saved and reloaded), prefill and greedy decode speed and the
process's resident memory growth (each in a fresh process, 2 threads, median of
--repeats runs), and the same for llama.cpp (llama-cpp-python, if installed) on the
GGUF file the built-in model ships as.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory import rss_bytes, trim_heap  # noqa: E402  (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ["int8", "int4", "int3", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4",
           "nvfp4", "nf4", "mxfp4_nm", "mxfp4_am", "mxfp4_cr", "nxfp4", "nxfp5", "nxfp6", "nxfp8"]


def speed_child(model_path: str, fmt: str, prompt_tokens: int, new_tokens: int) -> None:
    """In a fresh process: prefill/decode speed of one model (the float built-in, or a
    packed model saved to a directory), then the resident memory it took."""
    import transformers  # noqa: F401  library code loads before the baseline, as llama_cpp's does below
    from transformers import AutoModelForCausalLM  # noqa: F401

    import elastiq
    from elastiq.data import load_text, tokenize
    from elastiq.quant import kernels

    torch.set_num_threads(2)
    kernels.library()  # built (or found in the cache) before the clock and the baseline
    ids = tokenize(elastiq.load(model_path)[1], load_text("wiki-calib"))[:prompt_tokens][None]
    gc.collect()
    trim_heap()
    base = rss_bytes()
    model, tok = elastiq.load(model_path)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(ids, use_cache=True, logits_to_keep=1)  # the prompt's last logits only, as generate() and llama.cpp do
        prefill = time.perf_counter() - t0
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        decode = time.perf_counter() - t0
    del out, past
    gc.collect()
    trim_heap()
    resident = rss_bytes() - base  # every weight page has been touched by now
    print(json.dumps({"format": fmt, "weight_bytes": elastiq.weight_bytes(model), "resident_bytes": resident,
                      "prefill_tokens_per_s": prompt_tokens / prefill, "decode_tokens_per_s": new_tokens / decode}))


def llama_cpp_child(model_name: str, prompt_tokens: int, new_tokens: int) -> None:
    """In a fresh process: llama.cpp on the GGUF file the built-in model ships as, same
    prompt tokens, 2 threads, greedy decoding."""
    from llama_cpp import Llama

    from elastiq.data import load_text, tokenize
    from elastiq.models import BUILTIN, load

    gguf = BUILTIN[model_name].gguf_path()
    model, tok = load(model_name)  # the same tokenizer, read from the same GGUF file
    ids = tokenize(tok, load_text("wiki-calib"))[:prompt_tokens].tolist()
    del model
    gc.collect()
    trim_heap()
    base = rss_bytes()
    llm = Llama(model_path=str(gguf), n_ctx=prompt_tokens + new_tokens + 8, n_threads=2, n_threads_batch=2,
                n_batch=prompt_tokens, verbose=False)
    gen = llm.generate(ids, temp=0.0, top_k=1, reset=True)
    t0 = time.perf_counter()
    next(gen)  # the prompt, then the first token
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        next(gen)
    decode = time.perf_counter() - t0
    print(json.dumps({"format": "llama.cpp (Q4_1 GGUF)", "weight_bytes": gguf.stat().st_size,
                      "resident_bytes": rss_bytes() - base, "prefill_tokens_per_s": prompt_tokens / prefill,
                      "decode_tokens_per_s": new_tokens / decode}))


def speed(model_path, fmt, prompt_tokens, new_tokens, repeats: int) -> dict:
    """The median of ``repeats`` fresh-process runs, field by field (the machine is shared)."""
    flag = "--_llama" if fmt == "llama.cpp" else "--_speed"
    cmd = [sys.executable, __file__, flag, str(model_path), fmt, str(prompt_tokens), str(new_tokens)]
    runs = []
    for _ in range(repeats):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode or not lines:
            raise RuntimeError(f"speed run for {fmt} failed:\n{r.stderr[-2000:]}")
        runs.append(json.loads(lines[-1]))
    row = {k: (statistics.median(x[k] for x in runs) if isinstance(v, (int, float)) else v) for k, v in runs[0].items()}
    row["runs"] = repeats
    return row


def speed_rows(args, model, tok, console) -> list[dict]:
    """The float model and packed models (saved, then loaded in a fresh process)."""
    import copy
    import tempfile

    import elastiq

    if not args.speed_format:
        return []
    rep = args.repeats
    runs = [speed(args.model, "float", args.prompt_tokens, args.new_tokens, rep)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, emb in [(args.speed_format, None), (f"{args.speed_format}+emb", "same")]:
            packed = elastiq.quantize(copy.deepcopy(model), args.speed_format, progress=False, embedding=emb)
            elastiq.save(packed, Path(tmp) / label, tokenizer=tok)
            del packed
            runs.append(speed(Path(tmp) / label, label, args.prompt_tokens, args.new_tokens, rep))
            console.print(runs[-1])
    try:
        import llama_cpp  # noqa: F401  the peer: llama.cpp on the same GGUF, prompt and threads
        runs.append(speed(args.model, "llama.cpp", args.prompt_tokens, args.new_tokens, rep))
    except ImportError:
        console.print("llama-cpp-python is not installed (pip install llama-cpp-python): no llama.cpp row")
    for r in runs:
        console.print(r)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--text", default="wiki-eval")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--embedding-formats", default="nxfp4,nvfp4,int8",
                    help="formats also measured with the embedding (and tied head) packed in the same format")
    ap.add_argument("--speed-format", default="nxfp4", help="packed model for the speed and memory rows ('' to skip)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process runs per speed row (the median is kept)")
    ap.add_argument("--update", action="store_true", help="merge the rows measured now into the existing --out file")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/quality.json")
    ap.add_argument("--speed-only", action="store_true", help="redo only the speed rows of an existing --out file")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from an existing --out file")
    ap.add_argument("--_speed", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_llama", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._speed:
        name, fmt, p, n = args._speed
        return speed_child(name, fmt, int(p), int(n))
    if args._llama:
        name, _, p, n = args._llama
        return llama_cpp_child(name, int(p), int(n))

    from rich.console import Console
    from rich.table import Table

    import elastiq
    from elastiq.compare import FormatResult, compare, plot_quality
    from elastiq.data import load_text

    if args.replot:
        data = json.loads(args.out.read_text())
        m = data["meta"]
        plot_quality([FormatResult(**r) for r in data["results"]], args.out.with_suffix(".png"),
                     f"{m['model']}: {m['tokens']} tokens of {m['text']}")
        return print(f"wrote {args.out.with_suffix('.png')}")

    torch.set_num_threads(2)
    console = Console(width=None if Console().is_terminal else 140)
    model, tok = elastiq.load(args.model)
    old = json.loads(args.out.read_text()) if args.update and args.out.is_file() else {}
    if args.speed_only:
        old["speed"] = speed_rows(args, model, tok, console)
        args.out.write_text(json.dumps(old, indent=2) + "\n")
        return console.print(f"updated the speed rows of {args.out}")
    names = [f for f in args.formats.split(",") if f]
    text = load_text(args.text)
    show = lambda r: console.print(f"{r.format:16s} ppl {r.perplexity:9.3f}  kl {r.kl:.4f}  "  # noqa: E731
                                   f"{r.bits_per_weight:.3f} bits  {r.eval_seconds:.0f} s")
    results = compare(model, tok, text, names, max_tokens=args.max_tokens, context=args.context, on_result=show)
    emb_names = [f for f in args.embedding_formats.split(",") if f]
    if emb_names:
        with_emb = compare(model, tok, text, emb_names, max_tokens=args.max_tokens, context=args.context,
                           embedding="same", on_result=show)[1:]  # its float row repeats the first one
        for r in with_emb:
            r.format += "+emb"
        results += with_emb
    if old:  # --update: keep the rows not measured now, in their order
        fresh = {r.format: r for r in results}
        results = [fresh.pop(r["format"], None) or FormatResult(**r) for r in old["results"]] + list(fresh.values())
    table = Table(title=f"{args.model}, {results[0].tokens} tokens of {args.text}, context {args.context}")
    for col in ["format", "bits/weight", "weight MiB", "perplexity", "Δ perplexity", "KL"]:
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in results:
        table.add_row(r.format, f"{r.bits_per_weight:.3f}", f"{r.weight_bytes / 2**20:.1f}", f"{r.perplexity:.3f}",
                      f"{r.delta_perplexity:+.3f}", f"{r.kl:.4f}")
    console.print(table)
    runs = speed_rows(args, model, tok, console)
    meta = {"model": args.model, "text": args.text, "tokens": results[0].tokens, "context": args.context,
            "torch": torch.__version__, "threads": 2, "date": time.strftime("%Y-%m-%d"),
            "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "speed_repeats": args.repeats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": [r.as_dict() for r in results], "speed": runs}, indent=2) + "\n")
    plot_quality(results, args.out.with_suffix(".png"), f"{args.model}: {results[0].tokens} tokens of {args.text}")
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
