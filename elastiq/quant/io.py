"""Save and load a packed model: a directory of safetensors, config, tokenizer and a
JSON manifest (kind, format, shape of each quantized module, which head is tied to
which embedding; size and sha256 of each file).

A save is built in a temporary directory and renamed into place (no half-written
model). A load checks every file against the manifest before reading it, and builds
the model skeleton on the meta device: no float copy of the weights is ever made.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from elastiq import formats as F
from elastiq.cache import atomic_dir, check_file, member, read_manifest_json, refuse_links_out, sha256_file
from elastiq.errors import InputError
from elastiq.runtime.describe import write as write_native

from .embedding import QuantEmbedding, row_scale
from .linear import QuantLinear
from .model import replace_module, tied_heads

MANIFEST = "elastiq.json"
WEIGHTS = "model.safetensors"
VERSION = 2
READABLE = (1, 2)  # version 1 had packed linear layers only
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def save(model: nn.Module, directory, tokenizer=None, overwrite: bool = False) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory``; returns the path."""
    from safetensors.torch import save_model

    directory = Path(directory)
    modules = module_entries(model)
    with atomic_dir(directory, overwrite=overwrite, owner=MANIFEST) as tmp:
        model.config.to_json_file(str(tmp / "config.json"))
        save_model(model, str(tmp / WEIGHTS))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        packed = [m for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding))]
        if not any(getattr(m, "act_format", None) is not None for m in packed):  # the runtime has no activation formats
            write_native(tmp, model.config, [m.fmt for m in packed], getattr(model, "generation_config", None))
        files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"elastiq": VERSION, "architecture": type(model).__name__, "modules": modules, "files": files}
        if getattr(model, "elastiq_calibration", None):  # how the packed weights were cast (elastiq.calib)
            manifest["calibration"] = model.elastiq_calibration
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return directory


def module_entries(model: nn.Module) -> dict[str, dict]:
    """{module: kind, format, shape, dtype, act_format (linear), tied_to (a tied head)} of
    every packed module: what a load needs to build the packed skeleton before reading."""
    ties = tied_heads(model)
    modules = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            modules[name] = {"kind": "embedding" if isinstance(m, QuantEmbedding) else "linear",
                             "format": F.spec(m.fmt), "shape": list(m.packed().shape),
                             "dtype": str(m.weight_dtype).removeprefix("torch.")}
            if isinstance(m, QuantLinear):
                modules[name]["act_format"] = F.spec(m.act_format) if m.act_format is not None else None
            if name in ties:
                modules[name]["tied_to"] = ties[name]
    return modules


def is_saved_model(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(directory) -> dict:
    """The manifest of a saved model, its shape checked and every file it lists verified."""
    directory = Path(directory)
    manifest = read_manifest_json(directory / MANIFEST, "a model saved by elastiq")
    refuse_links_out(directory)
    if manifest.get("elastiq") not in READABLE:
        raise InputError(f"{directory} was saved by elastiq format version {manifest.get('elastiq')!r}; this elastiq "
                         f"reads versions {', '.join(map(str, READABLE))}: upgrade elastiq, or save the model again")
    files, modules = manifest.get("files"), manifest.get("modules")
    if not isinstance(files, dict) or not isinstance(modules, dict):
        raise InputError(f"{directory / MANIFEST} is malformed (no 'files' or 'modules' object): save the model again")
    for required in (WEIGHTS, "config.json"):
        if required not in files:
            raise InputError(f"{directory / MANIFEST} does not vouch for {required}: save the model again")
    for name, meta in files.items():
        if not isinstance(meta, dict):
            raise InputError(f"{directory / MANIFEST} is malformed (entry of {name!r} is not an object)")
        check_file(member(directory, name), meta.get("bytes"), meta.get("sha256"))
    for name, meta in modules.items():
        check_module_meta(directory, name, meta)
    return manifest


def weight_dtype(name, where) -> torch.dtype:
    """The torch dtype a manifest names for a module's weights; only float dtypes."""
    if name not in WEIGHT_DTYPES:
        raise InputError(f"{where}: dtype {name!r} is not one of {', '.join(WEIGHT_DTYPES)}; the manifest is damaged")
    return WEIGHT_DTYPES[name]


def check_format(spec, where) -> F.Format:
    """The format a manifest names, or an InputError that says where."""
    try:
        return F.get(spec)
    except (ValueError, TypeError) as e:
        raise InputError(f"{where}: {e}") from None


def check_module_meta(directory, name, meta) -> None:
    """Refuse a module entry of the wrong shape before anything is built from it."""
    where = f"{Path(directory) / MANIFEST}, module {name!r}"
    if not isinstance(meta, dict):
        raise InputError(f"{where} is not an object; the manifest is damaged")
    if meta.get("kind", "linear") not in ("linear", "embedding"):
        raise InputError(f"{where}: kind {meta.get('kind')!r} is neither linear nor embedding")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(d) is int and d > 0 for d in shape)):
        raise InputError(f"{where}: shape {shape!r} is not two positive integers")
    if "tied_to" in meta:
        if not isinstance(meta["tied_to"], str):
            raise InputError(f"{where}: tied_to {meta['tied_to']!r} is not a module name")
        return
    check_format(meta.get("format"), where)
    weight_dtype(meta.get("dtype"), where)
    if meta.get("act_format") is not None:
        check_format(meta["act_format"], where)


