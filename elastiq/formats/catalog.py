"""Named grids and format presets, the one-string format syntax, and ``resolve``: the one
way a public function of elastiq.formats turns its format argument (a preset name, a
one-string spec or a :class:`Format`) into a Format.

A format string is a preset name, optionally followed by ``key=value`` overrides,
or only overrides (a custom format starting from MX defaults)::

    "mxfp4"                             OCP MXFP4
    "mxfp4,round=rceil"                 MXFP4 with cuBLAS scale rounding
    "elem=e2m1|e1m2,block=32,scale=ue5m3,round=even,tscale=1"
    "elem=int4,block=64,scale=fp16,round=even"

keys: ``elem`` (grid names joined by ``|`` for per-block choice), ``block`` (an
integer or ``channel``), ``axis``, ``scale`` (a scale grid name), ``round``
(floor/ceil/even/rceil), ``tscale`` (0/1: per-tensor float32 scale).
Grid names: ``intN``, ``eXmY`` (OCP conventions: e4m3 = FN, e5m2 = IEEE, others
all-finite; a suffix ``fn``/``ieee``/``none`` overrides), ``nf4``, ``uniformN`` (all 2^N
codes evenly spaced, no zero), ``intNneg``/``intNpos`` (all 2^N integer codes, the extra
one on the negative or positive side), ``ueXmY`` (unsigned, all-ones = NaN; for scales),
``e8m0``, ``fp16``, ``bf16``, ``fp32``; a grid followed by ``~V`` recycles its redundant code (-0) into the extra level V.
"""
from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from statistics import NormalDist

import torch

from .format import Format
from .grids import Grid


# ---- grids ---------------------------------------------------------------------
def int_grid(bits: int, step: float = 1.0) -> Grid:
    return Grid("int", bits, step=step, name=f"int{bits}")


def float_grid(ebits: int, mbits: int, special: str | None = None, signed: bool = True, bias: int | None = None) -> Grid:
    if special is None:
        special = {(4, 3): "fn", (5, 2): "ieee"}.get((ebits, mbits), "none")
    bias = (1 << (ebits - 1)) - 1 if bias is None else bias
    name = f"{'' if signed else 'u'}e{ebits}m{mbits}"
    return Grid("float", ebits + mbits + int(signed), ebits=ebits, mbits=mbits, bias=bias, special=special, signed=signed, name=name)


def _nf4_levels() -> tuple[float, ...]:
    """NF4 (QLoRA): normal quantiles, 8 positive and 7 negative, plus an exact zero,
    normalized to [-1, 1]; built as bitsandbytes builds it (offset 0.9677083)."""
    ppf = NormalDist().inv_cdf
    pos = [ppf(float(p)) for p in torch.linspace(0.9677083, 0.5, 9)[:-1]]
    neg = [-ppf(float(p)) for p in torch.linspace(0.9677083, 0.5, 8)[:-1]]
    v = sorted(pos + [0.0] + neg)
    top = max(abs(t) for t in v)
    return tuple(float(torch.tensor(t / top, dtype=torch.float32)) for t in v)


E8M0 = Grid("float", 8, ebits=8, mbits=0, bias=127, special="fn", signed=False, subnormals=False, name="e8m0")
FP16 = Grid("float", 16, ebits=5, mbits=10, bias=15, special="ieee", name="fp16")
BF16 = Grid("float", 16, ebits=8, mbits=7, bias=127, special="ieee", name="bf16")
FP32 = Grid("float", 32, ebits=8, mbits=23, bias=127, special="ieee", name="fp32")
NF4 = Grid("codebook", 4, levels=_nf4_levels(), name="nf4")


def uniform_grid(bits: int) -> Grid:
    """All 2**bits codes, evenly spaced, no zero level: ±0.5, ±1.5, ... (an intN grid is
    symmetric, so it keeps 2**bits - 1 levels: int2 is ternary, int4 has 15)."""
    half = 1 << (bits - 1)
    return Grid("codebook", bits, levels=tuple(k + 0.5 for k in range(-half, half)), name=f"uniform{bits}")


def full_int_grid(bits: int, extra: str) -> Grid:
    """All 2**bits codes of an integer grid: -2^(bits-1) ... 2^(bits-1) - 1 (``extra="neg"``, two's
    complement, as GPTQ's symmetric intN) or its mirror (``"pos"``). Zero is a level; the scale
    maps a block's amax to 2^(bits-1), so the short side clips its largest values by one step."""
    half = 1 << (bits - 1)
    lo, hi = (-half, half - 1) if extra == "neg" else (-half + 1, half)
    return Grid("codebook", bits, levels=tuple(float(k) for k in range(lo, hi + 1)), name=f"int{bits}{extra}")


UNIFORM2 = uniform_grid(2)

_NAMED_GRIDS = {"e8m0": E8M0, "fp16": FP16, "bf16": BF16, "fp32": FP32, "nf4": NF4}  # uniformN: by pattern


