"""quantize_model: swap a model's linear layers for packed QuantLinear layers, by plan.

A plan is one format for every linear layer, or a mapping from module-name patterns
(fnmatch, e.g. ``"*.mlp.*"``) to formats, first match wins; ``None`` keeps a module
in float. The output head and embeddings keep their precision unless a pattern names
them explicitly (``"lm_head"``): report says what was kept.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch
from rich.progress import Progress
from torch import nn

from elastiq import formats as F

from .linear import QuantLinear

HEAD_NAMES = ("lm_head", "embed_out", "output")


@dataclass
class QuantReport:
    quantized: dict[str, str] = field(default_factory=dict)  # module name -> format spec
    kept: dict[str, str] = field(default_factory=dict)  # module name -> why it stayed float

    def summary(self) -> str:
        return f"{len(self.quantized)} linear layers quantized, {len(self.kept)} kept in float"


def normalize_plan(plan) -> list[tuple[str, F.Format | None]]:
    """A plan as an ordered list of (pattern, format or None)."""
    if isinstance(plan, (str, F.Format)):
        return [("*", F.resolve(plan))]
    if isinstance(plan, dict):
        if not plan:
            raise ValueError("the plan is empty: give a format, or a mapping from module-name patterns to formats")
        return [(str(p), None if f is None else F.resolve(f)) for p, f in plan.items()]
    raise TypeError(f"a plan is a format (name or Format) or a dict of pattern -> format, got {type(plan).__name__}")


def _pick(name: str, rules) -> tuple[F.Format | None, str | None]:
    for pattern, fmt in rules:
        if fnmatchcase(name, pattern):
            return fmt, pattern
    return None, None


def planned_linears(model: nn.Module, plan):
    """(name, linear, format, None) for each nn.Linear the plan quantizes, and
    (name, linear, None, why) for each it keeps in float."""
    rules = normalize_plan(plan)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        fmt, pattern = _pick(name, rules)
        if name.split(".")[-1] in HEAD_NAMES and pattern in (None, "*"):
            yield name, module, None, "output head (name it in the plan to quantize it)"
        elif fmt is None:
            yield name, module, None, "plan keeps it in float" if pattern else "no pattern matches"
        else:
            yield name, module, fmt, None


def quantize_model(model: nn.Module, plan, act_format=None, progress: bool = True) -> QuantReport:
    """Replace ``model``'s nn.Linear layers in place; returns what was quantized and kept."""
    report = QuantReport()
    todo = list(planned_linears(model, plan))
    with Progress(transient=True, disable=not (progress and sys.stderr.isatty())) as prog:
        task = prog.add_task("quantizing", total=len(todo))
        for name, module, fmt, why in todo:
            prog.advance(task)
            if fmt is None:
                report.kept[name] = why
                continue
            _replace(model, name, QuantLinear.from_linear(module, fmt, act_format))
            report.quantized[name] = F.spec(fmt)
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            report.kept[name] = "embedding"
    return report


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers, each storage counted once
    (tied weights), packed codes at their real size."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t is None or t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def fake_quantize_model(model: nn.Module, plan) -> None:
    """The float reference of a plan: round each planned weight onto its format in place."""
    with torch.no_grad():
        for _, module, fmt, _ in list(planned_linears(model, plan)):
            if fmt is not None:
                module.weight.copy_(F.fake_quantize(module.weight, fmt))
