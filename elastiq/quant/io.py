"""Save and load a packed model: a directory of safetensors, config, tokenizer and a
JSON manifest (format, shape of each quantized module; size and sha256 of each file).

A save is built in a temporary directory and renamed into place (no half-written
model). A load checks every file against the manifest before reading it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from elastiq import formats as F
from elastiq.cache import atomic_dir

from .linear import QuantLinear
from .model import _replace

MANIFEST = "elastiq.json"
WEIGHTS = "model.safetensors"
VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: nn.Module, directory, tokenizer=None, overwrite: bool = False) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory``; returns the path."""
    from safetensors.torch import save_model

    directory = Path(directory)
    modules = {
        name: {"format": F.spec(m.fmt), "shape": [m.out_features, m.in_features],
               "dtype": str(m.weight_dtype).removeprefix("torch."),
               "act_format": F.spec(m.act_format) if m.act_format is not None else None}
        for name, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        model.config.to_json_file(str(tmp / "config.json"))
        save_model(model, str(tmp / WEIGHTS))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"elastiq": VERSION, "architecture": type(model).__name__, "modules": modules, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return directory


def is_saved_model(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(directory) -> dict:
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: it is not a model saved by elastiq") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / MANIFEST} is corrupted (not JSON: {e})") from None
    if manifest.get("elastiq") != VERSION:
        raise ValueError(f"{directory} was saved by elastiq format version {manifest.get('elastiq')}, this is version {VERSION}")
    for name, meta in manifest["files"].items():
        p = directory / name
        if not p.is_file():
            raise ValueError(f"{directory} is incomplete: {name} is missing")
        if p.stat().st_size != meta["bytes"]:
            raise ValueError(f"{p} has {p.stat().st_size} bytes but the manifest says {meta['bytes']}: truncated or replaced")
        if _sha256(p) != meta["sha256"]:
            raise ValueError(f"{p} does not match its checksum in the manifest: the file is corrupted")
    return manifest


def load(directory, with_tokenizer: bool = True):
    """(model, tokenizer or None) from a directory written by :func:`save`."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    manifest = read_manifest(directory)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    model = AutoModelForCausalLM.from_config(config)
    for name, meta in manifest["modules"].items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{directory}: the manifest names module {name!r}, which a {config.model_type} model does not have") from None
        if not isinstance(old, nn.Linear) or [old.out_features, old.in_features] != meta["shape"]:
            raise ValueError(f"{directory}: module {name} is {old}, but the manifest says a linear of shape {meta['shape']}")
        fmt = F.get(meta["format"])
        empty = F.quantize(torch.zeros(meta["shape"], dtype=getattr(torch, meta["dtype"])), fmt)
        act = F.get(meta["act_format"]) if meta["act_format"] else None
        _replace(model, name, QuantLinear(empty, old.bias, act))
    missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    if unexpected or [m for m in missing if not _is_tied(model, m)]:
        raise ValueError(f"{directory / WEIGHTS} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True) if with_tokenizer and _has_tokenizer(directory) else None
    return model, tok


def _is_tied(model, name: str) -> bool:
    keys = getattr(model, "_tied_weights_keys", None) or []
    return name in keys or any(name.endswith(k) for k in (keys if isinstance(keys, list) else keys.keys()))


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