def load(directory, with_tokenizer: bool = True):
    """(model, tokenizer or None) from a directory written by :func:`save`."""
    from safetensors.torch import load_model

    from elastiq.models.hf import auto_tokenizer

    directory = Path(directory)
    manifest = read_manifest(directory)
    model = empty_model(directory)
    config = model.config
    modules = manifest["modules"]
    for name, meta in sorted(modules.items(), key=lambda kv: "tied_to" in kv[1]):  # embeddings before their heads
        replace_module(model, name, _packed_module(model, directory, config, name, meta))
    materialize(model)
    try:
        missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    except (RuntimeError, ValueError, OSError) as e:  # a tensor of the wrong size or dtype, a bad header
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"{directory / WEIGHTS} does not fit the model its manifest describes ({first})") from None
    missing = set(missing) - retie_float_head(model, config, set(missing))
    if unexpected or missing:
        raise InputError(f"{directory / WEIGHTS} does not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    model.eval()
    tok = auto_tokenizer(directory) if with_tokenizer and has_tokenizer(directory) else None
    return model, tok


def empty_model(directory):
    """The causal LM that ``directory``'s config.json describes, its parameters on meta (no
    float copy of the model), its buffers real."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from elastiq.models.hf import auto_config

    config = auto_config(directory)
    with init_empty_weights(include_buffers=False):
        try:
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{directory}/config.json describes no causal LM transformers can build ({e})") from None


def _packed_module(model, directory, config, name: str, meta: dict):
    """The empty packed module the manifest describes, checked against the skeleton's module."""
    kind = meta.get("kind", "linear")
    try:
        old = model.get_submodule(name)
    except AttributeError:
        raise InputError(f"{directory}: the manifest names module {name!r}, which a {config.model_type} model does not have") from None
    want = nn.Embedding if kind == "embedding" else nn.Linear
    shape = [old.num_embeddings, old.embedding_dim] if isinstance(old, nn.Embedding) else (
        [old.out_features, old.in_features] if isinstance(old, nn.Linear) else None)
    if not isinstance(old, want) or shape != meta["shape"]:
        raise InputError(f"{directory}: module {name} is {old}, but the manifest says {kind} of shape {meta['shape']}")
    if "tied_to" in meta:
        try:
            emb = model.get_submodule(meta["tied_to"])
        except AttributeError:
            emb = None
        if not isinstance(emb, QuantEmbedding):
            raise InputError(f"{directory}: module {name} is tied to {meta['tied_to']}, which the manifest does not pack")
        return emb.tied_head()
    empty = F.empty_packed(F.get(meta["format"]), meta["shape"], WEIGHT_DTYPES[meta["dtype"]])
    if kind == "embedding":
        return QuantEmbedding(empty, old.padding_idx, row_scale(old))
    act = F.get(meta["act_format"]) if meta.get("act_format") else None
    bias = None if old.bias is None else torch.empty(old.bias.shape, dtype=old.bias.dtype)
    return QuantLinear(empty, bias, act)


def materialize(model: nn.Module) -> None:
    """Give every parameter still on meta real (uninitialized) storage, keeping ties."""
    new: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for pname, p in list(module._parameters.items()):
            if p is not None and p.device.type == "meta":
                if id(p) not in new:
                    new[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad)
                module._parameters[pname] = new[id(p)]


def retie_float_head(model, config, missing: set) -> set:
    """Tie a float output head to its float embedding again (the file stores the pair
    once); returns the names this accounts for."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not (getattr(config, "tie_word_embeddings", False) and isinstance(emb, nn.Embedding) and isinstance(head, nn.Linear)):
        return set()
    names = {id(m): n for n, m in model.named_modules()}
    emb_key, head_key = f"{names[id(emb)]}.weight", f"{names[id(head)]}.weight"
    if emb_key in missing and head_key not in missing:
        emb.weight = head.weight
        return {emb_key}
    if head_key in missing and emb_key not in missing:
        head.weight = emb.weight
        return {head_key}
    return set()


def has_tokenizer(directory: Path) -> bool:
    return any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
