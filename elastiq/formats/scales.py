"""Block scales: choose each block's shared scale and store it in the scale grid.

Power-of-two scales (E8M0 and any EkM0) follow OCP MX v1.0 section 6.3 and the
variants torchao names (``ScaleCalculationMode``), with amax the block's largest |x|
and emax = floor(log2(max element)):

* floor  2**(floor(log2 amax) - emax)                      the spec; may clip the block max
* ceil   2**(ceil(log2 amax) - emax)
* even   2**(floor(log2 round(amax to the element's mantissa)) - emax)
* rceil  2**ceil(log2(amax / max element))                 cuBLAS; never clips

A NaN in a block gives the NaN scale code (the block decodes to NaN). floor/ceil/even
exponents above the scale range also give NaN, as the spec says; rceil saturates.

Scales with mantissa bits (UE4M3 for NVFP4, FP16 for integer groups, E5M3 / E8M2 for
NanoMantissa) store amax / max_element rounded into the scale grid: ``even`` to
nearest, ``ceil``/``rceil`` up (never clips), ``floor`` down; clamped to
[smallest normal, largest finite] of the scale grid, as torchao's NVFP4 does.
"""
from __future__ import annotations

import torch

from .catalog import resolve
from .grids import F32_BIAS, F32_MANT, Grid, magnitude_code, nan_code, value_table

_F32_MIN_NORMAL = 2.0**-126


def pow2(e: torch.Tensor) -> torch.Tensor:
    """Exact float32 2**e for integer e in [-149, 127], built from bits."""
    e = e.to(torch.int32)
    normal = ((e.clamp(min=-126) + F32_BIAS) << F32_MANT).view(torch.float32)
    sub = (torch.ones_like(e) << (e.clamp(-149, -127) + 149)).view(torch.float32)
    return torch.where(e >= -126, normal, sub)


def _exponent(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased float32 exponent field and 'has mantissa bits' flag of a >= 0."""
    bits = a.view(torch.int32)
    return ((bits >> F32_MANT) & 0xFF) - F32_BIAS, (bits & 0x7FFFFF) != 0


def _element_mbits(g: Grid) -> int:
    return g.mbits if g.kind == "float" else g.bits - 2  # int: magnitude bits after the leading one


def compute_tensor_scale(x: torch.Tensor, grids, scale: Grid) -> torch.Tensor:
    """NVFP4's second level: amax(finite |x|) / (max element * max scale), float32.

    With several candidate grids the smallest max element is used, so that the block
    holding the tensor's max can take any candidate without its scale saturating.
    An all-zero (or all non-finite) tensor gets 1.0 so that no block scale divides by 0."""
    if x.numel() == 0:
        return torch.ones((), dtype=torch.float32, device=x.device)
    amax = torch.maximum(x.amax(), -x.amin())  # no |x| temporary
    if not torch.isfinite(amax):
        amax = torch.nan_to_num(x.abs(), nan=0.0, posinf=0.0, neginf=0.0).amax()
    ts = amax.to(torch.float32) / (min(g.max_value for g in grids) * scale.max_value)
    if scale.bits < 32:  # a tensor scale so small that 1 / (ts * smallest block scale) overflows float32
        # would turn the quantize multiplier into inf and zeros into NaN: keep it above that
        ts = torch.where(ts > 0, torch.clamp(ts, min=2.0 / (torch.finfo(torch.float32).max * scale.min_normal)), ts)
    return torch.where(ts > 0, ts, torch.ones_like(ts))


def block_scales(amax: torch.Tensor, grid: Grid, rule, ts: torch.Tensor | None):
    """Scale codes (int32), dequantize multipliers and quantize multipliers (float32)
    for a float32 vector of block maxima. ``rule`` is the :class:`Format`."""
    s = rule.scale
    if s.mbits == 0:
        code, qmul = _pow2_scales(amax, grid, s, rule.rounding)
    else:
        code, qmul = _mantissa_scales(amax, grid, s, rule.rounding, ts)
    return code, scale_values(code, rule, ts), qmul


def _pow2_scales(amax, grid, s: Grid, rounding):
    emin_s, emax_s = -s.bias, (1 << s.ebits) - 2 - s.bias  # largest code is NaN
    if rounding == "rceil":
        d = amax / grid.max_value
        e, frac = _exponent(d)
        e = torch.where(d <= 2.0**emin_s, emin_s, e + frac.to(torch.int32))
        e = e.clamp(emin_s, emax_s)
    else:
        a = amax
        if rounding == "even":
            shift = F32_MANT - _element_mbits(grid)
            a = ((a.view(torch.int32) + (1 << (shift - 1))) & ~((1 << shift) - 1)).view(torch.float32)
        e, frac = _exponent(a)
        if rounding == "ceil":
            e = e + frac.to(torch.int32)
        e = (e - grid.emax).clamp(emin_s, emax_s + 1)  # one past the range -> NaN code
    code = torch.where(torch.isnan(amax), nan_code(s), e + s.bias)
    qmul = pow2(-e.clamp(max=emax_s))
    return code.to(torch.int32), qmul


def _mantissa_scales(amax, grid, s: Grid, rounding, ts):
    ideal = amax / grid.max_value
    if ts is not None:
        ideal = ideal / ts
    if s.bits == 32:  # a float32 scale stores the ideal scale itself
        v = ideal.clamp(min=_F32_MIN_NORMAL, max=s.max_value)
        code = v.view(torch.int32)
    else:
        mode = {"even": "even", "floor": "down"}.get(rounding, "up")
        v = ideal.clamp(min=s.min_normal, max=s.max_value)
        code = magnitude_code(v, s, mode)
        if s.special != "none":
            code = torch.where(torch.isnan(amax), nan_code(s), code)
        v = value_table(s, code.device)[code.long()]
    qmul = 1.0 / v if ts is None else (1.0 / ts) / v
    return code.to(torch.int32), qmul


def scale_values(code: torch.Tensor, rule, ts: torch.Tensor | None = None) -> torch.Tensor:
    """Dequantize multiplier of each block: the value of its scale code in format ``rule``
    (a name, spec or Format), times the tensor scale ``ts`` where there is one."""
    s = resolve(rule).scale
    if s.mbits == 0:
        v = torch.where(code == nan_code(s), float("nan"), pow2(code.to(torch.int32) - s.bias))
    elif s.bits == 32:
        v = code.to(torch.int32).view(torch.float32)
    else:
        v = value_table(s, code.device)[code.long()]
    return v if ts is None else ts * v
