"""elastiq.quant: packed quantized layers and models (imports elastiq.formats only)."""
from .embedding import QuantEmbedding
from .linear import QuantLinear
from .lowrank import LowRankAdded
from .model import (QuantReport, fake_quantize_model, normalize_plan, planned_modules, quantize_model, tied_heads,
                    weight_bytes, with_embedding)

__all__ = ["LowRankAdded", "QuantEmbedding", "QuantLinear", "QuantReport", "fake_quantize_model", "normalize_plan", "planned_modules",
           "quantize_model", "tied_heads", "weight_bytes", "with_embedding"]
