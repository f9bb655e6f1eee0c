"""GGUF file -> float model, through transformers, cached as a Hugging Face directory.

transformers dequantizes every GGUF weight to ``dtype`` (so a Q4_1 file gives the Q4_1
model in float, not the original float model). That takes ~25-30 s for SmolLM2-135M,
mostly parsing GGUF metadata; the safetensors copy written on the first load reloads in
under a second once transformers is imported.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch

from elastiq.cache import atomic_dir, atomic_write_text, cache_dir, sha256_file
from elastiq.errors import InputError

from .hf import check_loading_info, load_hf_dir, quiet_loading, require

GGUF_MAGIC = b"GGUF"
CACHE_VERSION = 1
HASHES = "hashes.json"  # (path, size, mtime, ctime, inode) -> content hash of GGUF files seen
MARKER = "elastiq-model.json"  # written last: its presence means the directory is complete


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's full sha256: any changed byte gives a new
    cache entry. Hashing costs about 1 s per GB, so each file is hashed once and its hash
    remembered by (path, size, mtime, ctime, inode) in <cache>/hashes.json (ctime changes on
    every write and cannot be set back, unlike mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    index_file = cache_dir() / HASHES
    try:
        index = json.loads(index_file.read_text())
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    if isinstance(index.get(key), str):
        return index[key]
    digest = sha256_file(path)[:16]
    # forget this file's old versions, and files that are gone
    index = {k: v for k, v in index.items() if not k.startswith(f"{path}|") and Path(k.rsplit("|", 4)[0]).exists()}
    index[key] = digest
    atomic_write_text(index_file, json.dumps(index, indent=0))
    return digest


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
    require("accelerate", purpose)
    gguf = require("gguf", purpose)
    where, name = gguf_path.parent, gguf_path.name
    try:
        gguf.GGUFReader(gguf_path)  # header and tensor table, before transformers spends half a minute
        with quiet_loading(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name, trust_remote_code=False)
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                where, gguf_file=name, dtype=dtype, trust_remote_code=False, output_loading_info=True,
                # float weights even where the `kernels` package could keep them packed
                quantization_config=transformers.GgufConfig(dequantize=True),
            )
    except Exception as e:  # noqa: BLE001  a damaged file fails the parsers in many ways (struct, numpy, KeyError, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"{gguf_path} is not a readable GGUF model ({first}): the file is damaged or not a "
                         "model transformers can load") from None
    check_loading_info(gguf_path, info)
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
    with atomic_dir(directory, overwrite=True) as tmp:  # our own cache entry: any old one may go
        model, tokenizer = convert(path, dtype, tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        atomic_write_text(tmp / MARKER, json.dumps({
            "version": CACHE_VERSION, "source": str(path), "dtype": dtype_name(dtype), "files": files,
        }, indent=1))
    return model.to("cpu").eval(), tokenizer
