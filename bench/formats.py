"""Format engine throughput and peak memory against torchao's CPU path, in one run.

    .venv/bin/python bench/formats.py            # 4096x4096 fp32, median of 7 runs
    .venv/bin/python bench/formats.py --runs 3 --size 2048

For each format and operation (quantize to packed bytes, dequantize, fake-quantize)
it times elastiq and torchao alternately, reports elements/s (median), the ratio,
whether the decoded outputs are bit-identical, and the peak extra resident memory
of each operation measured in a fresh process (as a multiple of the input size).
Writes bench/results/formats.json and bench/results/formats.png.
With --device cuda (optional; CI has no GPU) it also reports throughput as a
fraction of the measured device-to-device copy bandwidth.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elastiq import formats as F  # noqa: E402
from memory import peak_rss_bytes, reset_peak_rss, rss_bytes  # noqa: E402  (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ["mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4", "nxfp4", "int4"]
OPS = ["quantize", "dequantize", "fake_quantize"]


# ---- the two implementations ----------------------------------------------------
def torchao_ops(name: str):
    """(quantize, dequantize) closures of torchao's own CPU path, or None where torchao has no such format."""
    from torchao.prototype.mx_formats import mx_tensor, nvfp4_tensor
    from torchao.prototype.mx_formats.config import ScaleCalculationMode

    elem = {"mxfp4": torch.float4_e2m1fn_x2, "mxfp6_e2m3": "fp6_e2m3", "mxfp6_e3m2": "fp6_e3m2",
            "mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2}.get(name)
    if elem is not None:
        def q(x):
            return mx_tensor.to_mx(x, elem, 32, ScaleCalculationMode.FLOOR)

        def dq(packed):
            scale, data = packed
            return mx_tensor.to_dtype(data, scale, elem, 32, torch.float32)
        return q, dq
    if name == "nvfp4":
        def q(x):
            pts = nvfp4_tensor.per_tensor_amax_to_scale(x.abs().amax())
            scale, data = nvfp4_tensor.nvfp4_quantize(x, 16, pts)
            return nvfp4_tensor.NVFP4Tensor(data, scale, 16, torch.float32, per_tensor_scale=pts)

        def dq(t):
            return t.dequantize(torch.float32)
        return q, dq
    return None


def elastiq_ops(name: str):
    fmt = F.get(name)
    return (lambda x: F.quantize(x, fmt)), F.dequantize, (lambda x: F.fake_quantize(x, fmt))


def op_callable(impl: str, name: str, op: str, x: torch.Tensor):
    """A zero-argument callable running one operation (its input prepared outside the timing)."""
    if impl == "elastiq":
        q, dq, fq = elastiq_ops(name)
    else:
        ops = torchao_ops(name)
        if ops is None:
            return None
        q, dq = ops
        fq = lambda x: dq(q(x))  # noqa: E731  torchao has no fused fake-quantize
    if op == "quantize":
        return lambda: q(x)
    if op == "dequantize":
        packed = q(x)
        return lambda: dq(packed)
    return lambda: fq(x)


# ---- measurements ---------------------------------------------------------------
def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def peak_memory_child(impl: str, name: str, op: str, size: int) -> None:
    """Run in a fresh process: print the peak extra resident bytes of one operation."""
    torch.manual_seed(0)
    warm = op_callable(impl, name, op, torch.randn(64, 256))
    warm()  # lazy imports, caches and thread pools are not the operation's memory
    x = torch.randn(size, size)
    fn = op_callable(impl, name, op, x)
    reset_peak_rss()
    base = rss_bytes()
    before_peak = peak_rss_bytes()
    out = fn()  # noqa: F841  kept alive: the output counts
    peak = peak_rss_bytes()
    print(json.dumps({"extra": max(peak - base, 0), "polluted": before_peak > base + (16 << 20)}))


def peak_memory(impl: str, name: str, op: str, size: int):
    cmd = [sys.executable, __file__, "--_child", impl, name, op, str(size)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        return None
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])["extra"] if lines else None


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def copy_bandwidth(x: torch.Tensor, device: str, runs: int) -> float:
    y = torch.empty_like(x)
    times = [timed(lambda: y.copy_(x), device) for _ in range(runs + 1)][1:]
    return 2 * x.numel() * x.element_size() / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--formats", nargs="*", default=FORMATS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-operation peak memory processes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/formats.json")
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        impl, name, op, size = args._child
        return peak_memory_child(impl, name, op, int(size))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (the GPU path is optional; CPU results need no flag)")

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    torch.manual_seed(0)
    x = torch.randn(args.size, args.size, device=args.device)
    n = x.numel()
    bw = copy_bandwidth(x, args.device, args.runs) if args.device != "cpu" else None
    rows = []
    tasks = [(f, op) for f in args.formats for op in OPS]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=console, transient=True) as prog:
        bar = prog.add_task("benchmark", total=len(tasks))
        for name, op in tasks:
            prog.update(bar, description=f"{name} {op}")
            ours = op_callable("elastiq", name, op, x)
            peer = op_callable("torchao", name, op, x) if args.device == "cpu" else None
            ours(), peer and peer()  # warm-up: lazy imports and caches
            t_ours, t_peer = [], []
            for _ in range(args.runs):  # alternate, so drift in machine load hits both
                t_ours.append(timed(ours, args.device))
                if peer:
                    t_peer.append(timed(peer, args.device))
            identical = None
            if peer and op != "quantize":
                identical = same_values(ours().float(), peer().float())
            elif peer:
                a, b = F.dequantize(ours()), torchao_ops(name)[1](peer())
                identical = same_values(a, b)
            row = {
                "format": name, "op": op,
                "elastiq_elems_per_s": n / statistics.median(t_ours),
                "torchao_elems_per_s": n / statistics.median(t_peer) if t_peer else None,
                "bit_identical": identical,
            }
            row["ratio"] = row["elastiq_elems_per_s"] / row["torchao_elems_per_s"] if t_peer else None
            if bw:
                moved = n * 4 + F.storage_bytes(F.get(name), x.shape)  # read one side, write the other
                row["fraction_of_copy_bandwidth"] = moved / statistics.median(t_ours) / bw
            if not args.no_memory and args.device == "cpu":
                for impl in ("elastiq", "torchao"):
                    extra = peak_memory(impl, name, op, args.size) if (impl == "elastiq" or peer) else None
                    row[f"{impl}_peak_over_input"] = extra / (n * 4) if extra is not None else None
            rows.append(row)
            prog.advance(bar)

    table = Table(title=f"{args.size}x{args.size} fp32 on {args.device}, median of {args.runs} runs (M elements/s)")
    for col in ["format", "op", "elastiq", "torchao", "ratio", "bit-identical", "peak/input elastiq", "peak/input torchao"]:
        table.add_column(col, justify="left" if col in ("format", "op") else "right")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)
    for r in rows:
        table.add_row(r["format"], r["op"], fmt(r["elastiq_elems_per_s"] / 1e6, ".1f"),
                      fmt(r["torchao_elems_per_s"] and r["torchao_elems_per_s"] / 1e6, ".1f"),
                      fmt(r["ratio"], ".2f") + ("x" if r["ratio"] else ""),
                      {True: "yes", False: "NO", None: "-"}[r["bit_identical"]],
                      fmt(r.get("elastiq_peak_over_input"), ".2f"), fmt(r.get("torchao_peak_over_input"), ".2f"))
    console.print(table)
    meta = {"size": args.size, "runs": args.runs, "device": args.device, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}
    try:
        import torchao
        meta["torchao"] = torchao.__version__
    except ImportError:
        pass
    if bw:
        meta["copy_bandwidth_bytes_per_s"] = bw
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"), meta)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(rows, path: Path, meta) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OPS), figsize=(15, 4.5), sharey=True)
    for ax, op in zip(axes, OPS):
        rs = [r for r in rows if r["op"] == op]
        xs = range(len(rs))
        ax.bar([i - 0.2 for i in xs], [r["elastiq_elems_per_s"] / 1e6 for r in rs], 0.4, label="elastiq")
        ax.bar([i + 0.2 for i in xs], [(r["torchao_elems_per_s"] or 0) / 1e6 for r in rs], 0.4, label="torchao")
        ax.set_xticks(list(xs), [r["format"] for r in rs], rotation=45, ha="right")
        ax.set_title(op)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("M elements / s (higher is better)")
    axes[0].legend()
    fig.suptitle(f"{meta['size']}x{meta['size']} fp32, {meta['device']}, {meta['threads']} threads, torch {meta['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
