"""LoRA adapters on packed layers, trained without a float copy of the base (EMEF).

Our own small adapter rather than peft's: peft's LoRA wraps nn.Linear and a fixed list
of quantized layer classes (bitsandbytes, GPTQ, AWQ, torchao, ...); wrapping
``QuantLinear`` would mean writing a peft layer class anyway, and the backward pass
through packed codes below is the part that matters.

The backward pass through a packed layer needs only the gradient with respect to its
input, ``grad_y @ W``. ``W`` is decoded from the packed codes inside the backward pass
and dropped right after: autograd never holds a float copy of any base weight.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from elastiq.quant import QuantLinear
from elastiq.quant.lowrank import low_rank_correction


DECODE_BLOCK = 1 << 20  # weights decoded at once in a packed layer's backward (4 MiB of float32; 16 MiB blocks
# of the 49,152-word head set LREC's peak memory, docs/lrec.md)


def _decoded_rows(base: QuantLinear, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of the decoded weight (the native kernel decodes just those rows)."""
    kernel = base.kernel()
    if kernel is None:
        return base.weight()[start:stop]
    return kernel.rows(torch.arange(start, stop)).to(base.weight_dtype)


def _row_blocks(base: QuantLinear):
    step = max(1, DECODE_BLOCK // base.in_features)
    return [(a, min(a + step, base.out_features)) for a in range(0, base.out_features, step)]


class _PackedMatmul(torch.autograd.Function):
    """y = base(x) with grad_x = grad_y @ W, W decoded in backward (not saved). A large
    weight (an output head over the vocabulary) is decoded a block of rows at a time, in
    both directions, so no full float copy of it exists even for a moment."""

    @staticmethod
    def forward(ctx, x, base: QuantLinear):
        ctx.base = base
        blocks = _row_blocks(base)
        with torch.no_grad():
            if len(blocks) == 1:
                return base(x)
            y = x.new_empty(*x.shape[:-1], base.out_features)
            for a, b in blocks:
                y[..., a:b] = x @ _decoded_rows(base, a, b).to(x.dtype).T
            if base.bias is not None:
                y += base.bias.to(x.dtype)
            return y

    @staticmethod
    def backward(ctx, grad_y):
        base = ctx.base
        blocks = _row_blocks(base)
        if len(blocks) == 1:
            return grad_y @ base.weight().to(grad_y.dtype), None
        grad_x = None
        for a, b in blocks:
            part = grad_y[..., a:b] @ _decoded_rows(base, a, b).to(grad_y.dtype)
            grad_x = part if grad_x is None else grad_x.add_(part)
        return grad_x, None


def packed_linear(base: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """``base(x)``, differentiable in ``x`` without keeping a decoded copy of the weight."""
    return _PackedMatmul.apply(x, base) if torch.is_grad_enabled() else base(x)


ADAPTER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def adapter_dtype(dtype, what: str = "adapter dtype") -> torch.dtype:
    """torch dtype of adapter weights (or optimizer state) from a name or a dtype; refuses anything else."""
    if isinstance(dtype, torch.dtype) and dtype in ADAPTER_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in ADAPTER_DTYPES:
        return ADAPTER_DTYPES[dtype]
    raise ValueError(f"{what} must be one of {', '.join(ADAPTER_DTYPES)}, got {dtype!r}")


def dtype_name(dtype: torch.dtype) -> str:
    return next(n for n, d in ADAPTER_DTYPES.items() if d == dtype)


class LoRALinear(nn.Module):
    """``base(x) + scaling * x A^T B^T`` over a frozen, packed ``QuantLinear`` (or, for
    plain LoRA as a baseline, a frozen float ``nn.Linear``)."""

    def __init__(self, base: QuantLinear | nn.Linear, rank: int, alpha: float | None = None, dtype="float32"):
        super().__init__()
        if not isinstance(base, (QuantLinear, nn.Linear)):
            raise TypeError(f"LoRA adapters go on QuantLinear (or nn.Linear) layers, got {type(base).__name__}")
        if not isinstance(rank, int) or rank < 1 or rank > min(base.in_features, base.out_features):
            raise ValueError(f"rank must be an integer from 1 to {min(base.in_features, base.out_features)} for a "
                             f"{base.out_features}x{base.in_features} layer, got {rank!r}")
        self.base = base
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.scaling = self.alpha / rank
        dtype = adapter_dtype(dtype)
        a = torch.empty(rank, base.in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # the standard LoRA start: B = 0, so no change yet
        self.lora_A = nn.Parameter(a.to(dtype))  # stored (and saved) in dtype; products run in the input's dtype
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=dtype))

    def init_from_error(self, float_weight: torch.Tensor) -> float:
        """LoftQ-style start: B A * scaling = the best rank-r approximation of (W - decoded W_q).
        Returns the share of the error's energy that the adapter captures."""
        if not isinstance(self.base, QuantLinear):
            raise TypeError("only an adapter on a packed layer has a quantization error to start from")
        err = float_weight.detach().double() - self.base.weight().double()
        u, s, vh = torch.linalg.svd(err, full_matrices=False)
        r = self.rank
        root = s[:r].sqrt() / math.sqrt(self.scaling)
        with torch.no_grad():
            self.lora_B.copy_(u[:, :r] * root)
            self.lora_A.copy_(root[:, None] * vh[:r])
        total = float((s * s).sum())
        return float((s[:r] * s[:r]).sum()) / total if total > 0 else 1.0

    def delta(self) -> torch.Tensor:
        """The adapter's weight update, scaling * B A (out x in)."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    @property
    def adapter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in (self.lora_A, self.lora_B))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = packed_linear(self.base, x) if isinstance(self.base, QuantLinear) else self.base(x)
        return y + low_rank_correction(x, self.lora_A, self.lora_B, self.scaling)

    def extra_repr(self) -> str:
        fmt = self.base.fmt.name if isinstance(self.base, QuantLinear) else "float"
        return f"rank={self.rank}, alpha={self.alpha:g}, dtype={dtype_name(self.lora_A.dtype)}, base={fmt}"


def add_adapters(model: nn.Module, rank: int, alpha: float | None = None, init: str | None = None,
                 float_model: nn.Module | None = None, patterns=("*",), dtype="float32") -> dict[str, LoRALinear]:
    """Wrap every packed linear layer of ``model`` whose name matches ``patterns`` in a
    LoRALinear (``dtype`` weights: float32, or bfloat16 for half the bytes); freeze
    everything else. An output head tied to a packed embedding gets none (it is the
    embedding). ``init="svd"`` starts each adapter from the SVD of its layer's
    quantization error, which needs ``float_model`` (same architecture, float weights);
    it is the default when ``float_model`` is given, ``"zero"`` otherwise.
    Returns {name: adapter}."""
    from fnmatch import fnmatchcase

    from elastiq.quant.model import replace_module, tied_heads

    adapter_dtype(dtype)
    if init is None:  # LrecOptions' default (svd) where it can be had: it needs the float weights
        init = "svd" if float_model is not None else "zero"

    if init not in ("zero", "svd"):
        raise ValueError(f"init must be 'zero' or 'svd', got {init!r}")
    if init == "svd" and float_model is None:
        raise ValueError("init='svd' needs the float model (the adapters start from W - decoded W_q)")
    heads = tied_heads(model)
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, QuantLinear) and n not in heads and any(fnmatchcase(n, p) for p in patterns)]
    if not targets:
        raise ValueError("the model has no packed linear layers to put adapters on: quantize it first")
    for p in model.parameters():
        p.requires_grad_(False)
    floats = dict(float_model.named_modules()) if float_model is not None else {}
    adapters = {}
    for name, base in targets:
        lora = LoRALinear(base, rank, alpha, dtype)
        if init == "svd":
            ref = floats.get(name)
            if not isinstance(ref, nn.Linear) or tuple(ref.weight.shape) != (base.out_features, base.in_features):
                raise ValueError(f"the float model has no linear layer {name} of shape "
                                 f"{(base.out_features, base.in_features)}: is it the model that was quantized?")
            lora.init_from_error(ref.weight)
        replace_module(model, name, lora)
        adapters[name] = lora
    return adapters


def adapters_of(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merged_weight(lora: LoRALinear) -> torch.Tensor:
    """The float weight the adapted layer computes with: decoded W_q + scaling * B A."""
    w = lora.base.weight() if isinstance(lora.base, QuantLinear) else lora.base.weight.detach()
    return w.float() + lora.delta().detach()


def effective_bits(model: nn.Module) -> dict:
    """Bits per base weight of the packed linear layers, without and with their adapters
    (the "INT2.1" figure)."""
    from elastiq.quant.model import tied_heads

    loras = adapters_of(model)
    heads = tied_heads(model)  # their bytes are the packed embedding's
    packed = [m for n, m in model.named_modules() if isinstance(m, QuantLinear) and n not in heads]
    weights = sum(m.in_features * m.out_features for m in packed)
    base_bytes = sum(m.packed().nbytes for m in packed)
    extra = sum(lo.adapter_bytes for lo in loras.values())
    if not weights:
        raise ValueError("the model has no packed linear layers")
    return {"weights": weights, "base_bytes": base_bytes, "adapter_bytes": extra,
            "bits_per_weight": 8 * base_bytes / weights, "bits_per_weight_with_adapters": 8 * (base_bytes + extra) / weights,
            "adapter_share_of_packed_linears": extra / base_bytes}


__all__ = ["LoRALinear", "add_adapters", "packed_linear", "adapters_of", "effective_bits", "merged_weight"]