@lru_cache(maxsize=None)
def grid(spec: str) -> Grid:
    """A grid from its name (see the module docstring)."""
    s = spec.strip().lower()
    recycle = None
    if "~" in s:
        s, _, value = s.partition("~")
        try:
            recycle = float(value)
        except ValueError:
            raise ValueError(f"grid {spec!r}: the recycled level after '~' must be a number") from None
    if s in _NAMED_GRIDS:
        g = _NAMED_GRIDS[s]
    elif m := re.fullmatch(r"int(\d+)", s):
        g = int_grid(int(m.group(1)))
    elif (m := re.fullmatch(r"int(\d+)(neg|pos)", s)) and 2 <= int(m.group(1)) <= 8:
        g = full_int_grid(int(m.group(1)), m.group(2))
    elif (m := re.fullmatch(r"uniform(\d+)", s)) and 2 <= int(m.group(1)) <= 8:
        g = uniform_grid(int(m.group(1)))
    elif m := re.fullmatch(r"(u?)e(\d+)m(\d+)(fn|ieee|none)?", s):
        unsigned, e, mb, special = m.group(1) == "u", int(m.group(2)), int(m.group(3)), m.group(4)
        if unsigned and special is None:
            special = "fn"  # unsigned scale grids keep all-ones as NaN, like E8M0 and E4M3
        g = float_grid(e, mb, special=special, signed=not unsigned)
    else:
        raise ValueError(
            f"unknown grid {spec!r}: use intN, eXmY (optionally with suffix fn/ieee/none), ueXmY, "
            f"nf4, uniformN or intNneg/intNpos (N = 2..8), e8m0, fp16, bf16 or fp32, optionally followed by ~V to recycle -0 into level V"
        )
    if recycle is not None:
        g = replace(g, recycle=recycle, name=f"{g.name}~{recycle:g}")
    return g


# ---- presets --------------------------------------------------------------------
def _mx(name, elem, rounding="floor", desc="") -> Format:
    return Format(name, (grid(elem),), E8M0, block=32, rounding=rounding, description=desc)


def _presets() -> dict[str, Format]:
    p: dict[str, Format] = {}

    def add(f: Format):
        p[f.name] = f

    for bits in (8, 6, 5, 4, 3, 2):
        add(Format(f"int{bits}", (int_grid(bits),), FP16, block=128, rounding="even",
                   description=f"symmetric INT{bits}, groups of 128, FP16 scale = amax/{2 ** (bits - 1) - 1}"))
    add(Format("int4-g64", (int_grid(4),), FP16, block=64, rounding="even", description="symmetric INT4, groups of 64"))
    for block in (64, 32):
        add(Format(f"int2x4-g{block}", (UNIFORM2,), FP16, block=block, rounding="even",
                   description=f"2 bits, 4 evenly spaced levels (±0.5, ±1.5), groups of {block}, FP16 scale = amax/1.5"))
    for bits in (4, 3):  # every code used, zero kept: the short side is picked per block (one selector bit)
        half = 1 << (bits - 1)
        add(Format(f"int{bits}x{2 * half}", (full_int_grid(bits, "neg"), full_int_grid(bits, "pos")), FP16, block=128,
                   rounding="even", description=f"{bits} bits, all {2 * half} codes: -{half}…{half - 1} or "
                   f"-{half - 1}…{half}, the better per group of 128, FP16 scale = amax/{half}"))
    add(Format("int8-channel", (int_grid(8),), FP16, block=None, rounding="even", description="symmetric INT8, one FP16 scale per row"))
    add(Format("nf4", (NF4,), FP16, block=64, rounding="even", description="QLoRA NormalFloat-4, groups of 64, FP16 absmax scale"))
    add(Format("mxint8", (int_grid(8, step=2.0**-6),), E8M0, block=32, description="OCP MXINT8: int8 x 2^-6, E8M0 scale"))
    mx = {"mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2", "mxfp6_e3m2": "e3m2", "mxfp6_e2m3": "e2m3", "mxfp4": "e2m1"}
    for name, elem in mx.items():
        add(_mx(name, elem, desc=f"OCP MX {elem.upper()}, E8M0 scale, FLOOR (spec)"))
        add(_mx(f"{name}_rceil", elem, "rceil", desc=f"MX {elem.upper()} with RCEIL scale rounding (cuBLAS)"))
    add(Format("nvfp4", (grid("e2m1"),), grid("e4m3"), block=16, rounding="even", tensor_scale=True,
               description="NVIDIA NVFP4: E2M1, blocks of 16, E4M3 scale, FP32 tensor scale"))
    for f in _nxfp_presets():
        add(f)
    return p


