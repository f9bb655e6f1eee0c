"""Set up LREC one decoder layer at a time: the float model is never whole in memory.

``stream_setup`` reads the float weights from a safetensors directory a layer at a time.
It pushes the calibration windows through that layer's float weights (the teacher's
hidden states), packs the layer's linear layers, starts their adapters from the
quantization error, and drops the float weights before the next layer. The model's own
forward pass supplies everything around the layers (embedding, masks, position
embeddings, final norm, output head): each layer's ``forward`` is swapped for a stand-in
that records its arguments, or hands back the stored hidden states. The resulting packed
model, adapters and teacher targets are those of the in-memory route
(``in_memory_setup``: ``teacher_targets``, a packed copy, ``add_adapters``); tests check that.

What the process holds at most: the packed model, one float decoder layer, the float
embedding and head, and the hidden states of the calibration windows (tokens x hidden
size, float32).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
from torch import nn

from elastiq import formats as F
from elastiq.data import tokenize, windows
from elastiq.errors import InputError
from elastiq.options import LrecOptions
from elastiq.progress import progress_bar
from elastiq.quant import QuantLinear
from elastiq.quant.io import empty_model
from elastiq.quant.model import planned_modules, quantize_model, replace_module, with_embedding

from .adapter import LoRALinear, add_adapters
from .train import TeacherTargets, teacher_targets, top_k_targets


HEAD_ROWS = 64  # positions whose vocabulary-wide logits exist at once in the teacher's last step


class StreamUnsupported(ValueError):
    """The model cannot be set up a layer at a time (no safetensors, or no decoder-layer list)."""


class _Weights:
    """Tensors of a safetensors checkpoint (one file, or shards with an index), read on demand.

    Each read opens and closes its file: a mapping kept open would count every page read
    so far in the process's resident memory."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        self._open = safe_open
        index = directory / "model.safetensors.index.json"
        single = directory / "model.safetensors"
        if index.is_file():
            from elastiq.cache import member, read_manifest_json

            weight_map = read_manifest_json(index, "a sharded checkpoint").get("weight_map")
            if not isinstance(weight_map, dict):
                raise InputError(f"{index} has no weight_map object: the checkpoint is damaged")
            self.where = {k: member(directory, f) for k, f in weight_map.items()}  # shards inside the folder only
        elif single.is_file():
            with safe_open(str(single), "pt") as f:
                self.where = dict.fromkeys(f.keys(), single)
        else:
            raise StreamUnsupported(f"{directory} has no model.safetensors (or index): the float weights cannot be "
                                    f"read a layer at a time")

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        by_file: dict[Path, list[str]] = {}
        for n in names:
            by_file.setdefault(self.where[n], []).append(n)
        out = {}
        for path, keys in by_file.items():
            with self._open(str(path), "pt") as f:
                for k in keys:
                    t = f.get_tensor(k)  # may be a view of the file's mapping: copy it, so the mapping can go
                    out[k] = t.to(torch.float32 if t.is_floating_point() else t.dtype, copy=True)
        return out


def _skeleton(directory: Path):
    """The model with its parameters on meta (buffers real)."""
    model = empty_model(directory)
    model.tie_weights()  # from_config on meta leaves a tied head untied; the checkpoint stores the pair once
    return model


def _decoder_layers(model) -> tuple[str, nn.ModuleList]:
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise StreamUnsupported(f"{type(model).__name__} keeps no list of decoder layers at base_model.layers")
    return next(n for n, m in model.named_modules() if m is layers), layers


def _load_params(model, weights: _Weights, wanted) -> None:
    """Give each meta parameter whose name passes ``wanted`` its float value from the file
    (tied parameters once, under whichever of their names the file uses)."""
    names: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    todo: dict[int, str] = {}
    for n, p in model.named_parameters():
        if p.device.type == "meta" and any(wanted(a) for a in names[id(p)]):
            stored = [a for a in names[id(p)] if a in weights.where]
            if not stored:
                raise StreamUnsupported(f"the checkpoint has no tensor for {n}")
            todo[id(p)] = stored[0]
    values = weights.read(list(todo.values()))
    new: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for pname, p in list(module._parameters.items()):
            if p is not None and id(p) in todo:
                if id(p) not in new:
                    t = values[todo[id(p)]]
                    if tuple(t.shape) != tuple(p.shape):
                        raise StreamUnsupported(f"{todo[id(p)]} has shape {tuple(t.shape)} in the checkpoint, "
                                                f"the model expects {tuple(p.shape)}")
                    new[id(p)] = nn.Parameter(t, requires_grad=False)
                module._parameters[pname] = new[id(p)]


@contextmanager
def _stand_ins(layers: nn.ModuleList, forward_for):
    """Every decoder layer's forward swapped for ``forward_for(index)`` while inside."""
    for i, layer in enumerate(layers):
        layer.forward = forward_for(i)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _recorder(calls: list):
    """Stand-ins that note each layer's call (hidden states in, keyword arguments) and pass the states on."""
    def forward_for(i):
        def forward(hidden_states, *args, **kwargs):
            if args:
                raise StreamUnsupported("the decoder layers are called with positional arguments besides the hidden states")
            calls.append((hidden_states, kwargs))
            return hidden_states
        return forward
    return forward_for


def _replayer(final: torch.Tensor):
    """Stand-ins that hand on ``final`` (the last layer's output): the model's own norm and head then follow."""
    return lambda i: (lambda hidden_states, *args, **kwargs: final if i == 0 else hidden_states)


