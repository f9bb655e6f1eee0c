"""Load a Hugging Face model directory; import optional packages with a message that says what to do."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

INSTALL_HINT = {
    "transformers": "pip install transformers==5.24.0",
    "gguf": "pip install gguf==0.19.0",
    "accelerate": "pip install accelerate",  # transformers refuses GGUF files without it
}


def require(module: str, purpose: str):
    """Import ``module`` or raise an ImportError that names the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        hint = INSTALL_HINT.get(module, f"pip install {module}")
        raise ImportError(
            f"{purpose} needs the {module} package: run `{hint}` (or `bash scripts/setup.sh`)"
        ) from error


def load_hf_dir(path: Path, dtype: torch.dtype):
    """A causal LM and its tokenizer from a local directory written by save_pretrained."""
    transformers = require("transformers", "loading a model")
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.to("cpu").eval(), tokenizer