def _nxfp_presets() -> list[Format]:
    """NxFP as elastiq reconstructs it (docs/formats.md says why and how it was chosen):

    * NanoMantissa: the 8-bit block scale is UE5M3 (3 mantissa bits) under an FP32
      tensor scale, rounded to nearest, instead of a power-of-two E8M0.
    * Adaptive Microexponent: each block picks the element grid (exponent/mantissa
      split) with the least squared error; the pick costs selector bits per block.
    * Code Recycling: negative zero decodes to an extra level; the level's sign is one
      more per-block pick, so one 2-bit selector serves both techniques.
    """
    nm = dict(scale=grid("ue5m3"), rounding="even", tensor_scale=True, block=32)

    def pm(*specs):  # each grid with its recycled level on either side
        return tuple(grid(f"{g}~{sign}{v}") for g, v in specs for sign in ("", "-"))

    out = [
        Format("mxfp4_nm", (grid("e2m1"),), **nm, description="MXFP4 + NanoMantissa only (UE5M3 scale, FP32 tensor scale)"),
        Format("mxfp4_am", (grid("e2m1"), grid("e1m2")), E8M0, block=32, rounding="floor",
               description="MXFP4 + Adaptive Microexponent only (E2M1 or E1M2 per block)"),
        Format("mxfp4_cr", (grid("e2m1~5"),), E8M0, block=32, rounding="floor",
               description="MXFP4 + Code Recycling only (-0 decodes to +5)"),
    ]
    family = {
        "nxfp4": (("e2m1", 5), ("e1m2", 0.25)),
        "nxfp5": (("e2m2", 7.5), ("e1m3", 0.125)),
        "nxfp6": (("e2m3", 7.75), ("e1m4", 0.0625)),
        "nxfp8": (("e2m5", 7.9375), ("e1m6", 4)),
    }
    for name, specs in family.items():
        grids = pm(*specs)
        out.append(Format(name, grids, **nm, description="NxFP: UE5M3 scale, per-block pick of " + " / ".join(g.name for g in grids)))
    return out


PRESETS: dict[str, Format] = _presets()


# ---- lookup and parsing ---------------------------------------------------------
def names() -> list[str]:
    return list(PRESETS)


def get(name: str) -> Format:
    """A preset by name, or a format from the one-string syntax. Unknown names raise
    ``ValueError`` listing the catalog."""
    if not isinstance(name, str):
        raise TypeError(f"format name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    if "=" in key:
        return parse(key)
    raise ValueError(f"unknown format {name!r}; the catalog has: {', '.join(PRESETS)} (or write a custom 'key=value,...' string)")


def resolve(fmt) -> Format:
    """The one resolver every public function of elastiq.formats takes its format through:
    a :class:`Format` as is, or a preset name or one-string spec (``get``)."""
    if isinstance(fmt, Format):
        return fmt
    return get(fmt)


def bits_per_element(fmt, row_length: int | None = None) -> float:
    """Storage bits per element of ``fmt`` (a name, spec or Format), scale and selector bits
    included: ``bits_per_element("mxfp4") == 4.25``. See :meth:`Format.bits_per_element`."""
    return resolve(fmt).bits_per_element(row_length)


def storage_bytes(fmt, shape) -> int:
    """Exact bytes a packed tensor of ``shape`` takes in ``fmt`` (a name, spec or Format):
    what ``quantize(x, fmt).nbytes`` reports."""
    return resolve(fmt).storage_bytes(shape)


def parse(spec: str) -> Format:
    parts = [t.strip() for t in spec.strip().lower().split(",") if t.strip()]
    base = Format("custom", (grid("e2m1"),), E8M0)
    if parts and "=" not in parts[0]:
        base = get(parts.pop(0))
    fields: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"format string {spec!r}: expected key=value, got {part!r}")
        if key == "elem":
            fields["grids"] = tuple(grid(g) for g in value.split("|"))
        elif key == "block":
            fields["block"] = None if value == "channel" else _int(spec, key, value)
        elif key == "axis":
            fields["axis"] = _int(spec, key, value)
        elif key == "scale":
            fields["scale"] = grid(value)
        elif key == "round":
            fields["rounding"] = value
        elif key == "tscale":
            fields["tensor_scale"] = value in ("1", "true", "yes")
        else:
            raise ValueError(f"format string {spec!r}: unknown key {key!r} (use elem, block, axis, scale, round, tscale)")
    return replace(base, name=spec.strip().lower(), **fields)


def spec(fmt) -> str:
    """The one-string form of any format: ``get(spec(fmt))`` rebuilds an equal format.
    Presets keep their name; other formats spell out every field."""
    fmt = resolve(fmt)
    if PRESETS.get(fmt.name) == fmt:
        return fmt.name
    for g in fmt.grids + (fmt.scale,):
        try:
            if grid(g.name) != g:
                raise ValueError
        except ValueError:
            raise ValueError(f"format {fmt.name!r} uses grid {g.name!r}, which has no string form; "
                             f"build it from named grids to save it") from None
    return ",".join([
        "elem=" + "|".join(g.name for g in fmt.grids),
        f"block={fmt.block or 'channel'}",
        f"axis={fmt.axis}",
        f"scale={fmt.scale.name}",
        f"round={fmt.rounding}",
        f"tscale={int(fmt.tensor_scale)}",
    ])


def _int(spec, key, value) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"format string {spec!r}: {key} must be an integer, got {value!r}") from None
