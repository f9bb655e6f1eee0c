"""Calibrated quantization on SmolLM2-135M: round-to-nearest against GPTQ (and scale search)
per format, a GPTQ peer on the same tokens, and int2 GPTQ + LREC.

    nice .venv/bin/python bench/calibrate.py                           # everything (~40 minutes on 2 cores)
    nice .venv/bin/python bench/calibrate.py --formats int4 --no-peer --lrec-steps 0
    nice .venv/bin/python bench/calibrate.py --update --formats '' --lrec-steps 0    # only the peer row again
    .venv/bin/python bench/markdown.py calibrate                       # docs/calibrate.md's tables

Protocol as bench/quality.py: the first --max-tokens tokens of wiki-eval, windows of
--context tokens, perplexity over every token after the first. Calibration: the first
--calib-tokens tokens of wiki-calib in windows of --calib-context. Each calibrated format is
packed as `elastiq quantize --method gptq` packs it (elastiq.calib.quantize_source: a decoder
layer at a time, sequential, the sink-weighted Hessians); its ``seconds`` are that whole run,
reading the checkpoint included. The peer
(GPTQModel, run by bench/peer_gptqmodel.py in its own virtual environment, --peer-python)
quantizes int4 g128 on the same calibration windows and is scored on the same windows.
Writes bench/results/calibrate.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FORMATS = {"int2": "int2x4-g64", "int3": "int3", "int4": "int4", "nxfp4": "nxfp4", "nvfp4": "nvfp4",
           "int3x8": "int3x8", "int4x16": "int4x16"}  # the last two use every code (zero kept; the short side picked per group)
EXTRA = "int2:gptq+search,int3:gptq+search,int3:search"  # more methods on some rows


def packed_copy(model, model_name: str, fmt: str, method: str, args):
    """(packed model, seconds): round-to-nearest on a copy of ``model``, or calibrated by
    ``method`` as `elastiq quantize --method` does it: streamed from the float checkpoint a
    decoder layer at a time, each layer's Hessians from the inputs its packed predecessors give."""
    from elastiq.calib import quantize_source
    from elastiq.data import load_text
    from elastiq.options import CalibOptions
    from elastiq.quant import quantize_model

    t0 = time.perf_counter()
    if method == "rtn":
        q = copy.deepcopy(model)
        quantize_model(q, fmt, progress=False)
    else:
        o = CalibOptions(method=method, tokens=args.calib_tokens, context=args.calib_context, sink_weight=args.sink_weight,
                         sequential=args.sequential, damp=args.damp, act_order=args.act_order)
        q, _ = quantize_source(model_name, fmt, load_text("wiki-calib"), o, progress=False)
    return q, time.perf_counter() - t0


def dev_text(tok) -> str:
    """Held-out text for choosing settings: wiki-calib past the first 16,384 tokens (calibration reads at most those)."""
    from elastiq.data import load_text, tokenize

    return tok.decode(tokenize(tok, load_text("wiki-calib"), 20480)[16384:].tolist())


def ppl(model, tok, text, args) -> float:
    from elastiq.evaluate import evaluate

    return evaluate(model, tok, text, max_tokens=args.max_tokens, context=args.context, progress=False).perplexity


