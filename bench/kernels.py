"""Matrix-vector products from packed weights: elastiq's kernels against float and peers.

    .venv/bin/python bench/kernels.py                  # SmolLM2-135M's layer shapes, 1 and 2 threads
    .venv/bin/python bench/kernels.py --reps 50 --threads 2

For each weight shape of SmolLM2-135M (one token, the decode step) it times, cycling
through enough distinct copies of the weight that the float copies (96 MiB in all) do
not fit the CPU's caches, as in a real decode step where every layer's weight streams
from memory once per token:
float32 ``F.linear`` (the float model), elastiq's native kernel on packed codes for
several formats, elastiq's torch fallback (decode the whole weight, then ``F.linear``),
and torch's own int4 weight-only CPU kernel (``_weight_int4pack_mm_for_cpu``, the one
torchao's int4 weight-only CPU path calls) on the same INT4 group-64 codes. Medians of
--reps runs; ratios against float. Writes bench/results/kernels.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as Fn

from elastiq import formats as F
from elastiq.quant import kernels

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"q/o proj": (576, 576), "k/v proj": (192, 576), "gate/up proj": (1536, 576), "down proj": (576, 1536),
          "head (tied embedding)": (49152, 576)}
FORMATS = ["int4-g64", "mxfp4", "nvfp4", "nxfp4", "nf4", "int8"]


WORKING_SET = 96 << 20  # bytes of float weights cycled through: more than the L3 cache


def median_us(fns, reps: int) -> float:
    """Median time of one call, cycling through ``fns`` (one per weight copy)."""
    for f in fns:
        f()
    times = []
    for i in range(reps * len(fns)):
        t0 = time.perf_counter()
        fns[i % len(fns)]()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def torch_int4(p: F.Packed):
    """Our INT4 group-64 codes (two's complement, FP16 scales) in torch's int4pack layout:
    q = code + 8 (unsigned), value = (q - 8) * scale + 0."""
    n, k = p.shape
    codes = F.unpack_bits(p.codes, 4, n * k).view(n, k).to(torch.int32)
    q = (codes ^ 8)  # two's complement nibble -> offset binary
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    sc = F.unpack_bits(p.scales, 16, n * (k // 64)).to(torch.int16).view(torch.float16).float().view(n, k // 64)
    sz = torch.stack([sc.T.contiguous(), torch.zeros_like(sc.T)], -1).contiguous()
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 64, sz)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/kernels.json")
    args = ap.parse_args()
    if kernels.library() is None:
        raise SystemExit("the native kernels are not available (no C compiler?): nothing to measure")
    rows = []
    torch.manual_seed(0)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for label, (n, k) in SHAPES.items():
            copies = max(1, -(-WORKING_SET // (n * k * 4)))
            ws, x = [torch.randn(n, k) * 0.02 for _ in range(copies)], torch.randn(1, k)
            row = {"threads": threads, "shape": label, "out": n, "in": k, "copies": copies,
                   "float_us": median_us([lambda w=w: Fn.linear(x, w) for w in ws], args.reps)}
            for name in FORMATS:
                ps = [F.quantize(w, name) for w in ws]
                kws = [kernels.kernel_for(p, None) for p in ps]
                row[f"{name}_us"] = median_us([lambda kw=kw: kw.matmul_t(x) for kw in kws], args.reps)
                if name == "nxfp4":
                    row["nxfp4_torch_path_us"] = median_us([lambda: Fn.linear(x, F.dequantize(ps[0]))], max(3, args.reps // 5))
                if name == "int4-g64":
                    mms = [torch_int4(p) for p in ps]
                    ref = x.double() @ F.dequantize(ps[0], torch.float64).T
                    assert (mms[0](x).double() - ref).abs().max() <= 1e-3 * ref.abs().max(), "torch int4 mapping is wrong"
                    row["torch_int4pack_us"] = median_us([lambda mm=mm: mm(x) for mm in mms], args.reps)
            del ws, ps, kws
            rows.append(row)
            print(json.dumps({kk: round(v, 1) if isinstance(v, float) else v for kk, v in row.items()}))
    meta = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "reps": args.reps, "formats": FORMATS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