@torch.no_grad()
def stream_setup(directory, fmt, tokenizer, text: str, options: LrecOptions | None = None, progress: bool = True,
                 **overrides) -> tuple[nn.Module, TeacherTargets]:
    """(packed model with adapters on its packed linear layers, the float model's teacher
    targets on ``text``), from the float checkpoint in ``directory``, one layer at a time.
    ``options``: the set-up fields of :class:`elastiq.options.LrecOptions` (rank, alpha,
    init, adapter_dtype, embedding, context, calib_tokens, top_k); keyword ``overrides``
    change single fields."""
    o = LrecOptions.of(options, **overrides)
    directory = Path(directory)
    fmt = F.resolve(fmt)
    weights = _Weights(directory)
    model = _skeleton(directory)
    prefix, layers = _decoder_layers(model)
    plan = with_embedding(model, fmt, o.embedding)
    in_layer = {i: [] for i in range(len(layers))}
    for name, module, f, _ in planned_modules(model, plan):
        if f is not None and isinstance(module, nn.Linear) and name.startswith(prefix + "."):
            in_layer[int(name[len(prefix) + 1:].split(".")[0])].append((name, module, f))
    if not any(in_layer.values()):
        raise ValueError("the plan packs no linear layer inside the decoder layers: nothing to put adapters on")
    wins = [w for w, _ in windows(tokenize(tokenizer, text, o.calib_tokens), context=o.context, max_tokens=o.calib_tokens)]
    if not wins:
        raise ValueError("the calibration text is too short for a single window")
    _load_params(model, weights, lambda n: not n.startswith(prefix + "."))
    model.eval()

    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
    with progress_bar(*cols, enabled=progress) as prog:
        task = prog.add_task("teacher and packing, layer by layer", total=len(layers) + 2)
        hidden, calls = [], []
        for w in wins:  # the first layer's input, and what each layer is called with, from the model's own forward
            seen: list = []
            with _stand_ins(layers, _recorder(seen)):
                model.base_model(w[None], use_cache=False)
            if len(seen) != len(layers):
                raise StreamUnsupported(f"the model called {len(seen)} of its {len(layers)} decoder layers")
            hidden.append(seen[0][0])
            calls.append([kw for _, kw in seen])
        prog.advance(task)
        for i, layer in enumerate(layers):
            _load_params(model, weights, lambda n: n.startswith(f"{prefix}.{i}."))
            hidden = [layer(h, **calls[w][i]) for w, h in enumerate(hidden)]
            for name, module, f in in_layer.pop(i):  # popped: the list would keep the float weights alive
                lora = LoRALinear(QuantLinear.from_linear(module, f), o.rank, o.alpha, o.adapter_dtype)
                if o.init == "svd":
                    lora.init_from_error(module.weight)
                replace_module(model, name, lora)
            prog.advance(task)
        targets = TeacherTargets([], [], [], o.top_k)
        for w, h in zip(wins, hidden):
            parts = []
            for a in range(0, len(w) - 1, HEAD_ROWS):  # norm and head act per position: a block of them at a time
                b = min(a + HEAD_ROWS, len(w) - 1)
                with _stand_ins(layers, _replayer(h[:, a:b])):
                    parts.append(top_k_targets(model(w[None, a:b], use_cache=False).logits[0], o.top_k))
            targets.ids.append(w.clone())
            targets.logp.append(torch.cat([p[0] for p in parts]))
            targets.top.append(torch.cat([p[1] for p in parts]))
        del hidden, calls
        quantize_model(model, plan, progress=False)  # what the plan packs outside the layers: the embedding, its tied head
        prog.advance(task)
    leftover = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if leftover:
        raise StreamUnsupported(f"parameters the checkpoint never filled: {leftover[:5]}")
    return model, targets


def in_memory_setup(float_model, fmt, tokenizer, text: str, options: LrecOptions | None = None, progress: bool = True,
                    **overrides) -> tuple[nn.Module, TeacherTargets]:
    """What ``stream_setup`` returns, from a float model held whole: for a model that cannot
    be read a layer at a time. ``float_model`` is left as it was."""
    import copy

    o = LrecOptions.of(options, **overrides)
    targets = teacher_targets(float_model, tokenizer, text, context=o.context, max_tokens=o.calib_tokens, top_k=o.top_k,
                              progress=progress)
    packed = copy.deepcopy(float_model)
    quantize_model(packed, with_embedding(packed, fmt, o.embedding), progress=False)
    add_adapters(packed, o.rank, o.alpha, init=o.init, float_model=float_model, dtype=o.adapter_dtype)
    return packed, targets


def setup(model: str, fmt, text: str, options: LrecOptions | None = None, source=None, on_fallback=None,
          progress: bool = True, **overrides) -> tuple[nn.Module, object, TeacherTargets]:
    """(packed model with adapters, tokenizer, teacher targets) for ``model`` (a built-in name,
    a Hugging Face directory or a .gguf file): one decoder layer at a time from its float
    checkpoint ``source`` (default: ``models.float_checkpoint_dir(model)``), or, for a model
    that cannot be read that way, from the whole float model in memory, after telling
    ``on_fallback`` why. ``options`` and ``overrides`` as ``stream_setup``."""
    options = LrecOptions.of(options, **overrides)
    from transformers import AutoTokenizer

    from elastiq.models import float_checkpoint_dir
    from elastiq.models import load as load_float

    source = float_checkpoint_dir(model) if source is None else Path(source)
    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    try:
        q, targets = stream_setup(source, fmt, tok, text, options, progress)
        return q, tok, targets
    except StreamUnsupported as e:
        if on_fallback is not None:
            on_fallback(e)
    fp, tok = load_float(model)
    q, targets = in_memory_setup(fp, fmt, tok, text, options, progress)
    return q, tok, targets


__all__ = ["StreamUnsupported", "in_memory_setup", "setup", "stream_setup"]
