"""Element grids: the set of values one low-bit code can take, and the exact
round-to-nearest-even cast from float32 onto it.

A grid is plain data (a frozen dataclass). Three kinds:

* ``int``      symmetric two's-complement integers times ``step`` (MXINT8: step 2**-6).
               The code -2**(bits-1) is never produced; with ``recycle`` it decodes
               to that extra value instead.
* ``float``    IEEE-like minifloats: sign, ``ebits`` exponent, ``mbits`` mantissa,
               ``bias``, subnormals, and a ``special`` policy:
               ``none`` every code is finite (OCP FP6/FP4), ``fn`` only the all-ones
               code is NaN (OCP FP8 E4M3, E8M0), ``ieee`` the top exponent holds Inf/NaN.
               With ``recycle`` the negative-zero code decodes to that extra value.
* ``codebook`` an arbitrary sorted set of levels (NF4); code = index.

Codes are non-negative integers below 2**bits; sign-magnitude for floats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

F32_MANT = 23
F32_BIAS = 127


@dataclass(frozen=True)
class Grid:
    kind: str  # "int" | "float" | "codebook"
    bits: int
    ebits: int = 0
    mbits: int = 0
    bias: int = 0
    special: str = "none"  # float only: "none" | "fn" | "ieee"
    signed: bool = True
    subnormals: bool = True
    step: float = 1.0  # int only
    levels: tuple = ()  # codebook only, ascending
    recycle: float | None = None  # value of the redundant code (-0 / -2**(bits-1))
    name: str = ""

    def __post_init__(self):
        if self.kind not in ("int", "float", "codebook"):
            raise ValueError(f"grid kind must be int, float or codebook, not {self.kind!r}")
        if not 1 <= self.bits <= (32 if self.kind == "float" else 16):
            raise ValueError(f"grid {self.name!r}: bits must be in 1..16 (floats up to 32), got {self.bits}")
        if self.kind == "float":
            if self.ebits < 1 or self.mbits < 0 or self.ebits > 8 or self.mbits > 23:
                raise ValueError(f"float grid needs 1 <= ebits <= 8 and 0 <= mbits <= 23, got E{self.ebits}M{self.mbits}")
            if self.ebits + self.mbits + int(self.signed) != self.bits:
                raise ValueError(f"float grid E{self.ebits}M{self.mbits} needs {self.ebits + self.mbits + int(self.signed)} bits, not {self.bits}")
            if self.special not in ("none", "fn", "ieee"):
                raise ValueError(f"special must be none, fn or ieee, not {self.special!r}")
        if self.kind == "int" and self.bits < 2:
            raise ValueError("integer grids need at least 2 bits")
        if self.kind == "codebook":
            lv = list(self.levels)
            if not 2 <= len(lv) <= 2**self.bits or lv != sorted(set(lv)):
                raise ValueError(f"codebook needs 2..{2**self.bits} distinct ascending levels, got {len(lv)}")
        if self.recycle is not None:
            if self.kind == "codebook" or not self.signed:
                raise ValueError("code recycling needs a signed int or float grid (it reuses -0 / -2**(bits-1))")
            _recycle_window(self)  # refuses a level the grid already has

    # ---- derived facts -------------------------------------------------
    @property
    def redundant_code(self) -> int | None:
        """The code that the plain grid never produces (negative zero, or -2**(bits-1))."""
        if self.kind == "codebook" or not self.signed:
            return None
        return 1 << (self.bits - 1)

    @property
    def max_value(self) -> float:
        """Largest finite value of the base grid (recycled level excluded): the scale target."""
        return _max_value(self)

    @property
    def emax(self) -> int:
        """floor(log2(max_value)): the element exponent the OCP scale rule subtracts."""
        return math.floor(math.log2(self.max_value))

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias) if self.subnormals else 2.0 ** (-self.bias)

    def values(self) -> torch.Tensor:
        """float32 value of every code 0 .. 2**bits-1 (NaN / ±Inf where the grid says)."""
        return _values(self).clone()

    def __str__(self) -> str:
        return self.name or f"{self.kind}{self.bits}"


@lru_cache(maxsize=None)
def _values(g: Grid) -> torch.Tensor:
    if g.bits > 16:
        raise ValueError(f"grid {g} is too wide for a value table")
    n = 1 << g.bits
    out = []
    for code in range(n):
        if g.kind == "codebook":
            out.append(g.levels[code] if code < len(g.levels) else float("nan"))
        elif g.kind == "int":
            v = code - n if code >= n // 2 else code
            out.append(v * g.step)
        else:
            out.append(_float_value(g, code))
    if g.recycle is not None:
        out[g.redundant_code] = g.recycle
    return torch.tensor(out, dtype=torch.float64).to(torch.float32)


@lru_cache(maxsize=None)
def _values_on(g: Grid, device: str) -> torch.Tensor:
    return _values(g).to(device)


def value_table(g: Grid, device) -> torch.Tensor:
    """The value of every code, as a float32 tensor on ``device`` (cached)."""
    return _values(g) if str(device) == "cpu" else _values_on(g, str(device))


def _float_value(g: Grid, code: int) -> float:
    sign = -1.0 if g.signed and code >> (g.bits - 1) else 1.0
    e = (code >> g.mbits) & ((1 << g.ebits) - 1)
    m = code & ((1 << g.mbits) - 1)
    top_e = (1 << g.ebits) - 1
    if g.special == "ieee" and e == top_e:
        return sign * math.inf if m == 0 else math.nan
    if g.special == "fn" and e == top_e and m == (1 << g.mbits) - 1:
        return math.nan
    if e == 0 and g.subnormals:
        return sign * m * 2.0 ** (1 - g.bias - g.mbits)
    return sign * 2.0 ** (e - g.bias) * (1 + m / 2**g.mbits)


@lru_cache(maxsize=None)
def _max_value(g: Grid) -> float:
    if g.kind == "int":
        return (2 ** (g.bits - 1) - 1) * g.step
    if g.kind == "float":
        top, full = (1 << g.ebits) - 1, 2 - 2.0 ** -g.mbits
        if g.special == "none":
            return 2.0 ** (top - g.bias) * full
        if g.special == "fn" and g.mbits > 0:
            return 2.0 ** (top - g.bias) * (full - 2.0 ** -g.mbits)
        return 2.0 ** (top - 1 - g.bias) * full
    return float(_values(g)[torch.isfinite(_values(g))].abs().max())  # codebooks never recycle


# ---- encoding ---------------------------------------------------------------
def encode(y: torch.Tensor, g: Grid, overwrite: bool = False) -> torch.Tensor:
    """Round float32 ``y`` (already divided by its scale) to the nearest code of ``g``.

    Ties go to the even code (round-half-even). Finite values beyond the grid, and
    ±Inf, saturate to ±max. NaN gives the grid's NaN code where it has one (else the
    code is unspecified: callers mark NaN blocks through the scale). Returns integer
    codes (int32, or uint8 for native FP8). ``overwrite`` lets it reuse y's memory.
    """
    if g.recycle is not None:
        return recycle(y, encode(y, base_grid(g)), g)
    if g.kind == "int":
        return _encode_int(y, g)
    if g.kind == "codebook":
        return _encode_codebook(y, g)
    return _encode_float(y, g, overwrite)


@lru_cache(maxsize=None)
def base_grid(g: Grid) -> Grid:
    """The grid without its recycled level."""
    return replace(g, recycle=None, name=g.name.split("~")[0])


def recycle(y: torch.Tensor, base_codes: torch.Tensor, g: Grid) -> torch.Tensor:
    """Codes of recycling grid ``g`` from the codes of its base grid."""
    return torch.where(recycle_mask(y, g), g.redundant_code, without_redundant(base_codes, g))


def without_redundant(base_codes: torch.Tensor, g: Grid) -> torch.Tensor:
    """Base codes with -0 turned into +0: in a recycling grid that code means the extra level."""
    return torch.where(base_codes == g.redundant_code, 0, base_codes.to(torch.int32))


def recycle_mask(y: torch.Tensor, g: Grid) -> torch.Tensor:
    """Where inputs are nearer to the extra level than to any base level."""
    lo, hi = _recycle_window(g)
    return (y > lo) & (y < hi)


def _encode_int(y, g):
    qmax = 2 ** (g.bits - 1) - 1
    q = y if g.step == 1.0 else y * (1.0 / g.step)  # step is a power of two: exact
    q = torch.round(q).clamp_(-qmax, qmax).to(torch.int32)
    return q & ((1 << g.bits) - 1)


_NATIVE_FP8 = {(4, 3, 7, "fn"): torch.float8_e4m3fn, (5, 2, 15, "ieee"): torch.float8_e5m2}


def native_dtype(g: Grid):
    """torch's own float8 dtype when ``g`` is exactly that format (its cast is RNE)."""
    if g.signed and g.subnormals and g.recycle is None:
        return _NATIVE_FP8.get((g.ebits, g.mbits, g.bias, g.special))
    return None


