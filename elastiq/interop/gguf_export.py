"""Write a packed elastiq model, or one option of an elastic artifact, as a GGUF file for llama.cpp.

Each packed tensor goes out in the GGUF type that holds its values exactly (gguf_tensors),
float tensors as they are. Tensor names and the Q/K row order are those transformers
reads GGUF files with (and so elastiq.load): its HF-to-GGUF name map, and its un-permute
of llama.cpp's Q/K rows, inverted here. Hyperparameters come from the same table
transformers reads them with, reversed; the tokenizer from the model's own (gguf_vocab).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from elastiq.cache import atomic_file
from elastiq.errors import InputError
from elastiq.quant import LowRankAdded, QuantEmbedding, QuantLinear, replace_module, tied_heads
from elastiq.quant.linear import PackedWeight

from .gguf_tensors import GgufTensor, float_tensor, gguf_values, packed_tensor, permute_rows
from .gguf_vocab import write_tokenizer

ARCHITECTURES = ("llama", "qwen2")  # model types whose GGUF layout is the HF one, renamed (Gemma's norms are not)
KL_TOKENS = 2048


def check_config(config) -> None:
    if config.model_type not in ARCHITECTURES:
        raise InputError(f"GGUF export supports {', '.join(ARCHITECTURES)} models; this one is {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise InputError(f"GGUF export writes plain RoPE; this model scales it ({rope.get('rope_type')!r})")


def name_map(config) -> dict[str, str]:
    """{HF parameter name: GGUF tensor name}, from transformers' GGUF reader's own map."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    processor = TENSOR_PROCESSORS.get(config.model_type, TensorProcessor)(config=config.to_dict())
    return {hf: g for g, hf in get_gguf_hf_weights_map(skeleton, processor).items()}


def qk_row_order(config, gguf_name: str, rows: int) -> np.ndarray | None:
    """The HF rows in llama.cpp's order for a Llama Q or K projection (None for other
    tensors): transformers' un-permute applied to row numbers, then inverted."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS

    processor_class = TENSOR_PROCESSORS.get(config.model_type)
    if processor_class is None or not (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        return None
    processor = processor_class(config={"num_attention_heads": config.num_attention_heads,
                                        "num_key_value_heads": config.num_key_value_heads})
    hf_from_gguf = processor.process(np.arange(rows), gguf_name).weights  # hf row i = gguf row hf_from_gguf[i]
    return np.argsort(hf_from_gguf)


def metadata(writer, config) -> None:
    """Hyperparameters, by transformers' GGUF-to-config table read backwards."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    rope = getattr(config, "rope_parameters", None) or {}
    for key, attr in GGUF_CONFIG_MAPPING[config.model_type].items():
        value = getattr(config, attr, rope.get(attr)) if attr else None
        if value is None:
            continue
        full = f"{config.model_type}.{key}"
        if isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_uint32(full, int(value))


def model_tensors(model: nn.Module) -> dict[str, object]:
    """{HF parameter name: Packed or float tensor}: packed layers by their weight's name,
    an output head tied to the embedding left out (llama.cpp reuses token_embd)."""
    packed = {n: m for n, m in model.named_modules() if isinstance(m, PackedWeight)}
    for name, m in model.named_modules():
        if isinstance(m, LowRankAdded):
            raise InputError(f"{name} carries a low-rank correction, which a GGUF file has no place for: export "
                             "the model (or the artifact option) without adapters")
        if isinstance(m, QuantLinear) and m.act_format is not None:
            raise InputError(f"{name} rounds its input to {m.act_format.name}; llama.cpp has no activation formats")
        if isinstance(m, QuantEmbedding) and m.scale != 1.0:
            raise InputError(f"{name} scales its rows by {m.scale:g}, which GGUF export does not write")
    tied = set(tied_heads(model))
    config = model.config
    if getattr(config, "tie_word_embeddings", False):
        head = model.get_output_embeddings()
        tied |= {n for n, m in model.named_modules() if m is head}
    out: dict[str, object] = {}
    for key, value in model.state_dict(keep_vars=False).items():
        owner, _, part = key.rpartition(".")
        if owner in tied:
            continue
        if owner in packed:
            if part == "codes":
                out[f"{owner}.weight"] = packed[owner].packed()
            elif part == "bias":
                out[key] = value
            continue
        out[key] = value
    return out


class _WithReplacements:
    """``model`` with some modules replaced only while it runs: the exported weights next to
    the original, without a second copy of the model."""

    def __init__(self, model, replacements: dict[str, nn.Module]):
        self.model, self.replacements, self.config = model, replacements, model.config

    def eval(self):
        return self

    def __call__(self, ids):
        old = {n: self.model.get_submodule(n) for n in self.replacements}
        for n, m in self.replacements.items():
            replace_module(self.model, n, m)
        try:
            return self.model(ids)
        finally:
            for n, m in old.items():
                replace_module(self.model, n, m)


