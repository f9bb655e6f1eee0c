"""elastiq.calib: calibrated quantization (GPTQ, scale search) from the input Hessians of
each linear layer, on a float model in memory or streamed one decoder layer at a time;
the layer streamer itself (``LayerStream``), which LREC's set-up shares.

    report = quantize_in_memory(model, "int3", tok, text, CalibOptions(method="gptq"))
    model, report = quantize_stream(float_checkpoint_dir("smollm2-135m"), "int3", tok, text)
"""
from .hessian import Hessians
from .quantize import calibration_windows, pack_linear, quantize_in_memory, quantize_source, quantize_stream
from .stream import LayerStream, StreamUnsupported

__all__ = ["Hessians", "LayerStream", "StreamUnsupported", "calibration_windows", "pack_linear", "quantize_in_memory",
           "quantize_source", "quantize_stream"]
