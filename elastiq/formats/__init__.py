"""elastiq.formats: bit-exact low-bit number formats (pure numerics; imports nothing else of elastiq).

Every function that takes a format takes a preset name, a one-string spec or a
:class:`Format` (``resolve``):

    fmt = get("mxfp4")                 # a preset, or "mxfp4,round=rceil", or "elem=...,block=..."
    bits_per_element("nvfp4")          # 4.5
    y = fake_quantize(x, fmt)          # same dtype and shape as x
    p = quantize(x, "nvfp4")           # packed bytes: p.nbytes == storage_bytes("nvfp4", x.shape)
    x2 = dequantize(p)

``formats.quantize`` casts one tensor and returns its packed bytes; the top-level
``elastiq.quantize`` packs a whole model's layers in place (through this one).
"""
from .cast import Geometry, Packed, dequantize, empty_packed, fake_quantize, quantize
from .catalog import (E8M0, FP16, FP32, NF4, PRESETS, bits_per_element, get, grid, names, parse, resolve, spec,
                      storage_bytes)
from .format import Format
from .grids import Grid, decode, encode, value_table
from .packing import pack_bits, unpack_bits
from .scales import scale_values

__all__ = [
    "Format", "Geometry", "Grid", "Packed", "PRESETS", "E8M0", "FP16", "FP32", "NF4",
    "bits_per_element", "decode", "dequantize", "empty_packed", "encode", "fake_quantize", "get", "grid",
    "names", "pack_bits", "parse", "quantize", "resolve", "scale_values", "spec", "storage_bytes", "unpack_bits",
    "value_table",
]
