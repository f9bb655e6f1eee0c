"""load(): a built-in name, a Hugging Face directory or a GGUF file -> float model + tokenizer."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .builtin import BUILTIN
from .from_gguf import cache_is_complete, gguf_cache_dir, is_gguf, load_gguf
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
    kind, path = _resolve(name_or_path)
    return load_hf_dir(path, dtype) if kind == "dir" else load_gguf(path, dtype)


def float_checkpoint_dir(name_or_path: str | os.PathLike) -> Path:
    """The local Hugging Face directory that holds the model's float weights and tokenizer,
    for code that reads the weights a tensor at a time. A GGUF model (a built-in one too)
    answers with its float32 cache, converted first if missing: that once, the whole float
    model is in memory."""
    kind, path = _resolve(name_or_path)
    if kind == "dir":
        return path
    directory = gguf_cache_dir(path, torch.float32)
    if not cache_is_complete(directory):
        load_gguf(path, torch.float32)
    return directory


def _resolve(name_or_path) -> tuple[str, Path]:
    """("gguf", file) or ("dir", Hugging Face directory) for a built-in name or a path; clear errors otherwise."""
    text = os.fspath(name_or_path)
    if text in BUILTIN:
        return "gguf", BUILTIN[text].gguf_path()
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
        return "dir", path
    if not is_gguf(path):
        raise ValueError(f"{text} is not a GGUF file (it does not start with b'GGUF'). {accepted()}")
    return "gguf", path.resolve()


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
