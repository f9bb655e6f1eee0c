"""elastiq.quant: packed quantized layers and models (imports elastiq.formats only)."""
from .linear import QuantLinear
from .model import QuantReport, fake_quantize_model, normalize_plan, planned_linears, quantize_model, weight_bytes

__all__ = ["QuantLinear", "QuantReport", "fake_quantize_model", "normalize_plan", "planned_linears",
           "quantize_model", "weight_bytes"]
