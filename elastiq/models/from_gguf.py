"""GGUF file -> float model, through transformers, cached as a Hugging Face directory.

transformers dequantizes every GGUF weight to ``dtype`` (so a Q4_1 file gives the Q4_1
model in float, not the original float model). That takes ~25-30 s for SmolLM2-135M,
mostly parsing GGUF metadata; the safetensors copy written on the first load reloads in
under a second once transformers is imported.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import torch

from elastiq.cache import atomic_dir, atomic_write_text, cache_dir

from .hf import load_hf_dir, require

GGUF_MAGIC = b"GGUF"
MIB = 1 << 20
CACHE_VERSION = 1
MARKER = "elastiq-model.json"  # written last: its presence means the directory is complete


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def fingerprint(path: Path) -> str:
    """sha256 of the size, first MiB and last MiB: constant time for any file size.

    The first MiB holds the GGUF header (metadata and tensor table); the last holds
    weights. A full sha256 costs ~0.8 s per GB even from the page cache: too slow for big files."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(MIB))
        if size > MIB:
            f.seek(max(size - MIB, MIB))
            digest.update(f.read())
    return digest.hexdigest()[:16]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def gguf_cache_dir(path: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Where the float copy of a GGUF file lives: <cache>/models/<stem>-<fingerprint>-<dtype>."""
    path = Path(path)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)
    return cache_dir() / "models" / f"{stem}-{fingerprint(path)}-{dtype_name(dtype)}"


def cache_is_complete(directory: Path) -> bool:
    """The marker exists and every file it lists has the size it recorded."""
    try:
        marker = json.loads((directory / MARKER).read_text())
        if marker.get("version") != CACHE_VERSION:
            return False
        return all((directory / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False


def convert(gguf_path: Path, dtype: torch.dtype, out_dir: Path):
    """Dequantize a GGUF file with transformers, save model and tokenizer to ``out_dir``, return them."""
    purpose = "loading a GGUF file"
    transformers = require("transformers", purpose)
    require("gguf", purpose)
    require("accelerate", purpose)
    where, name = gguf_path.parent, gguf_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        where, gguf_file=name, dtype=dtype,
        # float weights even where the `kernels` package could keep them packed
        quantization_config=transformers.GgufConfig(dequantize=True),
    )
    # save_pretrained refuses a model that still looks GGUF-quantized
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def load_gguf(path: Path, dtype: torch.dtype):
    """The float model and tokenizer of a GGUF file, converted once and then read from the cache."""
    directory = gguf_cache_dir(path, dtype)
    if cache_is_complete(directory):
        try:
            return load_hf_dir(directory, dtype)
        except Exception as error:  # a damaged cache is rebuilt, never fatal
            warnings.warn(f"rebuilding the model cache {directory}: {error}")
    with atomic_dir(directory, overwrite=True) as tmp:
        model, tokenizer = convert(path, dtype, tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        atomic_write_text(tmp / MARKER, json.dumps({
            "version": CACHE_VERSION, "source": str(path), "dtype": dtype_name(dtype), "files": files,
        }, indent=1))
    return model.to("cpu").eval(), tokenizer
