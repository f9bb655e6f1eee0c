"""LowRankAdded: a frozen layer plus a low-rank correction, ``base(x) + s · x Aᵀ Bᵀ``.

The inference side of a LoRA adapter: elastic hosting serves trained adapters as one
more option with it, and elastiq.lrec's trainable LoRALinear builds on it.
"""
from __future__ import annotations

import torch
from torch import nn


def low_rank_correction(x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """``s · x Aᵀ Bᵀ``, in the input's dtype (A and B may be stored narrower)."""
    return scaling * ((x @ lora_A.to(x.dtype).T) @ lora_B.to(x.dtype).T)


class LowRankAdded(nn.Module):
    def __init__(self, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float):
        super().__init__()
        out_features, in_features = base.out_features, base.in_features
        if lora_A.dim() != 2 or lora_B.dim() != 2 or lora_A.shape[1] != in_features or \
                lora_B.shape[0] != out_features or lora_A.shape[0] != lora_B.shape[1]:
            raise ValueError(f"a low-rank correction of a {out_features}x{in_features} layer needs A (r, {in_features}) "
                             f"and B ({out_features}, r), got A {tuple(lora_A.shape)} and B {tuple(lora_B.shape)}")
        self.base = base
        self.in_features, self.out_features = in_features, out_features
        self.rank = lora_A.shape[0]
        self.scaling = float(scaling)
        self.register_buffer("lora_A", lora_A)
        self.register_buffer("lora_B", lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + low_rank_correction(x, self.lora_A, self.lora_B, self.scaling)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, dtype={str(self.lora_A.dtype).removeprefix('torch.')}"
