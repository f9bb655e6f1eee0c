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

from pathlib import Path

import torch
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
from torch import nn

from elastiq import formats as F
from elastiq.calib import Hessians, LayerStream, StreamUnsupported, calibration_windows, pack_linear, quantize_in_memory
from elastiq.options import CalibOptions, LrecOptions
from elastiq.progress import progress_bar
from elastiq.quant.model import quantize_model, replace_module, with_embedding

from .adapter import LoRALinear, add_adapters
from .train import TeacherTargets, teacher_targets, top_k_targets


HEAD_ROWS = 64  # positions whose vocabulary-wide logits exist at once in the teacher's last step


@torch.no_grad()
def stream_setup(directory, fmt, tokenizer, text: str, options: LrecOptions | None = None, progress: bool = True,
                 **overrides) -> tuple[nn.Module, TeacherTargets]:
    """(packed model with adapters on its packed linear layers, the float model's teacher
    targets on ``text``), from the float checkpoint in ``directory``, one layer at a time.
    ``options``: the set-up fields of :class:`elastiq.options.LrecOptions` (rank, alpha,
    init, adapter_dtype, embedding, context, calib_tokens, top_k); keyword ``overrides``
    change single fields."""
    o = LrecOptions.of(options, **overrides)
    fmt = F.resolve(fmt)
    st = LayerStream(directory)
    model, layers = st.model, st.layers
    plan = with_embedding(model, fmt, o.embedding)
    in_layer = st.linears(plan)
    if not any(in_layer.values()):
        raise ValueError("the plan packs no linear layer inside the decoder layers: nothing to put adapters on")
    wins = calibration_windows(tokenizer, text, o.calib_tokens, o.context)
    calib = _calib_options(o)

    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
    with progress_bar(*cols, enabled=progress) as prog:
        task = prog.add_task("teacher and packing, layer by layer", total=len(layers) + 2)
        hidden, calls = st.start(wins)  # the first layer's input, and what each layer is called with
        prog.advance(task)
        for i in range(len(layers)):
            mods = in_layer.pop(i)  # popped: the list would keep the float weights alive
            with Hessians({n: m for n, m, _ in mods} if o.method != "rtn" else {}, calib.sink_weight) as hs:
                hidden = st.run_layer(i, hidden, calls)
            for name, module, f in mods:
                packed = pack_linear(module, f, o.method, hs[name] if name in hs else None, calib)
                lora = LoRALinear(packed, o.rank, o.alpha, o.adapter_dtype)
                if o.init == "svd":
                    lora.init_from_error(module.weight)
                replace_module(model, name, lora)
            del mods, hs
            prog.advance(task)
        targets = TeacherTargets([], [], [], o.top_k)
        for w, h in zip(wins, hidden):
            parts = []
            for a in range(0, len(w) - 1, HEAD_ROWS):  # norm and head act per position: a block of them at a time
                b = min(a + HEAD_ROWS, len(w) - 1)
                with st.replaying(h[:, a:b]):
                    parts.append(top_k_targets(model(w[None, a:b], use_cache=False).logits[0], o.top_k))
            targets.ids.append(w.clone())
            targets.logp.append(torch.cat([p[0] for p in parts]))
            targets.top.append(torch.cat([p[1] for p in parts]))
        del hidden, calls
        quantize_model(model, plan, progress=False)  # what the plan packs outside the layers: the embedding, its tied head
        prog.advance(task)
    st.check_filled()
    model.elastiq_calibration = {"method": o.method, "tokens": sum(len(w) for w in wins), "context": o.context}
    return model, targets


def _calib_options(o: LrecOptions) -> CalibOptions:
    """The base's calibration: on the teacher's own windows, with CalibOptions' other defaults."""
    return CalibOptions(method=o.method, tokens=o.calib_tokens, context=o.context)


def in_memory_setup(float_model, fmt, tokenizer, text: str, options: LrecOptions | None = None, progress: bool = True,
                    **overrides) -> tuple[nn.Module, TeacherTargets]:
    """What ``stream_setup`` returns, from a float model held whole: for a model that cannot
    be read a layer at a time. ``float_model`` is left as it was."""
    import copy

    o = LrecOptions.of(options, **overrides)
    targets = teacher_targets(float_model, tokenizer, text, context=o.context, max_tokens=o.calib_tokens, top_k=o.top_k,
                              progress=progress)
    packed = copy.deepcopy(float_model)
    quantize_in_memory(packed, with_embedding(packed, fmt, o.embedding), tokenizer, text, _calib_options(o), progress=False)
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
