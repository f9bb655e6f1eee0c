"""Units: the pieces of a model that an elastic chain moves between base formats.

A unit is one linear layer (``unit="linear"``), or every linear layer of one decoder
layer together (``unit="layer"``), or the token embedding; an output head tied to
the embedding rides along with it (it shares the embedding's packed bytes). Output
heads that are not tied, norms and other small tensors stay in float, as
:func:`elastiq.quant.quantize_model` keeps them by default.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from elastiq.options import UNITS as UNIT_KINDS
from elastiq.quant.model import planned_modules, tied_float_heads


@dataclass(frozen=True)
class Unit:
    name: str
    modules: tuple[str, ...]  # modules whose packed weights the unit stores
    kind: str  # "linear", "layer" or "embedding"
    tied: tuple[str, ...] = ()  # output heads sharing the embedding's packed buffers (not stored)


def find_units(model: nn.Module, unit: str = "linear", embedding: bool = True) -> list[Unit]:
    """The model's units, in module order (the embedding first when it is one)."""
    if unit not in UNIT_KINDS:
        raise ValueError(f"unit must be one of {', '.join(UNIT_KINDS)}, got {unit!r}")
    linears = [name for name, m, fmt, _ in planned_modules(model, "int8") if fmt is not None and isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layers to build an elastic chain from")
    units: list[Unit] = []
    if embedding:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        name = next((n for n, m in model.named_modules() if m is emb), None)
        if name is None or not isinstance(emb, nn.Embedding):
            raise ValueError(f"{type(model).__name__} has no nn.Embedding input embedding: build with embedding=False")
        heads = tuple(h for h, e in tied_float_heads(model).items() if e == name)
        units.append(Unit(name, (name,), "embedding", heads))
    if unit == "linear":
        return units + [Unit(n, (n,), "linear") for n in linears]
    groups: dict[str, list[str]] = {}
    for n in linears:
        groups.setdefault(_layer_of(n), []).append(n)
    return units + [Unit(g, tuple(ms), "layer" if len(ms) > 1 else "linear") for g, ms in groups.items()]


def _layer_of(name: str) -> str:
    """``model.layers.3.mlp.up_proj`` -> ``model.layers.3``: the path up to the first index."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[: i + 1])
    return name
