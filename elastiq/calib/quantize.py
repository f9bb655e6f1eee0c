"""Calibrated packing of a model's linear layers: GPTQ or scale search (``quant.gptq``)
on each layer's input Hessian, gathered while the float model runs the calibration text.

Two routes give the same packed model (tests check it): ``quantize_in_memory`` hooks a
float model held whole; ``quantize_stream`` reads a float checkpoint one decoder layer at
a time (``LayerStream``), so the process holds the packed model and one float layer. Each
layer's Hessian comes from the float model's own hidden states (not from the packed
layers before it), so the whole model's Hessians come from one pass. Embeddings, and
linear layers outside the decoder layers on the stream route, are packed round-to-nearest.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from elastiq import formats as F
from elastiq.data import tokenize, windows
from elastiq.options import CalibOptions
from elastiq.progress import progress_bar
from elastiq.quant import QuantLinear, quantize_model, replace_module, with_embedding
from elastiq.quant.gptq import gptq, rtn_cast, search_scales
from elastiq.quant.model import QuantReport, planned_modules

from .hessian import Hessians
from .stream import LayerStream, StreamUnsupported


def calibration_windows(tokenizer, text: str, tokens: int | None, context: int) -> list[torch.Tensor]:
    wins = [w for w, _ in windows(tokenize(tokenizer, text, tokens), context=context, max_tokens=tokens)]
    if not wins:
        raise ValueError("the calibration text is too short for a single window")
    return wins


def pack_linear(linear: nn.Linear, fmt, method: str, hessian: torch.Tensor | None,
                options: CalibOptions | None = None) -> QuantLinear:
    """``linear`` packed in ``fmt`` by ``method`` (see ``options.METHODS``) with its input Hessian."""
    o = options or CalibOptions()
    w = linear.weight.detach()
    if method == "rtn":
        return QuantLinear.from_linear(linear, fmt)
    if hessian is None:
        raise ValueError(f"method {method} needs the layer's input Hessian: it saw no calibration input")
    if method == "search":
        packed, _ = rtn_cast(w, fmt, search_scales(w, fmt, hessian.diagonal()))
    else:
        packed, _ = gptq(w, hessian, fmt, damp=o.damp, act_order=o.act_order, batch=o.batch, search=method == "gptq+search")
    return QuantLinear(packed, linear.bias)


def record(options: CalibOptions, text_name: str | None, tokens: int, seconds: float) -> dict:
    """What a manifest says about how a model was calibrated."""
    return {"method": options.method, "text": text_name, "tokens": tokens, "context": options.context,
            "damp": options.damp, "act_order": options.act_order, "batch": options.batch,
            "sequential": options.sequential, "sink_weight": options.sink_weight, "seconds": round(seconds, 1)}


def _calibrated_linears(model, plan) -> dict[str, tuple[nn.Linear, F.Format]]:
    return {n: (m, f) for n, m, f, _ in planned_modules(model, plan) if f is not None and isinstance(m, nn.Linear)}


@torch.no_grad()
def quantize_in_memory(model: nn.Module, plan, tokenizer, text: str, options: CalibOptions | None = None,
                       progress: bool = True, text_name: str | None = None) -> QuantReport:
    """Pack ``model`` (float, whole, changed in place) by ``plan`` with ``options.method``;
    its ``elastiq_calibration`` records how (``save`` writes it to the manifest)."""
    o = options or CalibOptions()
    t0 = time.perf_counter()
    if o.method == "rtn":
        report = quantize_model(model, plan, progress=progress)
        model.elastiq_calibration = record(o, None, 0, time.perf_counter() - t0)
        return report
    wins = calibration_windows(tokenizer, text, o.tokens, o.context)
    targets = _calibrated_linears(model, plan)
    was_training = model.training
    model.eval()
    with progress_bar(enabled=progress) as prog:
        task = prog.add_task(f"{o.method}: Hessians", total=len(wins))
        with Hessians({n: m for n, (m, _) in targets.items()}, o.sink_weight) as hs:
            for w in wins:
                model(w[None], use_cache=False)
                prog.advance(task)
        task = prog.add_task(f"{o.method}: packing", total=len(targets))
        report = QuantReport()
        for name, (module, fmt) in targets.items():
            replace_module(model, name, pack_linear(module, fmt, o.method, hs[name] if name in hs else None, o))
            report.quantized[name] = F.spec(fmt)
            prog.advance(task)
    rest = quantize_model(model, plan, progress=False)  # the embedding, a tied head
    report.quantized.update(rest.quantized)
    report.kept.update(rest.kept)
    model.train(was_training)
    model.elastiq_calibration = record(o, text_name, sum(len(w) for w in wins), time.perf_counter() - t0)
    return report


@torch.no_grad()
def quantize_stream(directory, plan, tokenizer, text: str, options: CalibOptions | None = None, embedding=None,
                    progress: bool = True, text_name: str | None = None) -> tuple[nn.Module, QuantReport]:
    """(packed model, report) from the float checkpoint in ``directory``, one decoder layer
    at a time; ``embedding`` as ``elastiq.quantize``. Raises ``StreamUnsupported`` for a
    model that cannot be read that way (then use ``quantize_in_memory``)."""
    o = options or CalibOptions()
    t0 = time.perf_counter()
    st = LayerStream(directory)
    plan = with_embedding(st.model, plan, embedding)
    by_layer = st.linears(plan)
    wins = calibration_windows(tokenizer, text, o.tokens, o.context)
    report = QuantReport()
    with progress_bar(enabled=progress) as prog:
        task = prog.add_task(f"{o.method}, layer by layer", total=len(st.layers) + 1)
        hidden, calls = st.start(wins)
        prog.advance(task)
        for i in range(len(st.layers)):
            mods = by_layer.pop(i)  # popped: the list would keep the float weights alive
            hidden = _pack_layer(st, i, mods, hidden, calls, o, report)
            del mods
            prog.advance(task)
    del hidden, calls
    rest = quantize_model(st.model, plan, progress=False)  # outside the layers: the embedding, a tied head
    report.quantized.update(rest.quantized)
    report.kept.update(rest.kept)
    st.check_filled()
    st.model.elastiq_calibration = record(o, text_name, sum(len(w) for w in wins), time.perf_counter() - t0)
    return st.model, report


def _pack_layer(st: LayerStream, i: int, mods, hidden, calls, o: CalibOptions, report: QuantReport):
    """Pack decoder layer ``i``'s linear layers ``mods``; its output on every window.

    Sequential (``o.sequential``, as GPTQ's "true sequential"): the layers fed one input (q, k
    and v; then o; gate and up; down) are packed in the order the layer runs them, each from
    Hessians of inputs that came through the layers packed before it, in this decoder layer
    and the ones before (``hidden`` is the packed model's), and the output is the packed
    layer's. Otherwise every Hessian comes from one run of the float layer, and so does the output."""
    if not mods:  # nothing to pack here (a plan that skips the layer): the float layer's output
        return st.run_layer(i, hidden, calls)
    sequential = o.sequential and o.method != "rtn"
    pending = list(mods)
    out = None
    while pending:
        with Hessians({n: m for n, m, _ in pending}, o.sink_weight) as hs:
            out = st.run_layer(i, hidden, calls) if out is None else st.forward_layer(i, hidden, calls)
        stage = [t for t in pending if not sequential or (t[0] in hs and hs.owner[t[0]] == hs.first)] or pending
        for name, module, fmt in stage:
            replace_module(st.model, name, pack_linear(module, fmt, o.method, hs[name] if name in hs else None, o))
            report.quantized[name] = F.spec(fmt)
        pending = [t for t in pending if t not in stage]
        del hs
    return st.forward_layer(i, hidden, calls) if sequential else out


def quantize_source(model: str, plan, text: str, options: CalibOptions | None = None, embedding=None,
                    text_name: str | None = None, on_fallback=None, progress: bool = True):
    """(packed model, tokenizer) for ``model`` (a built-in name, a Hugging Face directory or
    a .gguf file): streamed from its float checkpoint where it can be, else in memory after
    telling ``on_fallback`` why. The model's ``elastiq_report`` says what was packed."""
    from transformers import AutoTokenizer

    from elastiq.errors import InputError
    from elastiq.models import float_checkpoint_dir, load
    from elastiq.quant.io import is_saved_model

    if is_saved_model(model):
        raise InputError(f"{model} is already packed: calibrate from the float model it came from")
    source = float_checkpoint_dir(model)
    try:
        tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        packed, report = quantize_stream(source, plan, tok, text, options, embedding, progress, text_name)
        packed.elastiq_report = report
        return packed, tok
    except StreamUnsupported as e:
        if on_fallback is not None:
            on_fallback(e)
    fp, tok = load(model)
    fp.elastiq_report = quantize_in_memory(fp, with_embedding(fp, plan, embedding), tok, text, options, progress, text_name)
    return fp, tok
