"""Flip one bit of a value as it is stored: a torch float, or a packed elastiq tensor.

A packed tensor (``elastiq.formats.Packed``) has up to four places a bit can live:

* ``codes``        one element's code (``fmt.element_bits`` bits, sign-magnitude for
                   floats, two's complement for integers);
* ``scales``       one block's shared scale (``fmt.scale.bits``): a flip here changes
                   every element of the block at once;
* ``selectors``    one block's grid choice (NxFP): a flip decodes the whole block on
                   another element grid;
* ``tensor_scale`` the float32 second-level scale (NVFP4, NxFP): a flip changes the
                   whole tensor.

Bits are numbered from the least significant (0) to the most significant.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from elastiq import formats as F

_INT_VIEW = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}
_FLOAT_BITS = {torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 16,
               torch.float8_e4m3fn: 8, torch.float8_e5m2: 8}
SITES = ("codes", "scales", "selectors", "tensor_scale")


def float_bits(dtype: torch.dtype) -> int:
    if dtype not in _FLOAT_BITS:
        raise ValueError(f"cannot flip bits of a {dtype} value: use one of {', '.join(str(d) for d in _FLOAT_BITS)}")
    return _FLOAT_BITS[dtype]


def _check_bit(bit: int, width: int, what: str) -> None:
    if not isinstance(bit, int) or isinstance(bit, bool) or not 0 <= bit < width:
        raise ValueError(f"bit {bit!r} is outside {what}, which has {width} bits (0 .. {width - 1})")


def _check_index(index: int, count: int, what: str) -> None:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise ValueError(f"index {index!r} is outside {what}, which holds {count} entries (0 .. {count - 1})")


def flip_float(x: torch.Tensor, index: int, bit: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A copy of ``x`` whose element ``index`` (flat, row-major) has ``bit`` flipped in its
    ``dtype`` representation (default: x's own dtype), returned in x's dtype."""
    dtype = dtype or x.dtype
    width = float_bits(dtype)
    _check_bit(bit, width, f"a {dtype} value")
    _check_index(index, x.numel(), "the tensor")
    flat = x.detach().reshape(-1).to(dtype).clone()
    ints = flat.view(_INT_VIEW[width])
    one = torch.tensor(1, dtype=torch.int64) << bit
    ints[index] = (ints[index].to(torch.int64) ^ one).to(ints.dtype) if width < 64 else ints[index] ^ one
    return flat.to(x.dtype).reshape(x.shape)


def flip_scalar(value: float, bit: int, dtype: torch.dtype = torch.float32) -> float:
    """``value`` stored in ``dtype`` with ``bit`` flipped, as a Python float."""
    return float(flip_float(torch.tensor([value], dtype=dtype), 0, bit))


def site_sizes(p: F.Packed) -> dict[str, tuple[int, int]]:
    """For each place a bit can live in ``p``: (number of entries, bits per entry)."""
    geo_blocks = _blocks(p)
    out = {"codes": (p.numel, p.fmt.element_bits), "scales": (geo_blocks, p.fmt.scale.bits)}
    if p.fmt.selector_bits:
        out["selectors"] = (geo_blocks, p.fmt.selector_bits)
    if p.tensor_scale is not None:
        out["tensor_scale"] = (1, 32)
    return out


def _blocks(p: F.Packed) -> int:
    return F.Geometry(p.shape, p.fmt).blocks


def _stream_layout(bits: int) -> bool:
    """Whether code i of a packed stream occupies bits [i*bits, (i+1)*bits) of the bytes
    (every width but 9..15, which elastiq stores as low bytes then high bits)."""
    return not 8 < bits < 16


def flip_packed(p: F.Packed, site: str, index, bit: int) -> F.Packed:
    """A copy of ``p`` with ``bit`` flipped in entry ``index`` of ``site`` (an int, or a
    1-D tensor of distinct entries, each flipped); only the touched buffer is copied."""
    sizes = site_sizes(p)
    if site not in sizes:
        have = ", ".join(sizes)
        raise ValueError(f"format {p.fmt.name} stores no {site!r} (it has: {have})" if site in SITES
                         else f"unknown site {site!r}: use one of {', '.join(SITES)}")
    count, width = sizes[site]
    _check_bit(bit, width, f"a {p.fmt.name} {site[:-1] if site.endswith('s') else site} entry")
    if isinstance(index, torch.Tensor):
        idx = index.reshape(-1).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= count):
            raise ValueError(f"an index is outside the {site} of this {p.fmt.name} tensor ({count} entries)")
    else:
        _check_index(index, count, f"the {site} of this {p.fmt.name} tensor")
        idx = torch.tensor([index])
    if site == "tensor_scale":
        return replace(p, tensor_scale=flip_float(p.tensor_scale.reshape(1), 0, bit).reshape(p.tensor_scale.shape))
    buf = getattr(p, site)
    pos = idx * width + bit
    if _stream_layout(width) and torch.unique(pos // 8).numel() == pos.numel():
        new = buf.clone()
        new[pos // 8] ^= (1 << (pos % 8)).to(torch.uint8)
    else:
        codes = F.unpack_bits(buf, width, count).to(torch.int32).clone()
        codes[idx] ^= 1 << bit
        new = F.pack_bits(codes, width)
    return replace(p, **{site: new})


def flip_all(x: torch.Tensor, bit: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every element of ``x`` with ``bit`` flipped in its ``dtype`` representation."""
    dtype = dtype or x.dtype
    width = float_bits(dtype)
    _check_bit(bit, width, f"a {dtype} value")
    ints = x.detach().to(dtype).contiguous().view(_INT_VIEW[width])
    flipped = ints ^ torch.tensor(1 << bit if bit < width - 1 or width == 8 else -(1 << bit), dtype=ints.dtype)
    return flipped.view(dtype).to(x.dtype)
