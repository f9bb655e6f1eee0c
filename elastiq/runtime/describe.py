"""What the native runtime needs to know of a model, written beside its weights.

Build side only (it imports torch, transformers and elastiq.formats); the runtime reads
what it writes without them:

    native.json          sizes, family switches, each layer's attention window and
                         rotary table, the formats in use, end-of-sequence ids
    native.safetensors   each format's element values and scale decoding (the very
                         tables the packed-weight kernels use), the rotary frequencies
"""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np

from .native import SPEC_VERSION, NativeError

SPEC = "native.json"
TABLES = "native.safetensors"
# model_type -> (module of transformers.models, rotary class, Gemma-style)
FAMILIES = {"llama": ("llama", "LlamaRotaryEmbedding", False), "qwen2": ("qwen2", "Qwen2RotaryEmbedding", False),
            "gemma2": ("gemma2", "Gemma2RotaryEmbedding", True), "gemma3_text": ("gemma3", "Gemma3RotaryEmbedding", True)}


def supported(config) -> bool:
    return getattr(config, "model_type", None) in FAMILIES and not getattr(config, "use_bidirectional_attention", False)


def _rope_tables(config) -> tuple[dict[str, tuple[np.ndarray, float]], list[str]]:
    """{rope name: (inv_freq, attention scaling)} and each layer's rope name, computed by
    the model's own rotary class (every scaling type transformers knows)."""
    package, cls_name, _ = FAMILIES[config.model_type]
    cls = getattr(importlib.import_module(f"transformers.models.{package}.modeling_{package}"), cls_name)
    rotary = cls(config)
    if config.model_type == "gemma3_text":
        names = list(config.layer_types)
        return ({t: (getattr(rotary, f"{t}_inv_freq").float().numpy(), float(getattr(rotary, f"{t}_attention_scaling")))
                 for t in sorted(set(names))}, names)
    return {"default": (rotary.inv_freq.float().numpy(), float(rotary.attention_scaling))}, ["default"] * config.num_hidden_layers


def format_tables(fmt) -> tuple[dict, np.ndarray, np.ndarray]:
    """(geometry, element values, scale values) of one format, as the kernels decode it."""
    import torch

    from elastiq import formats as F

    elements = torch.cat([F.value_table(g, "cpu") for g in fmt.grids]).float().numpy()
    if fmt.scale.bits >= 32:
        scales = np.zeros(1, np.float32)
    else:
        scales = F.scale_values(torch.arange(1 << fmt.scale.bits, dtype=torch.int32), fmt, None).float().numpy()
    info = {"bits": fmt.element_bits, "block": fmt.block or 0, "scale_bits": fmt.scale.bits,
            "sel_bits": fmt.selector_bits, "tensor_scale": bool(fmt.tensor_scale), "axis": fmt.axis}
    return info, elements, scales


def describe(config, formats=(), generation_config=None) -> tuple[dict, dict[str, np.ndarray]]:
    """(spec, tables) for a model of ``config`` holding weights in ``formats``."""
    from elastiq import formats as F

    if not supported(config):
        raise NativeError(f"the native runtime does not run {getattr(config, 'model_type', '?')} models "
                          f"(it runs {', '.join(FAMILIES)}); use --engine torch")
    gemma = FAMILIES[config.model_type][2]
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    ropes, layer_ropes = _rope_tables(config)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    window = getattr(config, "sliding_window", None) or 0
    eos = set()
    for src in (config, generation_config):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        eos.update([e] if isinstance(e, int) else list(e or []))
    spec = {
        "native": SPEC_VERSION, "family": config.model_type, "prefix": "model.", "embed": "model.embed_tokens",
        "head": "lm_head", "final_norm": "model.norm", "tied": bool(getattr(config, "tie_word_embeddings", False)),
        "n_layers": config.num_hidden_layers, "dim": config.hidden_size, "n_heads": n_heads,
        "n_kv": getattr(config, "num_key_value_heads", None) or n_heads, "head_dim": head_dim,
        "ffn": config.intermediate_size, "vocab": config.vocab_size, "max_ctx": config.max_position_embeddings,
        "act": getattr(config, "hidden_activation", None) or config.hidden_act if gemma else config.hidden_act,
        "eps": float(config.rms_norm_eps), "norm_offset": int(gemma), "sandwich": gemma,
        "qk_norm": config.model_type == "gemma3_text",
        "embed_scale": float(np.float32(math.sqrt(config.hidden_size))) if gemma else 1.0,
        "attn_scale": float(config.query_pre_attn_scalar ** -0.5) if gemma else float(head_dim ** -0.5),
        "attn_softcap": float(getattr(config, "attn_logit_softcapping", None) or 0.0),
        "final_softcap": float(getattr(config, "final_logit_softcapping", None) or 0.0),
        "layers": [{"rope": r, "window": int(window) if t == "sliding_attention" else 0}
                   for r, t in zip(layer_ropes, layer_types)],
        "rope": {name: {"scale": scale} for name, (_, scale) in ropes.items()},
        "eos_token_ids": sorted(int(e) for e in eos),
        "bos_token_id": getattr(config, "bos_token_id", None),
        "formats": {},
    }
    tables = {f"rope.{name}.inv_freq": inv for name, (inv, _) in ropes.items()}
    for i, fmt in enumerate(dict.fromkeys(F.resolve(f) for f in formats)):
        info, elements, scales = format_tables(fmt)
        spec["formats"][F.spec(fmt)] = info
        tables[f"format.{i}.elements"], tables[f"format.{i}.scales"] = elements, scales
    return spec, tables


def write(directory, config, formats=(), generation_config=None) -> bool:
    """Write native.json and native.safetensors into ``directory`` (a save in progress);
    False, writing nothing, for a model the runtime does not run."""
    from safetensors.numpy import save_file

    if not supported(config):
        return False
    spec, tables = describe(config, formats, generation_config)
    directory = Path(directory)
    save_file({k: np.ascontiguousarray(v) for k, v in tables.items()}, str(directory / TABLES))
    (directory / SPEC).write_text(json.dumps(spec, indent=1))
    return True