@lru_cache(maxsize=None)
def _cast_saturates(dtype) -> bool:
    """Whether torch's cast to ``dtype`` already clamps finite overflow and ±Inf to ±max
    (float8_e4m3fn does in torch >= 2.12; older releases did not)."""
    probe = torch.tensor([1e30, -math.inf, 3e38]).to(dtype).float()
    m = float(torch.finfo(dtype).max)
    return probe.tolist() == [m, -m, m]


def _encode_float(y, g, overwrite=False):
    native = native_dtype(g)
    if native is not None:  # saturate, as the spec says (NaN passes): clamp unless the cast does
        if not _cast_saturates(native):
            y = y.clamp_(-g.max_value, g.max_value) if overwrite else y.clamp(-g.max_value, g.max_value)
        return y.to(native).view(torch.uint8)
    a = y.abs().clamp_(max=g.max_value)  # saturate (NaN stays NaN)
    code = magnitude_code(a, g, "even")
    if g.special == "none":  # NaN's bit pattern names no code of this grid: clamp it onto one (its block's scale is NaN)
        code = code.clamp_(0, (1 << (g.ebits + g.mbits)) - 1)
    if g.signed:  # the sign bit stays on values that round to zero (-0), as hardware and torchao do
        code |= (y.view(torch.int32) >> 31) & (1 << (g.bits - 1))
    if g.special != "none":
        code = torch.where(torch.isnan(y), nan_code(g), code)
    return code


