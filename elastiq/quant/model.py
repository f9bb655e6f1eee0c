"""quantize_model: swap a model's linear layers (and, when asked, its embeddings) for
packed QuantLinear / QuantEmbedding layers, by plan.

A plan is one format for every linear layer, or a mapping from module-name patterns
(fnmatch, e.g. ``"*.mlp.*"``) to formats, first match wins; ``None`` keeps a module
in float. The output head and embeddings keep their precision unless a pattern other
than ``"*"`` names them (``"lm_head"``, ``"model.embed_tokens"``). An output head tied
to a packed embedding shares the embedding's packed bytes unless the plan names the
head itself. The report says what was quantized and what was kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch
from torch import nn

from elastiq import formats as F
from elastiq.progress import progress_bar

from .embedding import QuantEmbedding
from .linear import PackedWeight, QuantLinear, check_kernel_path

HEAD_NAMES = ("lm_head", "embed_out", "output")


@dataclass
class QuantReport:
    quantized: dict[str, str] = field(default_factory=dict)  # module name -> format spec
    kept: dict[str, str] = field(default_factory=dict)  # module name -> why it stayed float

    def summary(self) -> str:
        return f"{len(self.quantized)} modules quantized, {len(self.kept)} kept in float"


def normalize_plan(plan) -> list[tuple[str, F.Format | None]]:
    """A plan as an ordered list of (pattern, format or None)."""
    if isinstance(plan, (str, F.Format)):
        return [("*", F.resolve(plan))]
    if isinstance(plan, dict):
        if not plan:
            raise ValueError("the plan is empty: give a format, or a mapping from module-name patterns to formats")
        return [(str(p), None if f is None else F.resolve(f)) for p, f in plan.items()]
    raise TypeError(f"a plan is a format (name or Format) or a dict of pattern -> format, got {type(plan).__name__}")


def with_embedding(model: nn.Module, plan, embedding) -> object:
    """``plan`` plus a rule packing the model's token embedding in ``embedding`` (a format,
    or "same" for the plan's own single format); an output head tied to it follows.
    ``embedding=None`` returns the plan unchanged."""
    if embedding is None:
        return plan
    if embedding == "same":
        if not isinstance(plan, (str, F.Format)):
            raise ValueError("embedding='same' needs a plan that is one format; name the embedding's format instead")
        embedding = plan
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    name = next((n for n, m in model.named_modules() if m is emb), None)
    if name is None or not isinstance(emb, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding input embedding to pack")
    rules = {"*": plan} if isinstance(plan, (str, F.Format)) else dict(plan)
    return {name: embedding, **rules}


def _pick(name: str, rules) -> tuple[F.Format | None, str | None]:
    for pattern, fmt in rules:
        if fnmatchcase(name, pattern):
            return fmt, pattern
    return None, None


def planned_modules(model: nn.Module, plan):
    """(name, module, format, None) for each nn.Linear / nn.Embedding the plan quantizes,
    and (name, module, None, why) for each it keeps in float."""
    rules = normalize_plan(plan)
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        fmt, pattern = _pick(name, rules)
        explicit = pattern not in (None, "*")
        if isinstance(module, nn.Embedding) and not explicit:
            yield name, module, None, "embedding (name it in the plan to quantize it)"
        elif name.split(".")[-1] in HEAD_NAMES and not explicit:
            yield name, module, None, "output head (name it in the plan to quantize it)"
        elif fmt is None:
            yield name, module, None, "plan keeps it in float" if pattern else "no pattern matches"
        else:
            yield name, module, fmt, None


def quantize_model(model: nn.Module, plan, act_format=None, progress: bool = True) -> QuantReport:
    """Replace ``model``'s planned modules in place; returns what was quantized and kept."""
    report = QuantReport()
    todo = list(planned_modules(model, plan))
    tied = tied_float_heads(model)
    with progress_bar(enabled=progress) as prog:
        task = prog.add_task("quantizing", total=len(todo))
        for name, module, fmt, why in todo:
            prog.advance(task)
            if fmt is None:
                report.kept[name] = why
            elif isinstance(module, nn.Embedding):
                replace_module(model, name, QuantEmbedding.from_embedding(module, fmt))
                report.quantized[name] = F.spec(fmt)
            else:
                replace_module(model, name, QuantLinear.from_linear(module, fmt, act_format))
                report.quantized[name] = F.spec(fmt)
    for head, emb in tied.items():  # a float head tied to a now-packed embedding shares its bytes
        if emb in report.quantized and head in report.kept:
            replace_module(model, head, model.get_submodule(emb).tied_head())
            report.quantized[head] = f"{report.quantized[emb]} (tied to {emb})"
            del report.kept[head]
    return report


def tied_float_heads(model: nn.Module) -> dict[str, str]:
    """{head name: embedding name} for linear layers that share their weight with an embedding."""
    embeddings = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    return {n: embeddings[id(m.weight)] for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m.weight) in embeddings}


def tied_heads(model: nn.Module) -> dict[str, str]:
    """{head name: embedding name} for QuantLinear heads that share a QuantEmbedding's buffers."""
    embeddings = {m.codes.data_ptr(): n for n, m in model.named_modules() if isinstance(m, QuantEmbedding)}
    return {n: embeddings[m.codes.data_ptr()] for n, m in model.named_modules()
            if isinstance(m, QuantLinear) and m.codes.data_ptr() in embeddings}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted, as ``named_modules`` gives it) is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def set_kernel_path(model: nn.Module, path: str) -> int:
    """Run every packed layer of ``model`` on ``path`` ("auto", "native" or "torch"; see
    ``QuantLinear``); returns how many layers that is."""
    check_kernel_path(path)
    layers = [m for m in model.modules() if isinstance(m, PackedWeight)]
    for m in layers:
        m.kernel_path = path
    return len(layers)


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
    """The float reference of a plan: round each planned weight onto its format in place.
    A tied head follows its embedding, as in :func:`quantize_model`; a tied head that the
    plan names itself is untied first, as packing it on its own does."""
    with torch.no_grad():
        planned = [(m, fmt) for _, m, fmt, _ in planned_modules(model, plan) if fmt is not None]
        rounded = [F.fake_quantize(m.weight, fmt) for m, fmt in planned]  # all from the float weights
        seen = set()
        for (module, _), w in zip(planned, rounded):
            if id(module.weight) in seen:
                module.weight = nn.Parameter(w, requires_grad=False)
            else:
                seen.add(id(module.weight))
                module.weight.copy_(w)
