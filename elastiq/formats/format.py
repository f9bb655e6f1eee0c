"""A number format = element grid(s) + scale rule + options, as one frozen dataclass.

* ``grids``        one element grid, or several candidates of equal width: each block
                   picks the one with the least squared error (Adaptive Microexponent);
                   the choice is stored in ceil(log2(len(grids))) selector bits per block.
* ``block``        elements per shared scale along ``axis``; ``None`` = one scale per
                   row (per channel). A ragged last block is zero-padded for the scale
                   search; padding is never stored.
* ``scale``        the grid the block scale is stored in (E8M0, UE4M3, FP16, E5M3, ...).
* ``rounding``     how the scale is chosen: ``floor`` (OCP spec), ``ceil``, ``even``, ``rceil``.
* ``tensor_scale`` a second-level float32 scale per tensor (NVFP4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .grids import Grid
from .packing import packed_nbytes

ROUNDINGS = ("floor", "ceil", "even", "rceil")


@dataclass(frozen=True)
class Format:
    name: str
    grids: tuple[Grid, ...]
    scale: Grid
    block: int | None = 32
    axis: int = -1
    rounding: str = "floor"
    tensor_scale: bool = False
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.grids:
            raise ValueError(f"format {self.name!r} needs at least one element grid")
        widths = {g.bits for g in self.grids}
        if len(widths) != 1:
            raise ValueError(f"format {self.name!r}: candidate grids must share one width, got {sorted(widths)}")
        if self.block is not None and self.block < 1:
            raise ValueError(f"format {self.name!r}: block must be a positive integer or None (per channel), got {self.block}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"format {self.name!r}: rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.scale.kind != "float" or self.scale.recycle is not None:
            raise ValueError(f"format {self.name!r}: the scale must be a plain float grid, got {self.scale}")
        if self.scale.max_value > 3.4028234663852886e38:
            raise ValueError(f"format {self.name!r}: scale grid {self.scale} reaches past float32 (use an 'ieee' suffix or fewer exponent bits)")
        if self.scale.mbits == 0 and self.rounding == "even" and any(g.kind == "codebook" for g in self.grids):
            raise ValueError(f"format {self.name!r}: 'even' scale rounding is defined for int and float grids only")

    @property
    def grid(self) -> Grid:
        """The first (base) element grid."""
        return self.grids[0]

    @property
    def element_bits(self) -> int:
        return self.grid.bits

    @property
    def selector_bits(self) -> int:
        return math.ceil(math.log2(len(self.grids))) if len(self.grids) > 1 else 0

    @property
    def block_overhead_bits(self) -> int:
        """Bits stored once per block: the scale code and the grid selector."""
        return self.scale.bits + self.selector_bits

    def bits_per_element(self, row_length: int | None = None) -> float:
        """Storage bits per element including scale and selector bits (mxfp4 = 4.25).

        The per-tensor float32 scale of NVFP4-like formats (32 bits per tensor) is not
        spread over elements here; :meth:`storage_bytes` counts it exactly. For per-channel
        formats pass ``row_length`` to include the per-row scale."""
        block = min(self.block, row_length) if self.block and row_length else (self.block or row_length)  # a block holds a row at most
        if block is None:
            raise ValueError(f"format {self.name!r} scales per channel: pass row_length to count its scale bits")
        return self.element_bits + self.block_overhead_bits / block

    def storage_bytes(self, shape) -> int:
        """Exact bytes a packed tensor of ``shape`` takes (what ``Packed.nbytes`` reports)."""
        shape = tuple(shape)
        numel = math.prod(shape)
        if numel == 0:
            return 4 if self.tensor_scale else 0
        row = shape[self.axis] if shape else 1
        rows = numel // row
        blocks = rows * math.ceil(row / (self.block or row))
        total = packed_nbytes(numel, self.element_bits) + packed_nbytes(blocks, self.scale.bits)
        total += packed_nbytes(blocks, self.selector_bits) if self.selector_bits else 0
        return total + (4 if self.tensor_scale else 0)

    def __str__(self) -> str:
        return self.name