def _round_even_code(a: torch.Tensor, g: Grid) -> torch.Tensor:
    """Half-even code of magnitudes ``a`` by the float adder itself: adding
    c = 2**(e + 23 - mbits), e = max(binade of a, emin), leaves exactly the grid step
    as the sum's last place, so the hardware rounds a onto the grid (ties to even);
    the sum's low bits then count steps from the binade start. (With no mantissa bits
    the adder's "even" is not the even code, so E*M0 grids take the integer path.)"""
    emin_field = F32_BIAS + 1 - g.bias  # float32 exponent field of the grid's min normal
    e = (a.view(torch.int32) >> F32_MANT).clamp_(min=emin_field)
    c = (e + (F32_MANT - g.mbits)) << F32_MANT
    steps = (a + c.view(torch.float32)).view(torch.int32) - c
    return ((e - emin_field) << g.mbits) + steps


def magnitude_code(a: torch.Tensor, g: Grid, mode: str = "even") -> torch.Tensor:
    """Code of a non-negative float32 magnitude ``a`` (already clamped to the grid's
    range) on a float grid, rounding ``even`` (half-even), ``up`` or ``down``.

    Above the minimum normal the float32 bit pattern is re-biased and its low
    (23 - mbits) bits are rounded away in integer arithmetic, which is exact and
    rounds the same way in every binade; below it the value is a multiple of the
    subnormal step, found with one exact power-of-two multiply.
    """
    top_binade = math.floor(math.log2(g.max_value)) + F32_MANT - g.mbits
    if mode == "even" and g.subnormals and g.mbits > 0 and top_binade <= F32_BIAS:
        return _round_even_code(a, g)
    shift = F32_MANT - g.mbits
    t = a.view(torch.int32) - ((F32_BIAS - g.bias) << F32_MANT)
    if shift:
        if mode == "even":
            t = t + (((t >> shift) & 1) + ((1 << (shift - 1)) - 1))
        elif mode == "up":
            t = t + ((1 << shift) - 1)
        t = t >> shift
    if not g.subnormals:
        return t.clamp_(min=0)
    k = g.mbits - 1 + g.bias  # 2**k may overflow float32 (fp32-like grids): split it
    sub = a * 2.0 ** min(k, 100) * 2.0 ** max(k - 100, 0)
    sub = {"even": torch.round, "up": torch.ceil, "down": torch.floor}[mode](sub).to(torch.int32)
    return torch.where(a < g.min_normal, sub, t)


def nan_code(g: Grid) -> int:
    """The NaN code of a float grid with special values (sign bit clear)."""
    return (1 << (g.ebits + g.mbits)) - 1  # all exponent and mantissa bits set


@lru_cache(maxsize=None)
def _recycle_window(g: Grid) -> tuple[float, float]:
    """The extra level r sits between base neighbours b_lo < r < b_hi (or beyond an end);
    inputs strictly inside ((b_lo+r)/2, (r+b_hi)/2) take it, exact midpoints stay on the base grid.
    The midpoints of short-mantissa levels are exact in float32, so the test is exact."""
    base = _values(base_grid(g)).double()
    keep = torch.isfinite(base)
    keep[g.redundant_code] = False  # -0 / the unused -2**(bits-1)
    finite = base[keep]
    r = g.recycle
    below, above = finite[finite < r], finite[finite > r]
    if (finite == r).any():
        raise ValueError(f"recycled value {r} is already a level of grid {g}")
    lo = (float(below.max()) + r) / 2 if len(below) else -math.inf
    hi = (float(above.min()) + r) / 2 if len(above) else math.inf
    return lo, hi


def _encode_codebook(y, g):
    lv = torch.tensor(g.levels, dtype=torch.float64, device=y.device)
    mids = (lv[1:] + lv[:-1]) / 2
    yd = y.double()
    idx = torch.bucketize(yd, mids)  # mids[i-1] < y <= mids[i] -> i
    tie = (idx < len(mids)) & (yd == mids[idx.clamp(max=len(mids) - 1)])
    idx = torch.where(tie & (idx % 2 == 1), idx + 1, idx)
    return idx.to(torch.int32)


def decode(codes: torch.Tensor, g: Grid) -> torch.Tensor:
    """float32 values of integer codes (any integer dtype)."""
    native = native_dtype(g)
    if native is not None:
        return codes.to(torch.uint8).view(native).to(torch.float32)
    table = value_table(g, codes.device)
    return table.index_select(0, codes.reshape(-1).to(torch.int32)).view(codes.shape)  # int32 gather: no int64 copy
