"""quantize / dequantize / fake_quantize: the block-scaled cast of a tensor to a format.

The tensor is viewed as rows along ``fmt.axis`` (moved last), each row split into
blocks of ``fmt.block`` (a ragged last block is zero-padded while scaling, never
stored). Work runs in chunks of rows of about CHUNK elements: the temporaries of
the elementwise cast stay in cache and peak memory stays near the output size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .catalog import resolve
from .format import Format
from .grids import base_grid, decode, encode, native_dtype, recycle_mask, value_table, without_redundant
from .packing import pack_bits, packed_nbytes, unpack_bits
from .scales import block_scales, compute_tensor_scale, scale_values

CHUNK = 1 << 18  # elements per chunk on CPU: the temporaries stay in cache
CHUNK_ACCELERATOR = 1 << 24  # on a GPU, fewer and larger kernels
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class Packed:
    """A tensor stored in a format: the real bytes, nothing fake-quantized.

    ``codes``: element codes, bit-packed, row-major with ``fmt.axis`` moved last.
    ``scales``: one scale code per block, bit-packed at the scale grid's width.
    ``selectors``: per-block grid choice (Adaptive Microexponent), bit-packed; empty otherwise.
    ``tensor_scale``: float32 second-level scale (NVFP4-like formats) or None.
    """

    fmt: Format
    shape: tuple[int, ...]
    dtype: torch.dtype
    codes: torch.Tensor
    scales: torch.Tensor
    selectors: torch.Tensor
    tensor_scale: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        ts = 4 if self.tensor_scale is not None else 0
        return self.codes.numel() + self.scales.numel() + self.selectors.numel() + ts

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def validate(self) -> None:
        """Refuse a packed object whose buffers do not match its format and shape."""
        geo = Geometry(self.shape, self.fmt)
        expect = {
            "codes": packed_nbytes(geo.numel, self.fmt.element_bits),
            "scales": packed_nbytes(geo.blocks, self.fmt.scale.bits),
            "selectors": packed_nbytes(geo.blocks, self.fmt.selector_bits),
        }
        for name, size in expect.items():
            buf = getattr(self, name)
            if not isinstance(buf, torch.Tensor) or buf.dtype != torch.uint8 or buf.dim() != 1:
                raise ValueError(f"packed {name} must be a 1-D uint8 tensor, got {type(buf).__name__} {getattr(buf, 'dtype', '')}")
            if buf.numel() != size:
                raise ValueError(
                    f"packed {name} has {buf.numel()} bytes, but format {self.fmt.name} with shape "
                    f"{self.shape} needs {size}: the buffer is truncated or belongs to another tensor"
                )
        if self.fmt.tensor_scale != (self.tensor_scale is not None):
            raise ValueError(f"format {self.fmt.name} {'needs' if self.fmt.tensor_scale else 'has no'} a tensor scale")
        assert self.nbytes == self.fmt.storage_bytes(self.shape)


class Geometry:
    """Rows, blocks and chunking of a shape under a format (a name, spec or Format): the
    block arithmetic every packed buffer follows (``rows``, ``row``, ``block``,
    ``per_row``, ``blocks``)."""

    def __init__(self, shape, fmt, device="cpu"):
        fmt = resolve(fmt)
        self.shape = tuple(int(s) for s in shape)
        ndim = max(len(self.shape), 1)
        if not -ndim <= fmt.axis < ndim:
            raise ValueError(f"format {fmt.name} blocks along axis {fmt.axis}, but the tensor has {len(self.shape)} dimensions")
        self.axis = fmt.axis % ndim
        self.numel = math.prod(self.shape)
        self.row = self.shape[self.axis] if self.shape else 1
        self.rows = self.numel // self.row if self.row else 0
        # a block longer than the row holds one row: cap it (one scale per row either way), so an
        # absurd block never allocates its padding
        self.block = min(fmt.block, max(self.row, 1)) if fmt.block else max(self.row, 1)
        self.per_row = math.ceil(self.row / self.block) if self.row else 0
        self.blocks = self.rows * self.per_row
        self.padded = self.per_row * self.block != self.row
        # Chunks hold a multiple of 8 elements so each chunk packs to whole bytes.
        step = 8 // math.gcd(max(self.row, 1), 8)
        chunk = CHUNK if torch.device(device).type == "cpu" else CHUNK_ACCELERATOR
        if all(native_dtype(g) for g in fmt.grids):
            chunk *= 4  # a native FP8 cast is cheap per element: fewer chunks, less per-chunk overhead
        want = max(1, chunk // max(self.row, 1))
        self.chunk_rows = max(step, want - want % step)

    def chunks(self):
        for r0 in range(0, self.rows, self.chunk_rows):
            yield r0, min(r0 + self.chunk_rows, self.rows)


def _as_rows(x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    xm = x.reshape(1) if x.dim() == 0 else x.movedim(geo.axis, -1)
    return xm.reshape(geo.rows, geo.row)


def _check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"cannot quantize a {x.dtype} tensor: elastiq formats take float32, float16, bfloat16 "
            f"or float64 input (convert with x.float())"
        )


def _blocks(xc: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """(rows, row) float32 -> (blocks, block), zero-padding the ragged last block."""
    pad = geo.per_row * geo.block - geo.row
    if pad:
        xc = F.pad(xc, (0, pad))
    return xc.reshape(-1, geo.block)


def _unblock(xb: torch.Tensor, geo: Geometry, nrows: int) -> torch.Tensor:
    return xb.reshape(nrows, geo.per_row * geo.block)[:, : geo.row]


def _encode_chunk(xb: torch.Tensor, fmt: Format, ts, want_values: bool, out: torch.Tensor | None = None,
                  amax: torch.Tensor | None = None):
    """Codes (blocked), scale codes, selectors (or None), dequantized values (or None),
    and each block's dequantize and quantize multipliers.

    With several candidate grids each block keeps the one with the least squared
    error. Candidates that differ only in their recycled level share the scale and the
    cast onto their base grid; only the recycling step is redone. A single plain grid
    writes its values into ``out`` when given. ``amax`` replaces the blocks' largest
    magnitudes as the scale target (a searched clip: larger values saturate)."""
    amax = xb.abs().amax(1) if amax is None else amax
    if fmt.scale.special == "none" and torch.isnan(amax).any():
        raise ValueError(f"input contains NaN, and the scale grid of {fmt.name} has no NaN code to mark the block")
    single = len(fmt.grids) == 1
    need_values = want_values or not single
    shared = {}
    cands = []  # per candidate: codes, scale codes, values, error
    for g in fmt.grids:
        bg = base_grid(g)
        if bg not in shared:
            scode, deq, qmul = block_scales(amax, bg, fmt, ts)
            y = xb * qmul[:, None]
            codes = encode(y, bg, overwrite=single and g.recycle is None)
            if not need_values:
                vals = None
            elif single and g.recycle is None and out is not None:
                vals = torch.mul(decode(codes, bg), deq[:, None], out=out)
            else:
                vals = decode(codes, bg) * deq[:, None]
            if g.recycle is not None:  # -0 now means the extra level: clear it once per base grid
                codes = without_redundant(codes, g)
                vals = vals + 0.0 if vals is not None else None  # -0.0 + 0.0 = +0.0, as code 0 decodes
            shared[bg] = (scode, deq, qmul, y, codes, vals)
        scode, deq, qmul, y, codes, vals = shared[bg]
        if g.recycle is not None:
            take = recycle_mask(y, g)
            codes = torch.where(take, g.redundant_code, codes)
            if need_values:
                vals = torch.where(take, deq[:, None] * g.recycle, vals)
        if single:
            return codes, scode, None, vals, deq, qmul
        cands.append((codes, scode, vals, deq, qmul))
    sel = _least_error(xb, [c[2] for c in cands])
    codes = torch.empty(xb.shape, dtype=torch.int32, device=xb.device)
    scode = torch.empty_like(cands[0][1])
    vals = torch.empty_like(xb) if want_values else None
    deq, qmul = torch.empty_like(cands[0][3]), torch.empty_like(cands[0][4])
    for i, (c, s, v, dq, qm) in enumerate(cands):  # copy each candidate's winning blocks only
        rows = (sel == i).nonzero().squeeze(1)
        codes.index_copy_(0, rows, c.index_select(0, rows).to(torch.int32))
        scode.index_copy_(0, rows, s.index_select(0, rows))
        deq.index_copy_(0, rows, dq.index_select(0, rows))
        qmul.index_copy_(0, rows, qm.index_select(0, rows))
        if want_values:
            vals.index_copy_(0, rows, v.index_select(0, rows))
    return codes, scode, sel, vals, deq, qmul


def _least_error(xb: torch.Tensor, vals: list[torch.Tensor]) -> torch.Tensor:
    """Per block, the candidate with the least squared error; the first of equals wins. Compared as
    differences from the first candidate, sum of (v - v0)(v + v0 - 2x) in float64: the squared errors
    themselves are differences of large numbers where a block saturates (|x| far above what its scale
    can reach), and in float32 two candidates then tie by rounding and re-casting the result changes it."""
    x = xb.double()
    v0 = vals[0].double()
    diffs = [torch.zeros(xb.shape[0], dtype=torch.float64, device=xb.device)]
    for v in vals[1:]:
        v = v.double()
        t = torch.where(v == v0, 0.0, (v - v0) * (v + v0 - 2 * x))  # 0 where they agree, even at x = inf
        diffs.append(torch.nan_to_num(t.sum(1), nan=0.0, posinf=math.inf, neginf=-math.inf))
    return torch.stack(diffs, 1).argmin(1)


def _prepare(x, fmt):
    _check_input(x)
    x = x.detach()  # a cast is not differentiable: a Parameter is read as its values
    fmt = resolve(fmt)
    geo = Geometry(x.shape, fmt, x.device)
    rows = _as_rows(x, geo)
    ts = compute_tensor_scale(rows, fmt.grids, fmt.scale) if fmt.tensor_scale else None
    return fmt, geo, rows, ts


def quantize(x: torch.Tensor, fmt) -> Packed:
    """Cast ``x`` to ``fmt`` (a name or a :class:`Format`) and pack it into bytes."""
    fmt, geo, rows, ts = _prepare(x, fmt)
    codes, scodes, sels = [], [], []
    for r0, r1 in geo.chunks():
        xb = _blocks(rows[r0:r1].to(torch.float32), geo)
        c, s, sel = _encode_chunk(xb, fmt, ts, want_values=False)[:3]
        codes.append(pack_bits(_unblock(c, geo, r1 - r0).reshape(-1), fmt.element_bits))
        scodes.append(s)
        if sel is not None:
            sels.append(sel)
    empty = torch.zeros(0, dtype=torch.uint8, device=x.device)
    return Packed(
        fmt=fmt,
        shape=geo.shape,
        dtype=x.dtype,
        codes=torch.cat(codes) if codes else empty,
        scales=pack_bits(torch.cat(scodes), fmt.scale.bits) if scodes else empty,
        selectors=pack_bits(torch.cat(sels), fmt.selector_bits) if sels else empty,
        tensor_scale=ts,
    )


def empty_packed(fmt, shape, dtype: torch.dtype = torch.float32) -> Packed:
    """A :class:`Packed` of ``shape`` in ``fmt`` with uninitialized buffers of the right
    sizes: the target to load stored bytes into, without building a float tensor first."""
    fmt = resolve(fmt)
    geo = Geometry(shape, fmt)
    u8 = dict(dtype=torch.uint8)
    return Packed(fmt, geo.shape, dtype,
                  codes=torch.empty(packed_nbytes(geo.numel, fmt.element_bits), **u8),
                  scales=torch.empty(packed_nbytes(geo.blocks, fmt.scale.bits), **u8),
                  selectors=torch.empty(packed_nbytes(geo.blocks, fmt.selector_bits), **u8),
                  tensor_scale=torch.ones((), dtype=torch.float32) if fmt.tensor_scale else None)


def dequantize(packed: Packed, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Decode a :class:`Packed` back to a tensor (its original dtype unless ``dtype``)."""
    if not isinstance(packed, Packed):
        raise TypeError(f"dequantize takes the Packed object that quantize returned, got {type(packed).__name__}")
    packed.validate()
    fmt, geo = packed.fmt, Geometry(packed.shape, packed.fmt, packed.codes.device)
    dtype = dtype or packed.dtype
    out = torch.empty(geo.rows, geo.row, dtype=torch.float32, device=packed.codes.device)
    deq = scale_values(unpack_bits(packed.scales, fmt.scale.bits, geo.blocks), fmt, packed.tensor_scale)
    sel = unpack_bits(packed.selectors, fmt.selector_bits, geo.blocks) if fmt.selector_bits else None
    table = torch.cat([value_table(g, out.device) for g in fmt.grids]) if sel is not None else None
    bits = fmt.element_bits
    for r0, r1 in geo.chunks():
        n0, n1 = r0 * geo.row, r1 * geo.row
        c = unpack_bits(packed.codes[n0 * bits // 8 : packed_nbytes(n1, bits)], bits, n1 - n0)
        cb = _blocks(c.view(r1 - r0, geo.row), geo)
        b0, b1 = r0 * geo.per_row, r1 * geo.per_row
        if sel is None:
            vals = decode(cb, fmt.grid)
        else:
            idx = cb.to(torch.int32) + (sel[b0:b1, None].to(torch.int32) << bits)
            vals = table.index_select(0, idx.reshape(-1)).view(idx.shape)
        if geo.padded:
            out[r0:r1] = _unblock(vals * deq[b0:b1, None], geo, r1 - r0)
        else:  # write straight into the output: no extra pass
            torch.mul(vals, deq[b0:b1, None], out=out[r0:r1].view(-1, geo.block))
    return _restore(out, geo, dtype)


def fake_quantize(x: torch.Tensor, fmt) -> torch.Tensor:
    """Round ``x`` onto ``fmt`` and return it in x's dtype and shape (no packing)."""
    fmt, geo, rows, ts = _prepare(x, fmt)
    out = torch.empty(geo.rows, geo.row, dtype=torch.float32, device=x.device)
    for r0, r1 in geo.chunks():
        xb = _blocks(rows[r0:r1].to(torch.float32), geo)
        dst = None if geo.padded else out[r0:r1].view(-1, geo.block)
        vals = _encode_chunk(xb, fmt, ts, want_values=True, out=dst)[3]
        if vals is not dst:
            out[r0:r1] = _unblock(vals, geo, r1 - r0)
    return _restore(out, geo, x.dtype)


def _restore(out: torch.Tensor, geo: Geometry, dtype) -> torch.Tensor:
    # Saturate: a value times its scale may pass the largest finite number of float32 or of
    # the output dtype (mxfp4 with rceil at 3e38, int8 of a float16 65504); clamp, as the
    # OCP spec's saturating conversion does, instead of returning Inf. NaN stays NaN.
    big = min(torch.finfo(dtype).max, torch.finfo(torch.float32).max) if dtype.is_floating_point else None
    if big is not None:
        out.clamp_(-big, big)
    if not geo.shape:
        return out.reshape(()).to(dtype)
    moved = list(geo.shape)
    moved.append(moved.pop(geo.axis))
    return out.reshape(moved).movedim(-1, geo.axis).contiguous().to(dtype)
