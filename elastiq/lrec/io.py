"""Save and load adapters next to a packed model: adapters.safetensors and a manifest
(rank, alpha and base format of each adapted module; size and sha256 of the file)."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from elastiq import formats as F
from elastiq.cache import atomic_dir
from elastiq.quant import QuantLinear
from elastiq.quant.io import _sha256
from elastiq.quant.model import _replace

from .adapter import LoRALinear, adapters_of

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
    modules = {n: {"rank": lo.rank, "alpha": lo.alpha, "base_format": F.spec(lo.base.fmt),
                   "shape": [lo.base.out_features, lo.base.in_features]} for n, lo in loras.items()}
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        manifest = {"elastiq_adapters": VERSION, "modules": modules,
                    "file": {"name": TENSORS, "bytes": (tmp / TENSORS).stat().st_size, "sha256": _sha256(tmp / TENSORS)}}
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
            _replace(model, name, lo.base)
        try:
            yield model
        finally:
            for name, lo in loras.items():
                _replace(model, name, lo)

    return ctx()


def load_adapters(model: nn.Module, directory) -> dict[str, LoRALinear]:
    """Wrap ``model``'s packed layers in the adapters saved in ``directory``; refuses files
    that are corrupted or adapters made for other layers or formats."""
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: it does not hold adapters saved by elastiq") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / MANIFEST} is corrupted (not JSON: {e})") from None
    if manifest.get("elastiq_adapters") != VERSION:
        raise ValueError(f"{directory} holds adapters of format version {manifest.get('elastiq_adapters')}, this elastiq reads {VERSION}")
    f = directory / manifest["file"]["name"]
    if not f.is_file() or f.stat().st_size != manifest["file"]["bytes"] or _sha256(f) != manifest["file"]["sha256"]:
        raise ValueError(f"{f} is missing, truncated or corrupted (it does not match the manifest)")
    tensors = load_file(str(f))
    out = {}
    for name, meta in manifest["modules"].items():
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
        lo = LoRALinear(base, meta["rank"], meta["alpha"])
        lo.lora_A.data.copy_(tensors[f"{name}.lora_A"])
        lo.lora_B.data.copy_(tensors[f"{name}.lora_B"])
        lo.requires_grad_(False)
        _replace(model, name, lo)
        out[name] = lo
    return out
