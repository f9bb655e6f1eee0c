"""LREC on SmolLM2-135M: perplexity before and after error correction, adapter overhead,
peak training memory against LoRA on the float model and full fine-tuning.

    .venv/bin/python bench/lrec.py                                   # int2, int3, int4, nxfp4
    .venv/bin/python bench/lrec.py --formats int3 --steps 20         # a quick look
    .venv/bin/python bench/lrec.py --memory-only                     # redo the memory rows
    .venv/bin/python bench/lrec.py --formats int2 --keep-memory      # redo one format's row, keep the rest

Protocol: the teacher (the float model) scores --calib-tokens of wiki-calib in windows of
--context tokens (its top-64 next-token log-probs); each format's packed copy gets rank
--rank adapters on every linear layer, zero-initialized or from the SVD of the layer's
quantization error, --adapter-dtype weights, trained --steps steps (AdamW with
--optimizer-state moments, warm-up then cosine, one window per step, activation
checkpointing, output head and loss fused over vocabulary blocks); perplexity is measured
on the first --eval-tokens of wiki-eval (windows of 1024), never on calibration text.
Memory: each training set-up (MEMORY_SETUPS) runs a few steps in a fresh process; its
peak resident size over the baseline after imports is reported (the peak reading is
reset once the model is loaded, so that the transients of loading do not count), and
what the loaded model held; the LREC processes load the packed model from disk (so no
float weights ever exist in them) and the teacher's targets from a file; no set-up loads
a tokenizer (training reads token ids). Writes
bench/results/lrec.json.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory import peak_rss_bytes, reset_peak_rss, rss_bytes, trim_heap  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


MEMORY_SETUPS = {  # name: (base, options); every set-up trains through the same code (loss, chunks, checkpointing)
    "lrec": ("packed+embedding", {}),
    "lrec_float_embedding": ("packed", {}),
    "float_lora": ("float", {}),
    "full": ("float", {"full": True}),
    "lrec_whole_logits": ("packed", {"head": "whole", "release_memory": False}),
    "float_lora_whole_logits": ("float", {"head": "whole", "release_memory": False}),
}


def memory_child(kind: str, workdir: str, rank: int, steps: int, opts: dict, threads: int) -> None:
    """In a fresh process: peak resident memory of a few training steps of one set-up
    (MEMORY_SETUPS), from files the parent wrote (the teacher's targets; the packed models):
    packed base + adapters, float base + adapters (plain LoRA), or every weight training."""
    from elastiq.lrec import TeacherTargets, add_adapters, correct
    from elastiq.options import LrecOptions
    from elastiq.lrec.train import release_freed_memory
    from elastiq.quant.io import load as load_packed

    where, extra = MEMORY_SETUPS[kind]
    if extra.get("release_memory", True):
        release_freed_memory()  # before anything loads: see elastiq.lrec.train.release_freed_memory
    _skeleton(Path(workdir) / "packed")  # library code loads before the baseline (building a model imports ~150 MiB of it)
    torch.set_num_threads(threads)
    trim_heap()
    base = rss_bytes()
    t = torch.load(Path(workdir) / "targets.pt", weights_only=True)
    targets = TeacherTargets(t["ids"], t["logp"], t["top"], t["k"])
    opts = {**opts, **extra}
    full = opts.pop("full", False)
    dtype = opts.pop("adapter_dtype")
    if where.startswith("packed"):  # built on meta: no float copy ever exists
        model, _ = load_packed(Path(workdir) / where, with_tokenizer=False)
        add_adapters(model, rank, dtype=dtype)
    else:
        model = _float_model()
        if full:
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            model = _float_lora(model, rank, dtype)
    gc.collect()
    reset_peak_rss()  # the peak of training, not of loading (which frees its temporaries)
    loaded = rss_bytes() - base
    t0 = time.perf_counter()
    if full:
        _full_finetune(model, targets, steps, **opts)
    else:
        correct(model, targets, LrecOptions(steps=steps, **opts), progress=False)
    secs = (time.perf_counter() - t0) / steps
    print(json.dumps({"kind": kind, "peak_bytes": peak_rss_bytes() - base, "loaded_bytes": loaded, "step_seconds": secs}))


def _skeleton(config_dir: Path) -> None:
    """Build (and drop) the model on the meta device: the modeling code and what it
    imports load, no weights do, so the baseline after it counts neither set-up's code."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(config_dir), local_files_only=True))
    gc.collect()


def _float_model():
    """The float model from elastiq's cache of the built-in GGUF (the parent loaded it once),
    without its tokenizer: training reads token ids, so no set-up holds one (18 MiB)."""
    from transformers import AutoModelForCausalLM

    from elastiq.models import BUILTIN, gguf_cache_dir

    path = gguf_cache_dir(BUILTIN["smollm2-135m"].gguf_path())
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()


def _float_lora(model, rank, dtype):
    """The same adapters on the float model's nn.Linear layers (plain LoRA), for the memory baseline."""
    from torch import nn

    from elastiq.lrec import LoRALinear
    from elastiq.quant.model import replace_module

    for p in model.parameters():
        p.requires_grad_(False)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear) and name != "lm_head":  # the same layers LREC adapts
            replace_module(model, name, LoRALinear(m, rank, dtype=dtype))
    return model


