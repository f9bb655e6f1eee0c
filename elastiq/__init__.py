"""elastiq: run language models on machines whose free memory moves under them.

    model, tok = elastiq.load("smollm2-135m")     # built-in, HF directory, .gguf, or a saved packed model
    elastiq.quantize(model, "nxfp4")               # in place; returns the model
    elastiq.perplexity(model, tok, text)
    elastiq.weight_bytes(model)
    elastiq.save(model, "out/", tokenizer=tok)

Heavy libraries (transformers) load on first use, so ``import elastiq`` stays quick.
"""
import logging as _logging

__version__ = "0.1.0"

# transformers imports torchao when it is installed, and torchao then logs a warning for each
# CUDA library a CPU machine cannot load, and torch one for each of torchao's enum types
# (a deprecation inside torchao). Nothing a user can act on: keep them off stderr.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)


def load(name_or_path, **kw):
    """(model, tokenizer): a built-in name, a Hugging Face directory, a .gguf file, or a
    directory written by :func:`save`."""
    from pathlib import Path

    from .quant.io import is_saved_model
    from .quant.io import load as load_packed

    if is_saved_model(name_or_path):
        model, tok = load_packed(name_or_path)
        if (Path(name_or_path) / "adapters").is_dir():  # written by `elastiq correct`
            from .cache import member
            from .lrec import load_adapters

            load_adapters(model, member(Path(name_or_path), "adapters"))  # a folder inside, not a link out
        return model, tok
    from .models import load as load_float

    return load_float(name_or_path, **kw)


def quantize(model, fmt_or_plan, act_format=None, progress: bool = True, embedding=None, method: str | None = None,
             tokenizer=None, calib_text: str | None = None, calibration=None):
    """Pack ``model``'s linear layers in place by a format or a plan; returns the model
    (its ``elastiq_report`` says what was quantized and what was kept). ``embedding`` (a
    format, or "same") packs the token embedding too, and an output head tied to it.
    ``method``: "rtn" (round to nearest, the default), "gptq", "search" (scale search) or
    "gptq+search", calibrated on ``calib_text`` (default: the built-in wiki-calib)
    tokenized by ``tokenizer``; ``calibration`` (:class:`elastiq.options.CalibOptions`)
    sets the rest. ``save`` records the method in the manifest.
    (``elastiq.formats.quantize`` is the one-tensor cast underneath: it returns packed bytes.)"""
    from .options import CalibOptions
    from .quant import quantize_model, with_embedding

    options = calibration if calibration is not None else CalibOptions(method="rtn")
    options = CalibOptions.of(options, method=method) if method is not None else options
    plan = with_embedding(model, fmt_or_plan, embedding)
    if options.method == "rtn":
        model.elastiq_report = quantize_model(model, plan, act_format=act_format, progress=progress)
        model.elastiq_calibration = {"method": "rtn"}
        return model
    from .calib import quantize_in_memory
    from .data import load_text

    if act_format is not None:
        raise ValueError("act_format is for round-to-nearest packing: calibrated methods do not take it")
    if tokenizer is None:
        raise ValueError(f"method {options.method} calibrates on a text: pass the model's tokenizer")
    name = "wiki-calib" if calib_text is None else None
    text = load_text("wiki-calib") if calib_text is None else calib_text
    model.elastiq_report = quantize_in_memory(model, plan, tokenizer, text, options, progress, text_name=name)
    return model


def perplexity(model, tokenizer, text: str, max_tokens=None, context: int = 1024, **kw) -> float:
    from .evaluate import perplexity as _perplexity

    return _perplexity(model, tokenizer, text, max_tokens=max_tokens, context=context, **kw)


def weight_bytes(model) -> int:
    from .quant import weight_bytes as _weight_bytes

    return _weight_bytes(model)


def save(model, directory, tokenizer=None, overwrite: bool = False):
    from .quant.io import save as _save

    return _save(model, directory, tokenizer=tokenizer, overwrite=overwrite)
