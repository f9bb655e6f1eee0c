"""elastiq.quant: packed quantized layers and models, saved and loaded; the native kernels
that multiply from packed codes. Imports elastiq.formats, and elastiq.cache (where the
kernels are built, atomic writes) and elastiq.progress (the progress bar) below it.

    quantize_model(model, "nxfp4")      # every linear layer packed in place; a QuantReport
    weight_bytes(model)                 # bytes held, packed codes at their size
    set_kernel_path(model, "torch")     # where packed products run: auto, native or torch
    replace_module(model, "lm_head", m) # put a module where a named one is
"""
from .embedding import QuantEmbedding
from .linear import KERNEL_PATHS, QuantLinear
from .lowrank import LowRankAdded
from .model import (QuantReport, fake_quantize_model, normalize_plan, planned_modules, quantize_model, replace_module,
                    set_kernel_path, tied_heads, weight_bytes, with_embedding)

__all__ = ["KERNEL_PATHS", "LowRankAdded", "QuantEmbedding", "QuantLinear", "QuantReport", "fake_quantize_model",
           "normalize_plan", "planned_modules", "quantize_model", "replace_module", "set_kernel_path", "tied_heads",
           "weight_bytes", "with_embedding"]
