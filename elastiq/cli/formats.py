"""The ``elastiq formats`` command: the format catalog, and a cast of a sample tensor to each format."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import console, fail, write_json


def _sample(rows: int, cols: int, seed: int):
    """A weight-like sample: Student-t(4) elements (outliers) times log-normal row scales."""
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t = torch.distributions.StudentT(4.0).sample((rows, cols))
    return t * torch.exp(0.5 * torch.randn(rows, 1, generator=g)) * 0.02


def formats(
    only: Optional[List[str]] = typer.Argument(None, help="formats to show (names or 'key=value,...' strings); default: the catalog"),
    values: Optional[str] = typer.Option(None, "--values", help="print every code's value of this format's element grid(s)"),
    rows: int = typer.Option(1024, help="rows of the sample tensor"),
    cols: int = typer.Option(1024, help="columns of the sample tensor"),
    seed: int = typer.Option(0, help="seed of the sample tensor"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the table as JSON here"),
) -> None:
    """The format catalog, and a cast of a sample tensor to each format."""
    from elastiq import formats as F

    try:
        if values:
            _print_values(F.get(values))
            return
        fmts = [F.get(n) for n in (only or F.names())]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if rows < 1 or cols < 1:
        fail(ValueError(f"--rows and --cols must be at least 1, got {rows} x {cols}"))
    if json_out and json_out.is_dir():
        fail(ValueError(f"--json {json_out} is a directory: give a file name, e.g. {json_out / 'formats.json'}"))
    x = _sample(rows, cols, seed)
    table = Table(title=f"elastiq formats: cast of a {rows}x{cols} Student-t(4) sample (seed {seed})")
    for col, just in [("format", "left"), ("element grid(s)", "left"), ("block", "right"), ("scale", "left"),
                      ("round", "left"), ("bits/elem", "right"), ("packed KiB", "right"), ("rel. MSE", "right"),
                      ("SQNR dB", "right"), ("quantize ms", "right")]:
        table.add_column(col, justify=just)
    results = []
    power = float((x.double() ** 2).sum())
    for fmt in fmts:
        t0 = time.perf_counter()
        p = F.quantize(x, fmt)
        ms = (time.perf_counter() - t0) * 1e3
        err = float(((F.dequantize(p).double() - x.double()) ** 2).sum())
        rel = err / power
        r = {
            "format": fmt.name, "grids": [g.name for g in fmt.grids], "block": fmt.block or "row",
            "scale": fmt.scale.name + ("+fp32" if fmt.tensor_scale else ""), "rounding": fmt.rounding,
            "bits_per_element": F.bits_per_element(fmt, cols), "nbytes": p.nbytes, "rel_mse": rel,
            "sqnr_db": -10 * math.log10(rel) if rel > 0 else float("inf"), "quantize_ms": ms,
        }
        results.append(r)
        table.add_row(r["format"], _grids_label(fmt.grids), str(r["block"]), r["scale"], r["rounding"],
                      f"{r['bits_per_element']:.4g}", f"{p.nbytes / 1024:.1f}", f"{rel:.3e}", f"{r['sqnr_db']:.2f}", f"{ms:.1f}")
    console.print(table)
    write_json(json_out, results)


def _grids_label(grids) -> str:
    """'e2m1~±5 | e1m2~±0.25' for grids that come in +/- recycled pairs."""
    names = [g.name for g in grids]
    out = []
    for n in names:
        if "~-" in n and n.replace("~-", "~") in names:
            continue
        out.append(n.replace("~", "~±") if n.replace("~", "~-") in names else n)
    return " | ".join(out)


def _print_values(fmt) -> None:
    for g in fmt.grids:
        if g.bits > 8:
            console.print(f"{g.name}: {1 << g.bits} codes, too many to list")
            continue
        t = Table(title=f"{fmt.name}: grid {g.name} ({g.bits} bits, max {g.max_value:g})")
        t.add_column("code", justify="right")
        t.add_column("bits", justify="right")
        t.add_column("value", justify="right")
        for code, v in enumerate(g.values().tolist()):
            t.add_row(str(code), format(code, f"0{g.bits}b"), f"{v:g}")
        console.print(t)

