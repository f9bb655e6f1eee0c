"""Save and load adapters next to a packed model: adapters.safetensors and a manifest
(rank, alpha, weight dtype and base format of each adapted module; size and sha256 of the file)."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from elastiq import formats as F
from elastiq.cache import atomic_dir, check_file, member, read_manifest_json, sha256_file
from elastiq.errors import InputError
from elastiq.quant import QuantLinear
from elastiq.quant.model import replace_module

from .adapter import LoRALinear, adapter_dtype, adapters_of, dtype_name

MANIFEST = "adapters.json"
TENSORS = "adapters.safetensors"
VERSION = 1


def save_adapters(model: nn.Module, directory, overwrite: bool = False) -> Path:
    from safetensors.torch import save_file

    loras = adapters_of(model)
    if not loras:
        raise ValueError("the model has no adapters to save")
    directory = Path(directory)
    tensors = {}
    for name, lo in loras.items():
        tensors[f"{name}.lora_A"] = lo.lora_A.detach().contiguous()
        tensors[f"{name}.lora_B"] = lo.lora_B.detach().contiguous()
    modules = {n: {"rank": lo.rank, "alpha": lo.alpha, "dtype": dtype_name(lo.lora_A.dtype), "base_format": F.spec(lo.base.fmt),
                   "shape": [lo.base.out_features, lo.base.in_features]} for n, lo in loras.items()}
    with atomic_dir(directory, overwrite=overwrite, owner=MANIFEST) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        manifest = {"elastiq_adapters": VERSION, "modules": modules,
                    "file": {"name": TENSORS, "bytes": (tmp / TENSORS).stat().st_size, "sha256": sha256_file(tmp / TENSORS)}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return directory


def unwrapped(model: nn.Module):
    """A context in which ``model``'s adapted layers are their packed bases again (to save
    the packed model under its own module names); the adapters return afterwards."""
    from contextlib import contextmanager

    @contextmanager
    def ctx():
        loras = adapters_of(model)
        for name, lo in loras.items():
            replace_module(model, name, lo.base)
        try:
            yield model
        finally:
            for name, lo in loras.items():
                replace_module(model, name, lo)

    return ctx()


def load_adapters(model: nn.Module, directory) -> dict[str, LoRALinear]:
    """Wrap ``model``'s packed layers in the adapters saved in ``directory``; refuses files
    that are corrupted or adapters made for other layers or formats."""
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = read_manifest_json(directory / MANIFEST, "a directory of adapters saved by elastiq")
    if manifest.get("elastiq_adapters") != VERSION:
        raise InputError(f"{directory} holds adapters of format version {manifest.get('elastiq_adapters')!r}, this elastiq reads {VERSION}")
    entry, modules = manifest.get("file"), manifest.get("modules")
    if not isinstance(entry, dict) or not isinstance(modules, dict):
        raise InputError(f"{directory / MANIFEST} is malformed (no 'file' or 'modules' object): save the adapters again")
    f = member(directory, entry.get("name"))
    check_file(f, entry.get("bytes"), entry.get("sha256"))
    tensors = load_file(str(f))
    out = {}
    for name, meta in modules.items():
        if not (isinstance(meta, dict) and type(meta.get("rank")) is int and meta["rank"] > 0
                and isinstance(meta.get("alpha"), (int, float)) and f"{name}.lora_A" in tensors and f"{name}.lora_B" in tensors):
            raise InputError(f"{directory / MANIFEST}: the entry of {name!r} is malformed or its tensors are missing")
        try:
            base = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the adapters are for module {name}, which this model does not have") from None
        if isinstance(base, LoRALinear):
            raise ValueError(f"module {name} already has an adapter")
        if not isinstance(base, QuantLinear) or F.spec(base.fmt) != meta["base_format"] or \
                [base.out_features, base.in_features] != meta["shape"]:
            raise ValueError(f"the adapter for {name} was trained on a {meta['base_format']} layer of shape {meta['shape']}, "
                             f"but this model's {name} is {base}")
        dtype = adapter_dtype(meta.get("dtype", "float32"))  # manifests before the dtype field: float32
        a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
        if a.dtype != dtype or b.dtype != dtype:
            raise ValueError(f"the adapter for {name} is stored as {a.dtype}, its manifest says {meta.get('dtype')}")
        lo = LoRALinear(base, meta["rank"], meta["alpha"], dtype)
        if a.shape != lo.lora_A.shape or b.shape != lo.lora_B.shape:
            raise InputError(f"the adapter for {name} has shapes {tuple(a.shape)} and {tuple(b.shape)}, its manifest says "
                             f"rank {meta['rank']} on {meta['shape']}")
        lo.lora_A.data.copy_(a)
        lo.lora_B.data.copy_(b)
        lo.requires_grad_(False)
        replace_module(model, name, lo)
        out[name] = lo
    return out
