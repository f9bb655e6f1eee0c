"""A precision for emulated arithmetic: a torch float dtype or any elastiq format.

Values are carried in float32 (float64 where a precision asks for it) and rounded
onto the precision after each operation the precision governs. A torch dtype rounds
by a cast there and back (round to nearest even, as the hardware does); an elastiq
format rounds with ``fake_quantize`` (block scales along the last axis), so MX, NVFP4
and NxFP arithmetic can be studied with the same code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from elastiq import formats as F

_DTYPES = {
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp8_e4m3": torch.float8_e4m3fn, "float8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2, "float8_e5m2": torch.float8_e5m2,
}
_MANT = {torch.float64: 52, torch.float32: 23, torch.float16: 10, torch.bfloat16: 7,
         torch.float8_e4m3fn: 3, torch.float8_e5m2: 2}
_SHORT = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
          torch.float8_e4m3fn: "fp8_e4m3", torch.float8_e5m2: "fp8_e5m2"}


@dataclass(frozen=True)
class Precision:
    """Either ``dtype`` (a torch float dtype) or ``fmt`` (an elastiq format) is set."""

    name: str
    dtype: torch.dtype | None = None
    fmt: F.Format | None = None

    @property
    def mantissa_bits(self) -> int | None:
        if self.dtype is not None:
            return _MANT[self.dtype]
        g = self.fmt.grid
        return g.mbits if g.kind == "float" else None

    def covers(self, carrier: torch.dtype) -> bool:
        """True when rounding onto this precision leaves ``carrier`` values unchanged."""
        return self.dtype is not None and _MANT[self.dtype] >= _MANT[carrier] \
            and torch.finfo(self.dtype).max >= torch.finfo(carrier).max

    def round(self, x: torch.Tensor, ste: bool = False) -> torch.Tensor:
        """``x`` rounded onto this precision, in x's dtype. ``ste``: gradients pass
        straight through (needed for formats; a dtype cast is differentiable already)."""
        if self.covers(x.dtype):
            return x
        if self.dtype is not None:
            return x.to(self.dtype).to(x.dtype)
        y = F.fake_quantize(x.detach() if ste else x, self.fmt)
        return x + (y - x).detach() if ste else y

    def __str__(self) -> str:
        return self.name


def precision(spec) -> Precision:
    """A :class:`Precision` from a torch dtype, a dtype name (fp64, fp32, fp16, bf16,
    fp8_e4m3, fp8_e5m2), an elastiq format name or string, or a Precision."""
    if isinstance(spec, Precision):
        return spec
    if isinstance(spec, torch.dtype):
        if spec not in _SHORT:
            raise ValueError(f"{spec} is not a float dtype this lab emulates; use one of {sorted(set(_SHORT.values()))}")
        return Precision(_SHORT[spec], dtype=spec)
    if isinstance(spec, F.Format):
        return Precision(F.spec(spec) if spec.name == "custom" else spec.name, fmt=spec)
    if not isinstance(spec, str):
        raise TypeError(f"a precision is a torch dtype, a name or an elastiq format, got {type(spec).__name__}")
    key = spec.strip().lower()
    if key in _DTYPES:
        return Precision(_SHORT[_DTYPES[key]], dtype=_DTYPES[key])
    try:
        return Precision(key, fmt=F.get(key))
    except ValueError:
        raise ValueError(f"unknown precision {spec!r}: use a float dtype ({', '.join(sorted(set(_SHORT.values())))}) "
                         f"or an elastiq format ({', '.join(F.names()[:6])}, ...; see `elastiq formats`)") from None


def carrier_for(*precisions: Precision) -> torch.dtype:
    """float64 when any precision needs it, else float32."""
    return torch.float64 if any(p.dtype == torch.float64 for p in precisions) else torch.float32
