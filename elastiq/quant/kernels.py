"""Native kernels for packed weights: decode rows, and multiply by a few input rows,
straight from the packed codes (``lut_kernel.c``): codes of 1 to 8 bits, vectorized for
4 and 8 bits.

The C source is compiled once per machine with the system C compiler
(``cc -O3 -march=native -fopenmp``) into the elastiq cache and loaded with ctypes:
no torch headers, about a second to build. Where no compiler is found, the build
fails, or ``ELASTIQ_KERNELS=0`` is set, every caller falls back to the torch path
(``elastiq.formats.dequantize``), which gives the same values, more slowly.
``ELASTIQ_KERNELS=portable`` builds them without AVX2 and FMA (the scalar paths a
machine without AVX2 runs) and ``ELASTIQ_KERNELS=avx2`` without AVX-512 (the AVX2 paths),
so that one machine can test every path.
"""
from __future__ import annotations

import ctypes
import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from elastiq import formats as F
from elastiq.runtime.build import VARIANTS, BuildFailed, build_shared, variant_flags  # one builder, one set of variants

SOURCE = Path(__file__).with_name("lut_kernel.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
MODES = ("0", "1", *VARIANTS)  # the values of ELASTIQ_KERNELS: off, native build, builds without AVX2 or AVX-512


class _QWeight(ctypes.Structure):
    _fields_ = [
        ("N", ctypes.c_int64), ("K", ctypes.c_int64),
        ("bits", ctypes.c_int32), ("block", ctypes.c_int32), ("per_row", ctypes.c_int32),
        ("scale_bits", ctypes.c_int32), ("sel_bits", ctypes.c_int32), ("pad_", ctypes.c_int32),
        ("tensor_scale", ctypes.c_float), ("pad2_", ctypes.c_float),
        ("codes", ctypes.c_void_p), ("scodes", ctypes.c_void_p), ("scale_lut", ctypes.c_void_p),
        ("sel", ctypes.c_void_p), ("elem_lut", ctypes.c_void_p),
        ("elem_i8", ctypes.c_void_p), ("i8_mult", ctypes.c_float), ("pad3_", ctypes.c_float),
    ]


@lru_cache(maxsize=None)
def library(extra_flags: tuple[str, ...] = ()):
    """The loaded kernel library, or None (with one warning saying why) where it cannot be had.
    ``extra_flags`` builds a variant (the tests build one without AVX2)."""
    mode = os.environ.get("ELASTIQ_KERNELS", "1").strip().lower()
    if mode not in MODES:
        warnings.warn(f"elastiq: ELASTIQ_KERNELS={mode!r} is not one of {', '.join(MODES)}: using the native build",
                      stacklevel=2)
    if mode == "0":
        return None
    extra_flags = (*variant_flags(), *extra_flags)
    try:
        path = build_shared((SOURCE,), "lut", [*FLAGS, *extra_flags])
    except BuildFailed as e:
        warnings.warn(f"elastiq: building the packed-weight kernels failed ({e}); packed layers use the slower "
                      "torch path", stacklevel=2)
        return None
    lib = ctypes.CDLL(str(path))
    problem = _layout_problem(lib)
    if problem:
        warnings.warn(f"elastiq: the packed-weight kernels' struct does not match its ctypes mirror ({problem}); "
                      "packed layers use the slower torch path", stacklevel=2)
        return None
    p = ctypes.c_void_p
    lib.eq_dequant_rows.argtypes = [ctypes.POINTER(_QWeight), p, ctypes.c_int64, p, ctypes.c_int]
    lib.eq_gemv.argtypes = [ctypes.POINTER(_QWeight), p, p, p, ctypes.c_int64, p, ctypes.c_int]
    lib.eq_dequant_rows.restype = lib.eq_gemv.restype = None
    lib.eq_has_avx2.restype = ctypes.c_int
    return lib


def _layout_problem(lib, mirror=None) -> str | None:
    """Where the C struct ``qweight`` and its ctypes mirror disagree (size or a field's
    offset), or None: checked once per library load, since a mismatch would make the
    kernels read the wrong fields."""
    mirror = mirror or _QWeight
    fields = [name for name, _ in mirror._fields_]
    out = (ctypes.c_int64 * (1 + len(fields)))()
    lib.eq_qweight_layout.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.eq_qweight_layout.restype = ctypes.c_int
    if lib.eq_qweight_layout(ctypes.addressof(out), len(out)) != 0:
        return f"the C struct has another number of fields than the mirror's {len(fields)}"
    if out[0] != ctypes.sizeof(mirror):
        return f"size {out[0]} in C, {ctypes.sizeof(mirror)} in ctypes"
    for i, name in enumerate(fields):
        if out[1 + i] != getattr(mirror, name).offset:
            return f"field {name} at offset {out[1 + i]} in C, {getattr(mirror, name).offset} in ctypes"
    return None


def supported(fmt: F.Format, shape) -> bool:
    """Whether the kernels handle a 2-D weight of ``shape`` in ``fmt``."""
    if len(shape) != 2 or fmt.axis % 2 != 1:
        return False
    bits, block = fmt.element_bits, fmt.block or shape[1]
    if not 1 <= bits <= 8 or fmt.scale.bits not in (8, 16, 32) or fmt.selector_bits not in (0, 1, 2, 4, 8):
        return False
    return bits != 4 or (shape[1] % 2 == 0 and block % 2 == 0)  # the 4-bit fast path reads whole bytes


def max_rows() -> int:
    """Input rows up to which a product runs in the kernel rather than decode + BLAS."""
    return 8


@lru_cache(maxsize=64)
def _scale_table(fmt: F.Format) -> torch.Tensor:
    """Every scale code's value (65,536 entries for FP16 scales): built once per format,
    so that wrapping a freshly loaded weight costs microseconds, not milliseconds."""
    if fmt.scale.bits >= 32:
        return torch.zeros(1)
    return F.scale_values(torch.arange(1 << fmt.scale.bits, dtype=torch.int32), fmt, None).float().contiguous()


class KernelWeight:
    """A packed 2-D weight viewed by the kernels. It holds the value tables (a few KiB)
    and pointers into the packed buffers: rebuild it when the buffers change."""

    def __init__(self, packed: F.Packed, lib=None):
        self.lib = lib or library()
        fmt = packed.fmt
        self.fmt, self.N, self.K = fmt, *packed.shape
        self.key = _key(packed)
        self._keep = [packed.codes, packed.scales, packed.selectors]
        self.elem_lut = torch.cat([F.value_table(g, "cpu") for g in fmt.grids]).contiguous()
        sbits = fmt.scale.bits
        self.scale_lut = _scale_table(fmt)
        ts = 1.0 if packed.tensor_scale is None else float(packed.tensor_scale)
        block = fmt.block or self.K
        self.elem_i8, mult = _as_int8(self.elem_lut) if fmt.element_bits == 4 else _int8_codes(self.elem_lut)
        self.q = _QWeight(self.N, self.K, fmt.element_bits, block, -(-self.K // block), sbits, fmt.selector_bits, 0, ts, 0.0,
                          packed.codes.data_ptr(), packed.scales.data_ptr(), self.scale_lut.data_ptr(),
                          packed.selectors.data_ptr() if packed.selectors.numel() else None, self.elem_lut.data_ptr(),
                          None if self.elem_i8 is None else self.elem_i8.data_ptr(), mult, 0.0)

    def rows(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded rows ``index`` (all rows when None) as float32 (len(index), K)."""
        lib = self.lib
        idx = None if index is None else index.reshape(-1).to(torch.int64).contiguous()
        n = self.N if idx is None else idx.numel()
        if idx is not None and n and (int(idx.min()) < 0 or int(idx.max()) >= self.N):
            raise IndexError(f"row index out of range: the weight has {self.N} rows, got indices "
                             f"{int(idx.min())}..{int(idx.max())}")
        out = torch.empty(n, self.K, dtype=torch.float32)
        lib.eq_dequant_rows(ctypes.byref(self.q), None if idx is None else idx.data_ptr(), n, out.data_ptr(),
                            torch.get_num_threads())
        return out

    def matmul_t(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, K) float32 @ W^T for M <= max_rows()."""
        lib = self.lib
        x = x.contiguous()
        m = x.shape[0]
        xe = x[:, 0::2].contiguous() if self.fmt.element_bits == 4 else x
        xo = x[:, 1::2].contiguous() if self.fmt.element_bits == 4 else x
        y = torch.empty(m, self.N, dtype=torch.float32)
        lib.eq_gemv(ctypes.byref(self.q), x.data_ptr(), xe.data_ptr(), xo.data_ptr(), m, y.data_ptr(), torch.get_num_threads())
        return y


def _as_int8(values: torch.Tensor):
    """(values * 2^k as int8, 2^-k) for the smallest k that makes every value an integer
    in [-127, 127] (E2M1: k=1, E1M2: k=2, INT4: k=0); (None, 1.0) when none does (NF4)."""
    if not torch.isfinite(values).all():
        return None, 1.0
    for k in range(8):
        v = values.double() * 2.0**k
        if (v == v.round()).all() and v.abs().max() <= 127:
            return v.to(torch.int8).contiguous(), 2.0**-k
    return None, 1.0


def _int8_codes(values: torch.Tensor):
    """For 8-bit grids whose value is the code read as a two's-complement int8 times a
    step (INT8, MXINT8): (that int8 table, step), telling the kernel to convert codes
    directly; (None, 1.0) otherwise (FP8: a table gather)."""
    as_int = torch.arange(256, dtype=torch.int64).to(torch.uint8).view(torch.int8)
    step = float(values[1]) if values.numel() == 256 else 0.0
    if step > 0 and torch.equal(values, as_int.float() * step):
        return as_int.contiguous(), step
    return None, 1.0


def _key(packed: F.Packed):
    ts = None if packed.tensor_scale is None else float(packed.tensor_scale)
    return (packed.codes.data_ptr(), packed.scales.data_ptr(), packed.selectors.data_ptr(), ts, packed.shape)


def why_not(packed: F.Packed) -> str | None:
    """Why the kernels cannot serve ``packed`` (or None when they can)."""
    if packed.codes.device.type != "cpu":
        return f"the weight is on {packed.codes.device}, the kernels run on the CPU"
    if not supported(packed.fmt, packed.shape):
        return f"the kernels do not handle {packed.fmt.name} at shape {tuple(packed.shape)}"
    if library() is None:
        return "no kernel library: ELASTIQ_KERNELS=0, no C compiler, or the build failed"
    return None


def kernel_for(packed: F.Packed, cached: KernelWeight | None) -> KernelWeight | None:
    """A KernelWeight for ``packed`` (reusing ``cached`` while its buffers are the same), or None
    where the kernels cannot serve it: unsupported format, not on the CPU, or no library."""
    if packed.codes.device.type != "cpu" or not supported(packed.fmt, packed.shape) or library() is None:
        return None
    if cached is not None and cached.key == _key(packed):
        return cached
    return KernelWeight(packed)
