"""Print the catalog and the value table of every element grid as Markdown (for docs/formats.md).

    .venv/bin/python bench/catalog.py > /tmp/catalog.md
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elastiq import formats as F  # noqa: E402
from elastiq.formats.grids import Grid  # noqa: E402


def catalog_table() -> str:
    out = ["| name | element grid(s) | block | scale | scale rounding | bits/element | what it is |",
           "|---|---|---|---|---|---|---|"]
    for name in F.names():
        f = F.get(name)
        grids = ", ".join(g.name for g in f.grids)
        scale = f.scale.name + (" + FP32 per tensor" if f.tensor_scale else "")
        bits = f"{F.bits_per_element(f):g}" if f.block else "8 + 16/row"
        out.append(f"| `{name}` | {grids} | {f.block or 'row'} | {scale} | {f.rounding} | {bits} | {f.description} |")
    return "\n".join(out)


def _fmt(v: float) -> str:
    return repr(v).removesuffix(".0")  # shortest exact decimal


def float_table(g: Grid) -> str:
    """Positive half of a float grid: one row per exponent field, one column per mantissa."""
    v = g.values().tolist()
    head = "| E \\ M | " + " | ".join(format(m, f"0{g.mbits}b") if g.mbits else "-" for m in range(1 << g.mbits)) + " |"
    out = [f"**{g.name}** (bias {g.bias}, special values: {g.special}, max {g.max_value:g}; "
           f"sign bit {g.bits - 1} {'set gives the negatives' if g.signed else 'absent'})", "", head,
           "|" + "---|" * ((1 << g.mbits) + 1)]
    for e in range(1 << g.ebits):
        row = [_fmt(v[(e << g.mbits) | m]) for m in range(1 << g.mbits)]
        out.append(f"| {format(e, f'0{g.ebits}b')} | " + " | ".join(row) + " |")
    return "\n".join(out)


def code_table(g: Grid) -> str:
    v = g.values().tolist()
    out = [f"**{g.name}**", "", "| code | " + " | ".join(str(c) for c in range(len(v))) + " |",
           "|---|" + "---|" * len(v), "| value | " + " | ".join(_fmt(x) for x in v) + " |"]
    return "\n".join(out)


def main() -> None:
    print("## Catalog\n")
    print(catalog_table())
    print("\n## Element grids\n")
    for name in ["e2m1", "e2m3", "e3m2", "e4m3", "e5m2", "e1m2", "e2m2", "e1m3", "e1m4", "e3m4"]:
        print(float_table(F.grid(name)) + "\n")
    print(code_table(F.grid("int4")) + "\n")
    print("MXINT8: two's-complement int8 times 2^-6; codes 0..127 are 0..127/64, 129..255 are -127/64..-1/64, "
          "code 128 (-2) is never produced.\n")
    print(code_table(F.NF4) + "\n")
    print("E8M0 (scales): unsigned, no zero, code c is 2^(c-127) for c = 0..254, code 255 is NaN.\n")


if __name__ == "__main__":
    main()
