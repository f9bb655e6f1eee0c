"""load(): a built-in name, a Hugging Face directory or a GGUF file -> float model + tokenizer."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .builtin import BUILTIN
from .from_gguf import is_gguf, load_gguf
from .hf import load_hf_dir

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def accepted() -> str:
    names = ", ".join(sorted(BUILTIN))
    return (f"load() accepts a built-in model name ({names}), a local Hugging Face model directory "
            f"(with config.json) or a path to a .gguf file")


def looks_like_path(text: str) -> bool:
    return ("/" in text or os.sep in text or text.startswith((".", "~"))
            or text.lower().endswith(".gguf"))


def load(name_or_path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer): a float causal LM in eval mode on the CPU, and its tokenizer."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, FLOAT_DTYPES))}, not {dtype!r}")
    text = os.fspath(name_or_path)
    if text in BUILTIN:
        return load_gguf(BUILTIN[text].gguf_path(), dtype)
    path = Path(text).expanduser()
    if not path.exists():
        if looks_like_path(text):
            raise FileNotFoundError(
                f"{text}: no such file or directory. {accepted()}; elastiq reads local files only, "
                f"so download a Hub model to a directory first")
        raise ValueError(f"unknown model '{text}'. {accepted()}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{text} is a directory without config.json, so not a Hugging Face model "
                             f"directory. {accepted()}")
        return load_hf_dir(path, dtype)
    if not is_gguf(path):
        raise ValueError(f"{text} is not a GGUF file (it does not start with b'GGUF'). {accepted()}")
    return load_gguf(path.resolve(), dtype)


def describe(model) -> dict:
    """Architecture and sizes of a loaded model, for reports."""
    config = model.config.get_text_config()
    first = next(model.parameters(), None)
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "parameters": sum(p.numel() for p in model.parameters()),  # tied weights counted once
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "dtype": None if first is None else str(first.dtype).removeprefix("torch."),
    }
