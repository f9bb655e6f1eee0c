"""elastiq.interop: elastiq models in other tools' hands. Sits beside the command line:
it imports the core, and nothing but ``elastiq.cli`` imports it.

    from elastiq.interop import export_gguf
    export_gguf("smollm2-int4", "smollm2-int4.gguf")          # a saved model, an HF folder, a built-in name
    export_gguf("smollm2.elastic", "opt.gguf", option=40)     # one option of an elastic artifact
    export_model(model, tokenizer, "model.gguf")              # a model in memory

GGUF export (gguf_export): each packed tensor in the GGUF type that holds it exactly (int4
as Q4_0, int5 as Q5_0, int8 as Q8_0, mxfp4 as MXFP4), others refused unless a fallback
(q8_0 or f16) is given, whose cost the report gives as a KL divergence.
"""
from .gguf_export import export_model
from .gguf_export import export_path as export_gguf

__all__ = ["export_gguf", "export_model"]
