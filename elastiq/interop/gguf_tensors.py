"""One packed elastiq tensor as GGUF tensor bytes: exactly where a GGUF type holds its
values, or by a fallback cast that the caller reports.

The exact holders (llama.cpp's ggml-quants.c and gguf-py's quants.py lay the blocks out
the same way; blocks of 32 along a row):

* Q4_0  fp16 d, 16 bytes of nibbles (element j low, j+16 high), value d * (q - 8)
* Q5_0  fp16 d, 4 bytes of fifth bits (bit j of a little-endian uint32), 16 bytes of
        low nibbles as Q4_0, value d * (q - 16)
* Q8_0  fp16 d, 32 int8, value d * q
* MXFP4 E8M0 e, 16 bytes of nibbles as Q4_0, value kvalue[q] * 2^(e-128), kvalue the
        E2M1 values doubled in E2M1 code order (so value = E2M1(q) * 2^(e-127))

An elastiq integer format fits the narrowest of Q4_0 (2 to 4 bits), Q5_0 (5), Q8_0
(6 to 8) when its row and its group are multiples of 32 (a group of 128 repeats its scale
over four GGUF blocks) and every group's multiplier (scale value x grid step) is a float16
exactly. mxfp4 (E2M1, E8M0, blocks of 32, any scale rounding) is MXFP4 code for code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elastiq import formats as F
from elastiq.errors import InputError

QK = 32  # elements per GGUF block in every type used here
FALLBACKS = ("q8_0", "f16")
E2M1 = F.grid("e2m1")
FLOAT_TYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


@dataclass
class GgufTensor:
    """Bytes of one tensor in a GGUF type: ``data`` is (rows, bytes per row) uint8 for
    block types and BF16, else a float numpy array of the tensor's shape."""
    data: np.ndarray
    type_name: str  # a gguf.GGMLQuantizationType member name: Q4_0, MXFP4, F32, ...
    exact: bool = True  # False: a fallback changed the values


def int_holder(bits: int) -> tuple[str, int] | None:
    """(GGUF type, code offset) that holds signed integers of ``bits`` bits."""
    if 2 <= bits <= 4:
        return "Q4_0", 8
    if bits == 5:
        return "Q5_0", 16
    if 6 <= bits <= 8:
        return "Q8_0", 0
    return None


def exact_type(packed: F.Packed) -> tuple[str | None, str]:
    """(GGUF type, "") where one holds ``packed`` exactly, else (None, why not)."""
    fmt = packed.fmt
    geo = F.Geometry(packed.shape, fmt)
    if len(packed.shape) != 2 or geo.axis != len(packed.shape) - 1:
        return None, "GGUF blocks run along rows of 2-D tensors"
    if geo.row % QK or geo.block % QK:
        return None, f"its rows ({geo.row}) and groups ({geo.block}) must be multiples of {QK}"
    if len(fmt.grids) != 1 or fmt.grid.recycle is not None:
        return None, "per-block grid choices and recycled codes have no GGUF type"
    g = fmt.grid
    if g == E2M1 and fmt.scale == F.E8M0 and geo.block == QK and not fmt.tensor_scale:
        return "MXFP4", ""
    if g.kind != "int" or int_holder(g.bits) is None:
        return None, f"no GGUF type holds {g.name} elements"
    if g.step <= 0 or np.log2(g.step) != int(np.log2(g.step)):
        return None, f"its grid step {g.step} is not a power of two"
    return int_holder(g.bits)[0], ""


def block_multipliers(packed: F.Packed) -> torch.Tensor:
    """(rows, row / 32) float32: each GGUF block's multiplier, its elastiq group's scale
    value times the grid step (and the tensor scale, as elastiq folds it in)."""
    fmt, geo = packed.fmt, F.Geometry(packed.shape, packed.fmt)
    scales = F.scale_values(F.unpack_bits(packed.scales, fmt.scale.bits, geo.blocks), fmt, packed.tensor_scale)
    per_group = scales.float().reshape(geo.rows, geo.per_row) * fmt.grid.step
    group_of_block = torch.arange(geo.row // QK) * QK // geo.block
    return per_group[:, group_of_block]


def signed_codes(packed: F.Packed) -> torch.Tensor:
    """(rows, row) int16: the two's-complement integer codes as numbers."""
    fmt, geo = packed.fmt, F.Geometry(packed.shape, packed.fmt)
    bits = fmt.element_bits
    codes = F.unpack_bits(packed.codes, bits, geo.numel).to(torch.int16).reshape(geo.rows, geo.row)
    return torch.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)


def nibbles(q: np.ndarray) -> np.ndarray:
    """(..., 32) uint8 values below 16 -> (..., 16) bytes: element j low, j + 16 high."""
    return (q[..., :16] & 0x0F) | ((q[..., 16:] & 0x0F) << 4)


