"""Module scopes: which attention (self, cross, temporal) or normalization module is running.

Hooks on every attention and normalization module push a scope when the module starts and
pop it when it ends. The profiler sees each scope as a record_function range (so aten
operators can be attributed by walking up the event tree); FLOP counting reads the Python
stack directly. Attention modules are found by class name (diffusers' Attention,
transformers' LlamaAttention, torch's MultiheadAttention, ...) unless the caller names them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

SCOPE_PREFIX = "elastiq::"
ATTN_SCOPE = SCOPE_PREFIX + "attn:"     # + kind + ":" + module name
NORM_SCOPE = SCOPE_PREFIX + "norm:"     # + module name
KINDS = ("self", "cross", "temporal")


def is_attention_module(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.MultiheadAttention) or name.endswith(("Attention", "Attn")) \
        or name in ("Attention", "AttentionModule")


def is_norm_module(module: nn.Module) -> bool:
    return "Norm" in type(module).__name__


def is_weight_module(module: nn.Module) -> bool:
    """Modules whose weights elastiq formats compress: linear and convolution layers."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))


def attention_kind(name: str, module: nn.Module, ancestors: list[nn.Module]) -> str:
    """temporal if the module sits under a temporal block (diffusers' TransformerTemporalModel,
    'temp_attentions', 'temporal_*'), cross if it attends to another sequence, else self."""
    parts = name.lower().split(".")
    if any("Temporal" in type(a).__name__ for a in ancestors + [module]) or \
            any(p.startswith("temp") for p in parts):
        return "temporal"
    if getattr(module, "is_cross_attention", False) or "cross" in type(module).__name__.lower():
        return "cross"
    return "self"


def find_attention(model: nn.Module, kinds: Mapping[str, str] | None = None) -> dict[str, str]:
    """{module name: kind} for the innermost attention modules of a model; kinds overrides or
    adds entries (a module named there counts as attention even if its class name says not)."""
    found: dict[str, str] = {}

    def walk(module: nn.Module, prefix: str, ancestors: list[nn.Module]) -> bool:
        inner = False
        for child_name, child in module.named_children():
            inner |= walk(child, f"{prefix}.{child_name}" if prefix else child_name, ancestors + [module])
        if not inner and is_attention_module(module):  # the model itself may be one
            found[prefix] = attention_kind(prefix, module, ancestors)
            return True
        return inner

    walk(model, "", [])
    for name, kind in (kinds or {}).items():
        if kind not in KINDS:
            raise ValueError(f"attention kind for {name!r} must be one of {', '.join(KINDS)}, not {kind!r}")
        found[name] = kind
    return found


@dataclass
class Frame:
    kind: str            # "attn", "norm" or "weight"
    name: str
    attention: str | None = None
    call: int = -1       # index of this attention call, for sequence-length records


@dataclass
class Scopes:
    """Installs the hooks on a model while active (``with Scopes(model) as s``).

    record: open record_function ranges (for torch.profiler); on_attention_call: called with
    (module name, kind) when an attention module starts, returns a call id."""
    model: nn.Module
    kinds: Mapping[str, str] | None = None
    record: bool = False
    on_attention_call: Callable[[str, str], int] | None = None
    stack: list[Frame] = field(default_factory=list)
    attention: dict[str, str] = field(default_factory=dict)
    _handles: list = field(default_factory=list)
    _ranges: list = field(default_factory=list)

    def __enter__(self) -> "Scopes":
        self.attention = find_attention(self.model, self.kinds)
        for name, module in self.model.named_modules():
            if name in self.attention:
                self._hook(module, "attn", name, self.attention[name])
            elif is_norm_module(module):
                self._hook(module, "norm", name)
            elif is_weight_module(module):
                self._hook(module, "weight", name)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        while self._ranges:  # a failed forward can leave ranges open
            self._ranges.pop().__exit__(None, None, None)
        self.stack.clear()

    def _hook(self, module: nn.Module, kind: str, name: str, attention: str | None = None) -> None:
        label = f"{ATTN_SCOPE}{attention}:{name}" if kind == "attn" else f"{NORM_SCOPE}{name}"

        def pre(mod, args):
            call = -1
            if kind == "attn" and self.on_attention_call is not None:
                call = self.on_attention_call(name, attention)
            self.stack.append(Frame(kind, name, attention, call))
            if self.record and kind != "weight":  # weight modules are told apart by op name in the profiler
                r = torch.autograd.profiler.record_function(label)
                r.__enter__()
                self._ranges.append(r)

        def post(mod, args, out):
            if self.stack and self.stack[-1].name == name:
                self.stack.pop()
                if self.record and kind != "weight" and self._ranges:
                    self._ranges.pop().__exit__(None, None, None)

        self._handles.append(module.register_forward_pre_hook(pre))
        self._handles.append(module.register_forward_hook(post, always_call=True))

    def current(self) -> tuple[str | None, bool, bool, int]:
        """(attention kind or None, inside a norm module, inside a linear/conv module, attention call id)."""
        attention, norm, weight, call = None, False, False, -1
        for f in reversed(self.stack):
            if f.kind == "weight" and not (attention or norm):
                weight = True
            if f.kind == "norm" and attention is None:
                norm = True
            if f.kind == "attn" and attention is None:
                attention, call = f.attention, f.call
        return attention, norm, weight, call
