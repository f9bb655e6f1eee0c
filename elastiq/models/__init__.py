"""Load a float PyTorch causal LM and its tokenizer: a built-in name, a Hugging Face
directory or a GGUF file (dequantized through transformers and cached). See docs/models.md.

    model, tokenizer = load(DEFAULT_MODEL)      # SmolLM2-135M-Instruct, float32, eval, CPU
    describe(model)["parameters"]               # 134515008
"""
from .builtin import BUILTIN, DEFAULT_MODEL, BuiltinModel, builtin_models
from .from_gguf import gguf_cache_dir
from .loader import describe, float_checkpoint_dir, load

__all__ = ["BUILTIN", "DEFAULT_MODEL", "BuiltinModel", "builtin_models", "describe", "float_checkpoint_dir", "gguf_cache_dir", "load"]
