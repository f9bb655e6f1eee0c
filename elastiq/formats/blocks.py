"""The format's cast split in two, for quantizers that choose block scales first and
round elements later (GPTQ, scale search): ``choose`` fixes each block's scale code and
grid by the format's own rule; ``cast_with`` rounds any columns of those blocks onto
the chosen grid and scale; ``pack_codes`` stores the result as a :class:`Packed`.

Rows are the tensor viewed along ``fmt.axis`` (see ``cast.Geometry``); a *group* is
the columns of one block in every row, so one choice holds one entry per row. Going
through ``choose`` and ``cast_with`` on a whole group gives the codes ``quantize``
gives (tests check this), so every value stored this way is a code of the format.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cast import Geometry, Packed, _encode_chunk, _prepare
from .catalog import resolve
from .grids import decode, encode
from .packing import pack_bits


@dataclass
class Choice:
    """Per row of one group: scale code, grid index (None: a single grid), and the
    dequantize / quantize multipliers they give."""

    scode: torch.Tensor
    sel: torch.Tensor | None
    deq: torch.Tensor
    qmul: torch.Tensor


def tensor_scale(w: torch.Tensor, fmt):
    """The second-level scale ``quantize`` would give ``w`` (None for formats without one)."""
    return _prepare(w, fmt)[3]


def choose(group: torch.Tensor, fmt, ts=None, amax: torch.Tensor | None = None) -> Choice:
    """Scale and grid of each row of ``group`` (rows, columns of one block), as the
    format's cast chooses them; ``amax`` (one per row) overrides the scale target."""
    fmt = resolve(fmt)
    _, scode, sel, _, deq, qmul = _encode_chunk(group.to(torch.float32), fmt, ts, want_values=False, amax=amax)
    return Choice(scode, sel, deq, qmul)


def cast_with(x: torch.Tensor, fmt, choice: Choice) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int32, values float32) of ``x`` (rows, columns of one group) rounded with the
    fixed ``choice``."""
    fmt = resolve(fmt)
    y = x.to(torch.float32) * choice.qmul[:, None]
    if choice.sel is None:
        codes = encode(y, fmt.grid).to(torch.int32)
        return codes, decode(codes, fmt.grid) * choice.deq[:, None]
    codes = torch.empty(y.shape, dtype=torch.int32, device=y.device)
    vals = torch.empty_like(y)
    for i, g in enumerate(fmt.grids):
        rows = (choice.sel == i).nonzero().squeeze(1)
        if len(rows):
            c = encode(y.index_select(0, rows), g).to(torch.int32)
            codes.index_copy_(0, rows, c)
            vals.index_copy_(0, rows, decode(c, g) * choice.deq.index_select(0, rows)[:, None])
    return codes, vals + 0.0  # -0.0 + 0.0 = +0.0, as the stored code decodes


def pack_codes(fmt, shape, dtype, codes: torch.Tensor, choices: list[Choice], ts=None) -> Packed:
    """A :class:`Packed` from element codes (rows, row) in the format's row view and one
    :class:`Choice` per group, in order along the row."""
    fmt = resolve(fmt)
    geo = Geometry(shape, fmt, codes.device)
    if tuple(codes.shape) != (geo.rows, geo.row) or len(choices) != geo.per_row:
        raise ValueError(f"codes {tuple(codes.shape)} and {len(choices)} groups do not fit shape {tuple(shape)} in {fmt.name}")
    scodes = torch.stack([c.scode for c in choices], 1).reshape(-1)  # block order: row-major, groups within a row
    empty = torch.zeros(0, dtype=torch.uint8, device=codes.device)
    sels = torch.stack([c.sel for c in choices], 1).reshape(-1) if fmt.selector_bits else None
    packed = Packed(fmt, geo.shape, dtype, codes=pack_bits(codes.reshape(-1), fmt.element_bits),
                    scales=pack_bits(scodes, fmt.scale.bits),
                    selectors=pack_bits(sels, fmt.selector_bits) if sels is not None else empty, tensor_scale=ts)
    packed.validate()
    return packed