def exact_bytes(packed: F.Packed, type_name: str) -> np.ndarray:
    """(rows, bytes per row) uint8 of ``packed`` in ``type_name`` (as :func:`exact_type` chose)."""
    geo = F.Geometry(packed.shape, packed.fmt)
    nb = geo.row // QK
    if type_name == "MXFP4":
        codes = F.unpack_bits(packed.codes, 4, geo.numel).numpy().reshape(geo.rows, nb, QK)
        e = F.unpack_bits(packed.scales, 8, geo.blocks).numpy().reshape(geo.rows, nb, 1)
        if (e == 255).any():  # NaN in E8M0; ggml reads it as 2^127
            raise InputError("an MXFP4 block scale is NaN (E8M0 code 255), which GGUF cannot hold")
        return np.concatenate([e, nibbles(codes)], axis=-1).reshape(geo.rows, -1)
    d32 = block_multipliers(packed)
    d16 = d32.to(torch.float16)
    if not torch.equal(d16.float(), d32):  # also refuses NaN and infinite scales
        bad = int((d16.float() != d32).sum())
        raise InputError(f"{bad} group scale(s) of this {packed.fmt.name} tensor are not float16 numbers, which "
                         f"{type_name} stores its scales in")
    d = d16.numpy().view(np.uint8).reshape(geo.rows, nb, 2)
    q = signed_codes(packed).numpy().reshape(geo.rows, nb, QK)
    if type_name == "Q8_0":
        body = [q.astype(np.int8).view(np.uint8)]
    elif type_name == "Q4_0":
        body = [nibbles((q + 8).astype(np.uint8))]
    elif type_name == "Q5_0":
        u = (q + 16).astype(np.uint8)
        high = np.packbits((u >> 4) & 1, axis=-1, bitorder="little")  # bit j of the little-endian uint32
        body = [high, nibbles(u)]
    else:
        raise ValueError(f"no exact encoding into {type_name}")
    return np.concatenate([d, *body], axis=-1).reshape(geo.rows, -1)


def float_tensor(t: torch.Tensor) -> GgufTensor:
    """A float tensor as it is: F32, F16 or BF16 (1-D tensors, norms and biases, as F32,
    which llama.cpp wants and which holds every float16 and bfloat16 value)."""
    t = t.detach().cpu()
    if t.dim() <= 1 or t.dtype not in FLOAT_TYPES:
        return GgufTensor(t.float().numpy(), "F32")
    if t.dtype == torch.bfloat16:
        return GgufTensor(t.contiguous().view(torch.uint8).numpy().reshape(t.shape[0], -1), "BF16")
    return GgufTensor(t.contiguous().numpy(), FLOAT_TYPES[t.dtype])


def packed_tensor(packed: F.Packed, fallback: str | None, name: str) -> GgufTensor:
    """``packed`` in the GGUF type that holds it exactly, else in ``fallback`` (q8_0 or
    f16, values changed), else an InputError that names the format."""
    type_name, why = exact_type(packed)
    if type_name is not None:
        return GgufTensor(exact_bytes(packed, type_name), type_name)
    if fallback is None:
        raise InputError(f"{name} is in {packed.fmt.name}, which no GGUF type holds exactly ({why}): export a model "
                         f"in int4, int5, int8 or mxfp4, or pass --fallback q8_0|f16 to convert it (with a KL cost)")
    w = F.dequantize(packed, torch.float32)
    t = fallback_tensor(w, fallback, name)
    t.exact = bool(torch.equal(gguf_values(t, w.shape), w))  # the fallback type may happen to hold it after all
    return t


def fallback_tensor(w: torch.Tensor, fallback: str, name: str) -> GgufTensor:
    import gguf

    if fallback not in FALLBACKS:
        raise InputError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    x = w.float().numpy()
    if fallback == "f16":
        return GgufTensor(x.astype(np.float16), "F16", exact=False)
    if x.shape[-1] % QK:
        raise InputError(f"{name} has rows of {x.shape[-1]}, not a multiple of {QK}: use --fallback f16")
    return GgufTensor(gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0), "Q8_0", exact=False)


def gguf_values(t: GgufTensor, shape) -> torch.Tensor:
    """The float32 values gguf-py's own dequantization reads from ``t``."""
    import gguf

    kind = gguf.GGMLQuantizationType[t.type_name]
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(t.data, kind), dtype=np.float32)).reshape(shape)


def permute_rows(t: GgufTensor, order: np.ndarray) -> GgufTensor:
    """The tensor with its rows (first axis) in ``order``: a row's bytes move whole."""
    return GgufTensor(np.ascontiguousarray(t.data[order]), t.type_name, t.exact)
