"""elastiq.formats: bit-exact low-bit number formats (pure numerics; imports nothing else of elastiq).

    fmt = get("mxfp4")                 # a preset, or "mxfp4,round=rceil", or "elem=...,block=..."
    y = fake_quantize(x, fmt)          # same dtype and shape as x
    p = quantize(x, "nvfp4")           # packed bytes: p.nbytes == storage_bytes(fmt, x.shape)
    x2 = dequantize(p)
"""
from .cast import Packed, dequantize, empty_packed, fake_quantize, quantize
from .catalog import E8M0, FP16, FP32, NF4, PRESETS, get, grid, names, parse, resolve, spec
from .format import Format, bits_per_element, storage_bytes
from .grids import Grid, decode, encode
from .packing import pack_bits, unpack_bits

__all__ = [
    "Format", "Grid", "Packed", "PRESETS", "E8M0", "FP16", "FP32", "NF4",
    "bits_per_element", "decode", "dequantize", "empty_packed", "encode", "fake_quantize", "get", "grid",
    "names", "pack_bits", "parse", "quantize", "resolve", "spec", "storage_bytes", "unpack_bits",
]
