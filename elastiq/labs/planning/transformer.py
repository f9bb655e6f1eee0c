"""A transformer as the performance and carbon models see it: shapes, parameter and FLOP counts.

Counts follow Megatron-LM's GPT accounting (Narayanan et al. 2021, Korthikanti et al. 2022):
per token and layer the forward pass costs 2 FLOPs per matrix weight plus the attention score
term 4*s*h (Q.K^T and P.V over the full sequence, as Megatron counts it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Transformer:
    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int = 0          # 0 = same as heads (multi-head attention)
    seq: int = 2048            # default sequence length for tasks that do not set one
    vocab: int = 51200
    gated_mlp: bool = False    # SwiGLU-style MLP: three ffn matrices instead of two
    tied_embeddings: bool = True
    source: str = ""

    def __post_init__(self):
        for k in ("layers", "hidden", "ffn", "heads", "seq", "vocab"):
            v = getattr(self, k)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"model {self.name}: {k} must be a positive integer, got {v!r}")
        if self.kv_heads < 0:
            raise ValueError(f"model {self.name}: kv_heads must not be negative, got {self.kv_heads}")
        if self.hidden % self.heads:
            raise ValueError(f"model {self.name}: hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.heads % self.kv:
            raise ValueError(f"model {self.name}: heads {self.heads} is not a multiple of kv_heads {self.kv}")

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    # ---- parameters -------------------------------------------------------------
    @property
    def attn_params(self) -> int:
        h, d = self.hidden, self.head_dim
        return h * h + 2 * h * self.kv * d + h * h       # Q, K and V, output

    @property
    def mlp_params(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * self.ffn

    @property
    def layer_params(self) -> int:
        """Matrix weights plus the two norms' weights and biases of one layer."""
        return self.attn_params + self.mlp_params + 4 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embedding_params

    # ---- FLOPs ------------------------------------------------------------------
    def layer_flops_per_token(self, seq: int | None = None) -> float:
        """Forward FLOPs of one layer for one token at context ``seq``."""
        s = seq or self.seq
        return 2 * (self.attn_params + self.mlp_params) + 4 * s * self.hidden

    def logits_flops_per_token(self) -> float:
        return 2 * self.hidden * self.vocab

    def forward_flops(self, tokens: int, seq: int | None = None) -> float:
        return tokens * (self.layers * self.layer_flops_per_token(seq) + self.logits_flops_per_token())

    def training_flops(self, tokens: int, seq: int | None = None) -> float:
        """Model FLOPs of one training step (forward + backward = 3x forward), without recompute."""
        return 3 * self.forward_flops(tokens, seq)

    def kv_bytes_per_token(self, bytes_per_elem: float = 2.0) -> float:
        return 2 * self.layers * self.kv * self.head_dim * bytes_per_elem

    def with_(self, **kw) -> "Transformer":
        return replace(self, **kw)


def _gpt(name, layers, hidden, heads, src, vocab=51200, seq=2048):
    return Transformer(name, layers, hidden, 4 * hidden, heads, seq=seq, vocab=vocab, source=src)


_KORTHIKANTI = "Korthikanti et al. 2022 (arXiv 2205.05198) Table 3; vocabulary 51200 (GPT-2 BPE padded)"
PRESETS: dict[str, Transformer] = {m.name: m for m in [
    _gpt("megatron-22b", 48, 6144, 64, _KORTHIKANTI),
    _gpt("gpt3-175b", 96, 12288, 96, _KORTHIKANTI + "; Brown et al. 2020"),
    _gpt("turing-530b", 105, 20480, 128, _KORTHIKANTI + "; Smith et al. 2022"),
    _gpt("megatron-1t", 128, 25600, 160, _KORTHIKANTI + "; Narayanan et al. 2021"),
    Transformer("llama-2-7b", 32, 4096, 11008, 32, seq=4096, vocab=32000, gated_mlp=True, tied_embeddings=False,
                source="meta-llama/Llama-2-7b-hf config.json"),
    Transformer("llama-2-70b", 80, 8192, 28672, 64, kv_heads=8, seq=4096, vocab=32000, gated_mlp=True,
                tied_embeddings=False, source="meta-llama/Llama-2-70b-hf config.json"),
    Transformer("llama-3-8b", 32, 4096, 14336, 32, kv_heads=8, seq=8192, vocab=128256, gated_mlp=True,
                tied_embeddings=False, source="meta-llama/Meta-Llama-3-8B config.json"),
    Transformer("smollm2-135m", 30, 576, 1536, 9, kv_heads=3, seq=2048, vocab=49152, gated_mlp=True,
                source="HuggingFaceTB/SmolLM2-135M config.json (elastiq's built-in model)"),
]}


def names() -> list[str]:
    return list(PRESETS)


def get(name) -> Transformer:
    """A preset, a Transformer, a Hugging Face config.json, or a directory holding one."""
    if isinstance(name, Transformer):
        return name
    key = str(name).strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    p = Path(str(name))
    if p.is_dir() and (p / "config.json").is_file():
        p = p / "config.json"
    if p.is_file():
        return from_hf_config(json.loads(p.read_text()), name=p.parent.name if p.name == "config.json" else p.stem)
    raise ValueError(f"unknown model {name!r}; presets: {', '.join(PRESETS)} (or a Hugging Face config.json / model directory)")


def from_hf_config(cfg: dict, name: str = "hf-model") -> Transformer:
    """Read the shapes of a decoder-only model from a Hugging Face ``config.json`` dict."""
    cfg = cfg.get("text_config", cfg)   # multimodal wrappers keep the language model inside

    def pick(*keys, default=None):
        for k in keys:
            if cfg.get(k) is not None:
                return cfg[k]
        if default is None:
            raise ValueError(f"config of {name} has none of {keys}; cannot read the model's shape")
        return default

    hidden = pick("hidden_size", "n_embd", "d_model")
    heads = pick("num_attention_heads", "n_head", "num_heads")
    mt = str(cfg.get("model_type", ""))
    gated = mt in {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "mixtral", "olmo", "olmo2", "granite"} \
        or str(cfg.get("hidden_act", cfg.get("activation_function", ""))) in {"silu", "swiglu"}
    return Transformer(
        name=name, layers=pick("num_hidden_layers", "n_layer", "num_layers"), hidden=hidden,
        ffn=pick("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden) or 4 * hidden, heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads,
        seq=min(pick("max_position_embeddings", "n_positions", "n_ctx", default=2048), 1 << 20),
        vocab=pick("vocab_size"), gated_mlp=gated, tied_embeddings=bool(cfg.get("tie_word_embeddings", not gated)),
        source="Hugging Face config.json")
