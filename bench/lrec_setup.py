"""Setting up LREC on SmolLM2-135M: the whole float model in memory against one decoder
layer at a time (elastiq.lrec.stream), and the whole `elastiq correct` process.

    .venv/bin/python bench/lrec_setup.py --threads 1              # both routes, 3 runs each
    .venv/bin/python bench/lrec_setup.py --threads 1 --cli        # and the whole command once

The set-up is everything before training: the teacher's top-64 targets on --calib-tokens
of wiki-calib (windows of 256), packing every linear layer in --format, and rank --rank
adapters started from the SVD of each layer's quantization error.
- "in memory": elastiq.load, then elastiq.lrec.stream.in_memory_setup (teacher_targets, a
  deep copy packed by quantize_model, add_adapters(float_model=...)), as `elastiq correct`
  did before it streamed and still does for a model it cannot read a layer at a time.
- "streamed": elastiq.lrec.stream.stream_setup from the float safetensors cache.
Each run is a fresh process; its peak resident size over the baseline after imports,
the tokenizer and the text is reported (median of --runs), and the two routes' results
are compared: teacher log-probs, packed codes, adapter starts. --cli also runs
`elastiq correct --steps 3` and reads the whole process's peak (getrusage of the child).
Writes bench/results/lrec_setup.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory import peak_rss_bytes, reset_peak_rss, rss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
ROUTES = ("in_memory", "streamed")
MIB = 2 ** 20


def tokenize_child(how: str, tokens: int) -> None:
    """Peak memory of tokenizing wiki-eval, whole or only the prefix ``tokens`` need, in this fresh process."""
    from elastiq.data import load_text, tokenize
    from elastiq.models import float_checkpoint_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(float_checkpoint_dir(MODEL)), local_files_only=True)
    text = load_text("wiki-eval")
    reset_peak_rss()
    base = rss_bytes()
    ids = tokenize(tok, text, None if how == "whole" else tokens)[:tokens]
    print(json.dumps({"how": how, "tokens": len(ids), "text_chars": len(text), "peak_bytes": peak_rss_bytes() - base,
                      "held_bytes": rss_bytes() - base}))


def child(route: str, out: Path, fmt: str, rank: int, calib_tokens: int, threads: int) -> None:
    """One set-up in this fresh process; prints its memory and time as JSON, saves what it built to ``out``."""
    torch.set_num_threads(threads)
    from elastiq.lrec.train import release_freed_memory

    release_freed_memory()  # as `elastiq correct` does, before anything loads
    import gc

    import elastiq
    from elastiq.data import load_text
    from elastiq.lrec import adapters_of
    from elastiq.lrec.stream import in_memory_setup, stream_setup
    from elastiq.models import float_checkpoint_dir
    from elastiq.options import LrecOptions
    from transformers import AutoTokenizer

    source = float_checkpoint_dir(MODEL)
    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    text = load_text("wiki-calib")
    options = LrecOptions(rank=rank, init="svd", adapter_dtype="bfloat16", calib_tokens=calib_tokens)
    reset_peak_rss()
    base = rss_bytes()
    t0 = time.perf_counter()
    if route == "streamed":
        q, targets = stream_setup(source, fmt, tok, text, options, progress=False)
    else:
        fp, _ = elastiq.load(MODEL)
        q, targets = in_memory_setup(fp, fmt, tok, text, options, progress=False)
        del fp
        gc.collect()
    seconds = time.perf_counter() - t0
    peak, held = peak_rss_bytes() - base, rss_bytes() - base
    loras = adapters_of(q)
    torch.save({"logp": targets.logp, "top": targets.top, "ids": targets.ids,
                "codes": {n: lo.base.codes for n, lo in loras.items()},
                "delta": {n: lo.delta().detach() for n, lo in list(loras.items())[::15]}}, out)
    print(json.dumps({"route": route, "peak_bytes": peak, "held_bytes": held, "seconds": seconds}))


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{r.stderr[-3000:]}")
    return r.stdout


# a fresh parent per measured command: RUSAGE_CHILDREN's peak is the largest of all children so far
PEAK_OF = ("import json, resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "sys.stderr.write(r.stderr); print(r.stdout); print(json.dumps({'returncode': r.returncode, "
           "'peak_bytes': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))")


def compare(a: dict, b: dict) -> dict:
    """How far the streamed route's results are from the in-memory route's."""
    logp = max(float((x.float() - y.float()).abs().max()) for x, y in zip(a["logp"], b["logp"]))
    top = float(torch.cat([(x == y).float().flatten() for x, y in zip(a["top"], b["top"])]).mean())
    codes = all(torch.equal(a["codes"][n], b["codes"][n]) for n in a["codes"]) and set(a["codes"]) == set(b["codes"])
    delta = max(float((a["delta"][n] - b["delta"][n]).norm() / a["delta"][n].norm()) for n in a["delta"])
    return {"same_windows": all(torch.equal(x, y) for x, y in zip(a["ids"], b["ids"])) and len(a["ids"]) == len(b["ids"]),
            "max_abs_logp_difference": logp, "top_k_ids_agreeing": top, "packed_codes_identical": codes,
            "adapters_compared": len(a["delta"]), "max_relative_adapter_difference": delta}


def tokenize_rows(runs: int) -> dict:
    """Median peak of tokenizing wiki-eval for 4,096 tokens: the whole text, and the prefix tokenize() reads."""
    out = {}
    for how in ("whole", "prefix"):
        rows = [json.loads(_run([sys.executable, __file__, "--_child", "tokenize", how]).strip().splitlines()[-1])
                for _ in range(runs)]
        out[how] = {**rows[0], "peak_bytes": statistics.median(r["peak_bytes"] for r in rows),
                    "held_bytes": statistics.median(r["held_bytes"] for r in rows)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default="int3")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cli", action="store_true", help="also run `elastiq correct --steps 3` once")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/lrec_setup.json")
    ap.add_argument("--tokenize-only", action="store_true",
                    help="only measure tokenizing wiki-eval whole against a prefix; kept with the rest of --out")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child and args._child[0].startswith("tokenize"):
        return tokenize_child(args._child[1], 4096)
    if args._child:
        return child(args._child[0], Path(args._child[1]), args.format, args.rank, args.calib_tokens, args.threads)

    from rich.console import Console
    from rich.table import Table

    from elastiq.models import float_checkpoint_dir
    from elastiq.progress import progress_bar

    float_checkpoint_dir(MODEL)  # convert the GGUF once, outside every measured process
    if args.tokenize_only:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["tokenize"] = tokenize_rows(args.runs)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        Console().print(result["tokenize"])
        return
    runs: dict[str, list[dict]] = {r: [] for r in ROUTES}
    with tempfile.TemporaryDirectory() as tmp, progress_bar(enabled=True) as prog:
        task = prog.add_task("set-up runs", total=args.runs * len(ROUTES))
        for i in range(args.runs):
            for route in ROUTES:  # alternated, so that load on the machine falls on both alike
                cmd = [sys.executable, __file__, "--_child", route, f"{tmp}/{route}.pt", "--format", args.format,
                       "--rank", str(args.rank), "--calib-tokens", str(args.calib_tokens), "--threads", str(args.threads)]
                stdout = _run(cmd)
                runs[route].append(json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1]))
                prog.advance(task)
        agreement = compare(torch.load(f"{tmp}/in_memory.pt"), torch.load(f"{tmp}/streamed.pt"))
    rows = {r: {k: statistics.median(x[k] for x in runs[r]) for k in ("peak_bytes", "held_bytes", "seconds")}
            for r in ROUTES}
    result = {"model": MODEL, "format": args.format, "rank": args.rank, "calib_tokens": args.calib_tokens,
              "threads": args.threads, "runs": runs, "median": rows, "agreement": agreement,
              "peak_ratio_in_memory_vs_streamed": rows["in_memory"]["peak_bytes"] / rows["streamed"]["peak_bytes"],
              "tokenize": tokenize_rows(args.runs)}
    if args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [str(Path(sys.executable).with_name("elastiq")), "correct", MODEL, "--format", args.format,
                   "--rank", str(args.rank), "--steps", "3", "--calib-tokens", str(args.calib_tokens),
                   "--adapter-dtype", "bfloat16", "--optimizer-state", "bfloat16", "--out", f"{tmp}/out"]
            t0 = time.perf_counter()
            lines = _run([sys.executable, "-c", PEAK_OF, *cmd]).strip().splitlines()
            seconds = time.perf_counter() - t0
            status = json.loads(lines[-1])
            if status["returncode"]:
                raise RuntimeError(f"elastiq correct failed: {lines[-6:-1]}")
            result["cli"] = {"command": "elastiq " + " ".join(cmd[1:-2]), "process_peak_bytes": status["peak_bytes"],
                             "seconds": seconds, "output": [ln for ln in lines[:-1] if ln.strip()][-3:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    t = Table(title=f"LREC set-up on {MODEL} ({args.format}, rank {args.rank}, {args.calib_tokens} calibration tokens; "
                    f"median of {args.runs})")
    for c in ("route", "peak over baseline, MiB", "held after, MiB", "seconds", "peak vs streamed"):
        t.add_column(c, justify="left" if c == "route" else "right")
    for r in ROUTES:
        m = rows[r]
        t.add_row(r.replace("_", " "), f"{m['peak_bytes'] / MIB:,.0f}", f"{m['held_bytes'] / MIB:,.0f}",
                  f"{m['seconds']:.1f}", f"{m['peak_bytes'] / rows['streamed']['peak_bytes']:.2f}x")
    console = Console()
    console.print(t)
    console.print(agreement)
    if "cli" in result:
        console.print(f"elastiq correct, whole process: peak {result['cli']['process_peak_bytes'] / MIB:,.0f} MiB, "
                      f"{result['cli']['seconds']:.0f} s")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
