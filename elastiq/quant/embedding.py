"""QuantEmbedding: a token embedding held packed in a number format.

A lookup decodes only the rows it needs. When the output head is tied to the
embedding (as in SmolLM2 and most small models), the head becomes a QuantLinear
that shares these very buffers: one packed copy serves both. Embeddings that scale
their rows (Gemma's sqrt(hidden size)) keep that scale; the tied head does not take it.
"""
from __future__ import annotations

import torch
from torch import nn

from elastiq import formats as F

from .linear import PackedWeight, QuantLinear


class QuantEmbedding(PackedWeight):
    def __init__(self, packed: F.Packed, padding_idx: int | None = None, scale: float = 1.0):
        if len(packed.shape) == 2 and packed.fmt.axis % 2 != 1:
            raise ValueError(f"format {packed.fmt.name} blocks along axis {packed.fmt.axis}: an embedding needs "
                             "blocks along its rows (axis -1) so a lookup decodes whole rows")
        super().__init__(packed, "an embedding (vocabulary, dim)")
        self.num_embeddings, self.embedding_dim = packed.shape
        self.padding_idx = padding_idx
        self.scale = float(scale)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, fmt) -> "QuantEmbedding":
        return cls(F.quantize(emb.weight.detach(), fmt), emb.padding_idx, row_scale(emb))

    def tied_head(self) -> QuantLinear:
        """An output head (logits = hidden @ embedding^T) sharing this module's packed buffers."""
        return QuantLinear(self.packed())

    @property
    def nbytes(self) -> int:
        return self.packed().nbytes

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"token ids must be an integer tensor, got {ids.dtype}")
        flat = ids.reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"token id out of range: the vocabulary has {self.num_embeddings} entries, got ids "
                             f"{int(flat.min())}..{int(flat.max())}")
        kernel = self.kernel()
        if kernel is not None:
            rows = kernel.rows(flat)
        else:  # no native kernels: decode the whole table, keep the rows asked for
            rows = F.dequantize(self.packed(), torch.float32).index_select(0, flat.long())
        rows = rows.to(self.weight_dtype)
        if self.scale != 1.0:  # as transformers' scaled embeddings do: the scale in the weight's dtype
            rows = rows * torch.tensor(self.scale, dtype=self.weight_dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        scale = f", scale={self.scale:g}" if self.scale != 1.0 else ""
        return f"{self.num_embeddings}, {self.embedding_dim}, format={self.fmt.name}{scale}, bytes={self.nbytes}"


def row_scale(emb: nn.Module) -> float:
    """The factor an embedding module multiplies its rows by (transformers' scaled
    embeddings, e.g. Gemma's), 1 for a plain nn.Embedding."""
    return float(getattr(emb, "scalar_embed_scale", 1.0))