def fallback_kl(model, tokenizer, changed: dict[str, torch.Tensor], text: str | None, max_tokens: int) -> dict:
    """KL from the elastiq model to the one with the changed modules' exported values, on
    ``text`` (the built-in wiki-eval when None)."""
    from elastiq.data import load_text
    from elastiq.evaluate import evaluate

    replacements: dict[str, nn.Module] = {}
    ties = tied_heads(model)
    for name, w in changed.items():
        old = model.get_submodule(name)
        dtype = old.weight_dtype
        if isinstance(old, QuantEmbedding):
            replacements[name] = nn.Embedding.from_pretrained(w.to(dtype), freeze=True, padding_idx=old.padding_idx)
            for head, emb in ties.items():
                if emb == name:
                    replacements[head] = _linear(replacements[name].weight, None)
        else:
            replacements[name] = _linear(nn.Parameter(w.to(dtype), requires_grad=False), old.bias)
    ev = evaluate(_WithReplacements(model, replacements), tokenizer, text or load_text("wiki-eval"), reference=model,
                  max_tokens=max_tokens, context=min(1024, max_tokens), progress=False)
    return {"kl": ev.kl, "tokens": ev.tokens, "text": "wiki-eval" if text is None else "given"}


def _linear(weight: nn.Parameter, bias) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = weight
    if bias is not None:
        layer.bias = bias
    return layer


def export_model(model, tokenizer, out, *, fallback: str | None = None, tokenizer_pre: str | None = None,
                 kl_text: str | None = None, kl_tokens: int = KL_TOKENS, name: str | None = None,
                 overwrite: bool = False) -> dict:
    """Write ``model`` (packed by elastiq, or float) and its tokenizer to the GGUF file
    ``out``; returns a report: the file, its tensors by type, and with a ``fallback``, the
    tensors it changed and the KL divergence that cost."""
    import gguf

    out = Path(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    if tokenizer is None:
        raise InputError("GGUF export needs the model's tokenizer: llama.cpp reads it from the file")
    config = model.config
    check_config(config)
    names = name_map(config)
    tensors: dict[str, tuple[GgufTensor, tuple]] = {}
    changed_values: dict[str, torch.Tensor] = {}
    changed = []
    for hf_name, source in model_tensors(model).items():
        gguf_name = names.get(hf_name)
        if gguf_name is None:
            raise InputError(f"{hf_name} has no GGUF name in a {config.model_type} model")
        if isinstance(source, torch.Tensor):
            t, shape = float_tensor(source), tuple(source.shape)
        else:
            t, shape = packed_tensor(source, fallback, hf_name), tuple(source.shape)
            if not t.exact:
                module = hf_name.removesuffix(".weight")
                changed_values[module] = gguf_values(t, shape)
                changed.append({"tensor": gguf_name, "module": module, "format": source.fmt.name, "type": t.type_name})
        order = qk_row_order(config, gguf_name, shape[0])
        tensors[gguf_name] = (t if order is None else permute_rows(t, order), shape)
    vocab = int(config.vocab_size)
    with atomic_file(out) as tmp:
        writer = gguf.GGUFWriter(tmp, config.model_type)
        writer.add_name(name or out.stem)
        metadata(writer, config)
        pre = write_tokenizer(writer, tokenizer, vocab, tokenizer_pre)
        for gguf_name, (t, shape) in tensors.items():
            kind = gguf.GGMLQuantizationType[t.type_name]
            raw = None if t.data.dtype in (np.float32, np.float16) else kind
            writer.add_tensor(gguf_name, t.data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    types: dict[str, int] = {}
    for t, _ in tensors.values():
        types[t.type_name] = types.get(t.type_name, 0) + 1
    report = {"out": str(out), "bytes": out.stat().st_size, "tensors": len(tensors), "types": types,
              "tokenizer_pre": pre, "fallback": fallback, "changed": changed, "kl": None}
    if changed:
        report.update(fallback_kl(model, tokenizer, changed_values, kl_text, kl_tokens))
    return report


def export_path(source, out, *, option: int | None = None, **kw) -> dict:
    """Export a model elastiq loads (a saved packed model, a Hugging Face directory, a .gguf
    file, a built-in name) or, for an elastic artifact, its ``option`` (default: the largest)."""
    from elastiq.elastic.artifact import is_artifact

    if is_artifact(source):
        from elastiq.elastic.host import ElasticModel

        host = ElasticModel(source)
        choice = host.options[0] if option is None else option
        host.swap(choice)
        report = export_model(host.model, host.tokenizer, out, name=kw.pop("name", None) or f"{Path(source).name}-option{choice}", **kw)
        return {**report, "option": choice, "option_bytes": int(host.sizes[choice])}
    if option is not None:
        raise InputError(f"--option picks an option of an elastic artifact; {os.fspath(source)} is not one")
    import elastiq

    model, tokenizer = elastiq.load(source)
    return export_model(model, tokenizer, out, **kw)