def run_peer(args, model_name: str, calib_wins) -> dict | None:
    """GPTQModel int4 g128 in its own environment, on our calibration and evaluation windows."""
    from elastiq.data import load_text, tokenize, windows
    from elastiq.models import float_checkpoint_dir, load

    if not Path(args.peer_python).is_file():
        print(f"no peer environment at {args.peer_python}: no peer row")
        return None
    _, tok = load(model_name)
    ids = tokenize(tok, load_text("wiki-eval"), args.max_tokens)
    evals = [(w, n) for w, n in windows(ids, context=args.context, max_tokens=args.max_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "windows.pt"
        torch.save({"calib": calib_wins, "eval": evals}, data)
        cmd = [args.peer_python, str(ROOT / "bench/peer_gptqmodel.py"), str(float_checkpoint_dir(model_name)), str(data),
               str(args.peer_out or Path(tmp) / "quantized"), "--threads", str(args.threads)]
        env = {**os.environ, "GPTQMODEL_CPU_WORKERS": str(args.threads)}  # its default, half the cores, fails on 2
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)  # GPTQModel writes logs/ into its cwd
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode or not lines:
            print(f"peer failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            return {"name": "GPTQModel", "error": (r.stderr or r.stdout)[-1500:]}
        return json.loads(lines[-1])


def run_lrec(args, model_name: str, text_eval: str, key: str) -> dict:
    """The format of ``key`` from a GPTQ base, then LREC (elastiq.lrec) as `elastiq correct --method gptq` runs it."""
    from elastiq.data import load_text
    from elastiq.evaluate import evaluate
    from elastiq.lrec import correct
    from elastiq.lrec.stream import setup
    from elastiq.options import LrecOptions

    o = LrecOptions(method=args.lrec_method, rank=args.lrec_rank, steps=args.lrec_steps, calib_tokens=args.lrec_calib_tokens)
    t0 = time.perf_counter()
    q, tok, targets = setup(model_name, FORMATS[key], load_text("wiki-calib"), o, progress=False)
    t_setup = time.perf_counter() - t0
    base = (evaluate(q, tok, text_eval, max_tokens=args.max_tokens, context=args.context, progress=False).perplexity
            if args.lrec_before else None)
    t1 = time.perf_counter()
    log = correct(q, targets, o, progress=False)
    t_train = time.perf_counter() - t1
    after = evaluate(q, tok, text_eval, max_tokens=args.max_tokens, context=args.context, progress=False).perplexity
    return {"format": FORMATS[key], "method": args.lrec_method, "rank": args.lrec_rank, "steps": args.lrec_steps,
            "calib_tokens": args.lrec_calib_tokens, "ppl_base_with_svd_adapters": base, "ppl": after,
            "setup_seconds": t_setup, "train_seconds": t_train, "kl_first_last": [log.losses[0], log.losses[-1]]}


def main() -> None:
    from elastiq.options import CalibOptions  # no torch: the defaults below are CalibOptions'

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"keys of {FORMATS}")
    ap.add_argument("--extra", default=EXTRA, help="more key:method rows ('' for none)")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--calib-context", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-python", default=str(Path("/work/wt/peer-venv/bin/python")),
                    help="python of the environment GPTQModel is installed in (see docs/calibrate.md)")
    ap.add_argument("--peer-out", type=Path, default=None, help="keep the peer's quantized model here")
    ap.add_argument("--lrec-steps", type=int, default=40, help="LREC steps on each --lrec-formats GPTQ base (0: skip)")
    ap.add_argument("--lrec-formats", default="int2", help="keys of the formats LREC corrects from a GPTQ base")
    ap.add_argument("--lrec-rank", type=int, default=16)
    ap.add_argument("--lrec-method", default="gptq")
    ap.add_argument("--lrec-calib-tokens", type=int, default=16384)
    ap.add_argument("--lrec-before", action=argparse.BooleanOptionalAction, default=True,
                    help="also score the GPTQ base with its SVD-started adapters before training")
    ap.add_argument("--rtn-from", type=Path, default=None,
                    help="take RTN perplexities from this bench/quality.py result (same protocol) where it has the format")
    ap.add_argument("--sink-weight", type=float, default=CalibOptions.sink_weight,
                    help="each calibration window's first token in the Hessians (CalibOptions.sink_weight)")
    ap.add_argument("--damp", type=float, default=CalibOptions.damp, help="GPTQ damping (CalibOptions.damp)")
    ap.add_argument("--act-order", action="store_true", help="GPTQ visits columns by decreasing Hessian diagonal")
    ap.add_argument("--dev", action="store_true",
                    help="also score calibrated rows on held-out text: wiki-calib tokens 16384-20479, which calibration never reads")
    ap.add_argument("--sequential", action=argparse.BooleanOptionalAction, default=CalibOptions.sequential,
                    help="each layer's Hessians from the packed layers before it (CalibOptions.sequential)")
    ap.add_argument("--merge", type=Path, nargs="*", default=None, help="combine these partial results into --out, then stop")
    ap.add_argument("--update", action="store_true", help="merge what is measured now into the existing --out file")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/calibrate.json")
    args = ap.parse_args()
    if args.merge:
        out = {}
        for part in args.merge:
            out.update({k: v for k, v in json.loads(part.read_text()).items() if v is not None})
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        return print(f"wrote {args.out} from {len(args.merge)} parts")
    import elastiq
    from elastiq.data import load_text

    torch.set_num_threads(args.threads)
    quality = {r["format"]: r["perplexity"] for r in json.loads(args.rtn_from.read_text())["results"]} if args.rtn_from else {}
    out = json.loads(args.out.read_text()) if args.update and args.out.is_file() else {}
    model, tok = elastiq.load(args.model)
    model.eval()
    text = load_text("wiki-eval")
    keys = [k for k in args.formats.split(",") if k]
    if "float_ppl" not in out and (keys or args.lrec_steps):
        out["float_ppl"] = quality["float"] if "float" in quality else ppl(model, tok, text, args)
        print(f"float {out['float_ppl']:.3f}", flush=True)
    extra = [tuple(e.split(":")) for e in args.extra.split(",") if e and e.split(":")[0] in keys]
    dev = dev_text(tok) if args.dev else None
    for key in keys:
        fmt = FORMATS[key]
        row = {"format": fmt}
        if fmt in quality:
            row["ppl_rtn"], row["rtn_from"] = quality[fmt], str(args.rtn_from)
        else:
            q, _ = packed_copy(model, args.model, fmt, "rtn", args)
            row["ppl_rtn"] = ppl(q, tok, text, args)
            del q
        for method in ["gptq"] + [m for k, m in extra if k == key]:
            q, sec = packed_copy(model, args.model, fmt, method, args)
            name = method.replace("+", "_")
            row[f"ppl_{name}"], row[f"{name}_seconds"] = ppl(q, tok, text, args), sec
            if args.dev:
                row[f"dev_ppl_{name}"] = ppl(q, tok, dev, args)
            del q
        row["seconds"] = row["gptq_seconds"]
        out[key] = row
        print(key, row, flush=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    if not args.no_peer:
        from elastiq.calib import calibration_windows

        calib_wins = calibration_windows(tok, load_text("wiki-calib"), args.calib_tokens, args.calib_context)
        out["peer"] = run_peer(args, args.model, calib_wins)
        print("peer", out["peer"], flush=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    if args.lrec_steps:
        del model
        for key in [k for k in args.lrec_formats.split(",") if k]:
            out[f"{key}_lrec"] = run_lrec(args, args.model, text, key)
            out[f"{key}_gptq_lrec_ppl"] = out[f"{key}_lrec"]["ppl"]
            print(f"{key} + LREC", out[f"{key}_lrec"], flush=True)
            args.out.write_text(json.dumps(out, indent=2) + "\n")
    out["meta"] = {"model": args.model, "text": "wiki-eval", "max_tokens": args.max_tokens, "context": args.context,
                   "calib_text": "wiki-calib", "calib_tokens": args.calib_tokens, "calib_context": args.calib_context,
                   "threads": args.threads, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                   "formats": FORMATS, "gptq": {"damp": args.damp, "act_order": args.act_order, "batch": CalibOptions.batch, "sink_weight": args.sink_weight,
                            "sequential": args.sequential}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