def _full_finetune(model, targets, steps, optimizer_state="float32", head="fused", release_memory=True):
    """Every weight trains, through the loss, checkpointing and optimizer that ``correct``
    uses (lr 1e-5); its output head trains too, so the loss runs in chunks of 64 positions
    (window_loss falls back from "fused")."""
    from elastiq.lrec import AdapterAdamW, window_loss
    from elastiq.lrec.train import _checkpointing, release_freed_memory

    opt = AdapterAdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, state_dtype=optimizer_state)
    if release_memory:
        release_freed_memory()
    _checkpointing(model, True)
    model.train()
    for s in range(steps):
        i = s % len(targets)
        window_loss(model, targets.ids[i], targets.logp[i], targets.top[i], head=head).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def memory_rows(args, fp, tok, targets) -> dict:
    """Write the teacher's targets and the --memory-format model (packed linear layers, and
    a second copy with its embedding packed too) to a temporary directory, then measure
    each set-up in its own process."""
    import tempfile

    import elastiq

    rows = {}
    opts = {"adapter_dtype": args.adapter_dtype, "optimizer_state": args.optimizer_state}
    with tempfile.TemporaryDirectory() as tmp:
        n = 3
        torch.save({"ids": targets.ids[:n], "logp": targets.logp[:n], "top": targets.top[:n], "k": targets.k},
                   Path(tmp) / "targets.pt")
        for where, emb in (("packed", None), ("packed+embedding", "same")):
            packed = elastiq.quantize(copy.deepcopy(fp), args.memory_format, progress=False, embedding=emb)
            elastiq.save(packed, Path(tmp) / where, tokenizer=tok)
            del packed
        for kind in MEMORY_SETUPS:
            cmd = [sys.executable, __file__, "--_memory", kind, tmp, str(args.rank), str(n), json.dumps(opts),
                   "--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode or not lines:
                raise RuntimeError(f"memory run {kind} failed:\n{r.stderr[-2000:]}")
            rows[kind] = {**json.loads(lines[-1]), **MEMORY_SETUPS[kind][1]}
            print(rows[kind])
    rows["settings"] = {**opts, "format": args.memory_format, "rank": args.rank, "steps": n, "head": "fused",
                        "threads": args.threads}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="int2,int3,int4,nxfp4")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--memory-format", default="int3")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--keep-memory", action="store_true", help="keep the memory rows already in --out")
    ap.add_argument("--adapter-dtype", default="bfloat16", help="adapter weights: float32 or bfloat16")
    ap.add_argument("--optimizer-state", default="bfloat16", help="AdamW moments: float32 or bfloat16")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine shared with other work)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/lrec.json")
    ap.add_argument("--_memory", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory:
        kind, workdir, rank, steps, opts = args._memory
        return memory_child(kind, workdir, int(rank), int(steps), json.loads(opts), args.threads)

    import elastiq
    from elastiq.data import load_text
    from elastiq.evaluate import evaluate
    from elastiq.lrec import add_adapters, correct, effective_bits, teacher_targets
    from elastiq.options import LrecOptions
    from elastiq.quant import weight_bytes

    torch.set_num_threads(args.threads)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    fp, tok = elastiq.load("smollm2-135m")
    if args.memory_only:
        targets = teacher_targets(fp, tok, load_text("wiki-calib"), context=args.context, max_tokens=args.context * 3)
        old.update(_memory_summary(memory_rows(args, fp, tok, targets)))
        args.out.write_text(json.dumps(old, indent=2) + "\n")
        return print(f"updated {args.out}")
    text = load_text("wiki-eval")

    def ppl(m):
        return evaluate(m, tok, text, max_tokens=args.eval_tokens, context=1024, progress=False).perplexity

    float_ppl = ppl(fp)
    print(f"float {float_ppl:.3f}")
    targets = teacher_targets(fp, tok, load_text("wiki-calib"), context=args.context, max_tokens=args.calib_tokens)
    print(f"teacher: {len(targets)} windows, {targets.tokens} tokens, top-{targets.k} mass {targets.mass:.3f}")
    meta = {"rank": args.rank, "steps": args.steps, "lr": args.lr, "adapter_dtype": args.adapter_dtype,
            "optimizer_state": args.optimizer_state, "head": "fused", "context": args.context, "calib_tokens": targets.tokens,
            "eval_tokens": args.eval_tokens, "threads": args.threads, "top_k": targets.k, "top_k_mass": targets.mass, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {**old, "meta": meta, "float_ppl": float_ppl}  # rows of formats not run now are kept
    if not args.keep_memory:
        data.update(_memory_summary(memory_rows(args, fp, tok, targets)))  # first: a few minutes, the rest takes long
    elif "memory" not in data:
        raise SystemExit(f"--keep-memory: {args.out} has no memory rows to keep")
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    for fmt in [f for f in args.formats.split(",") if f]:
        row = {}
        for init in ("zero", "svd"):
            q = copy.deepcopy(fp)
            elastiq.quantize(q, fmt, progress=False)
            if init == "zero":
                row["ppl_before"] = ppl(q)
            add_adapters(q, args.rank, init=init, float_model=fp, dtype=args.adapter_dtype)
            if init == "svd":
                row["ppl_svd_init_only"] = ppl(q)
            log = correct(q, targets, LrecOptions(steps=args.steps, lr=args.lr, optimizer_state=args.optimizer_state))
            row["ppl_after" if init == "zero" else "ppl_after_svd"] = ppl(q)
            row[f"loss_{init}"] = [log.losses[0], log.losses[-1]]
            row.setdefault("step_seconds_all", []).extend(log.seconds)
            bits = effective_bits(q)
            row.update(bits_per_weight=bits["bits_per_weight"], bits_per_weight_with_adapters=bits["bits_per_weight_with_adapters"],
                       adapter_bytes=bits["adapter_bytes"])
            from elastiq.lrec.io import unwrapped

            with unwrapped(q):
                row["quantized_model_bytes"] = weight_bytes(q)
            del q
            gc.collect()
        row["adapter_dtype"] = args.adapter_dtype
        row["run"] = {k: meta[k] for k in ("rank", "steps", "lr", "adapter_dtype", "optimizer_state", "threads", "date")}
        row["adapter_overhead"] = row["adapter_bytes"] / row["quantized_model_bytes"]
        row["step_seconds"] = statistics.median(row.pop("step_seconds_all"))
        best = min(row["ppl_after"], row["ppl_after_svd"])
        gap = row["ppl_before"] - float_ppl
        row["gap_closed"] = (row["ppl_before"] - best) / gap if gap > 0 else None
        data[fmt] = row
        args.out.write_text(json.dumps(data, indent=2) + "\n")  # each format as it finishes
        print(fmt, json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}))
    print(f"wrote {args.out}")


def _memory_summary(rows: dict) -> dict:
    """The issue's fields: LREC (packed linear layers and embedding) against plain LoRA on
    the float model and full fine-tuning, all through the same training code."""
    return {"memory": rows, "peak_mem_bytes": rows["lrec"]["peak_bytes"],
            "peak_mem_float_lora_bytes": rows["float_lora"]["peak_bytes"], "peak_mem_full_bytes": rows["full"]["peak_bytes"],
            "memory_ratio_vs_float_lora": rows["float_lora"]["peak_bytes"] / rows["lrec"]["peak_bytes"],
            "memory_ratio_vs_full": rows["full"]["peak_bytes"] / rows["lrec"]["peak_bytes"]}


if __name__ == "__main__":
    main()
