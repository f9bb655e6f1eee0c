"""QuantLinear: a linear layer whose weight is held packed in a number format.

The packed codes, scales and selectors are buffers (real bytes: they move with
``.to()`` and appear in ``state_dict``); the float weight exists only for the duration
of a forward pass.

Where the product runs is the layer's ``kernel_path``, one of ``KERNEL_PATHS``:

* ``"native"``  the C kernels (``kernels.py``): up to ``kernels.max_rows()`` input rows
  multiplied straight from the packed codes, more rows decoded by the kernel and handed
  to BLAS; a layer they cannot serve (format, device, no compiler) raises.
* ``"torch"``   decode with ``formats.dequantize``, then ``torch.nn.functional.linear``.
* ``"auto"``    (default) native where the kernels can serve the layer and no gradient
  to the input is wanted (the product from codes has no backward), torch otherwise.

All three give the same values up to the order of summation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import nn

from elastiq import formats as F

from . import kernels


KERNEL_PATHS = ("auto", "native", "torch")


def check_kernel_path(path: str) -> str:
    if path not in KERNEL_PATHS:
        raise ValueError(f"kernel path must be one of {', '.join(KERNEL_PATHS)}, got {path!r}")
    return path


class PackedWeight(nn.Module):
    """A module holding one packed 2-D weight as buffers, and the kernel view of it."""

    def __init__(self, packed: F.Packed, what: str, kernel_path: str = "auto"):
        super().__init__()
        self.kernel_path = check_kernel_path(kernel_path)
        if len(packed.shape) != 2:
            raise ValueError(f"{what} is 2-D, got shape {packed.shape}")
        packed.validate()
        self.fmt = packed.fmt
        self.weight_shape = tuple(packed.shape)
        self.weight_dtype = packed.dtype
        self.register_buffer("codes", packed.codes)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("selectors", packed.selectors)
        self.register_buffer("tensor_scale", packed.tensor_scale)
        self._kernel = None  # kernels.KernelWeight, rebuilt when the buffers move

    def packed(self) -> F.Packed:
        return F.Packed(self.fmt, self.weight_shape, self.weight_dtype,
                        self.codes, self.scales, self.selectors, self.tensor_scale)

    @property
    def qweight(self) -> torch.Tensor:
        """The packed codes, under the name by which peft (as for GPTQ layers) finds a
        quantized layer's device."""
        return self.codes

    def kernel(self):
        """The native kernels' view of the weight; None on the torch path, or on the auto
        path where they cannot serve it. On the native path that case raises."""
        if self.kernel_path == "torch":
            return None
        self._kernel = kernels.kernel_for(self.packed(), self._kernel)
        if self._kernel is None and self.kernel_path == "native":
            raise RuntimeError(f"the native kernels cannot serve this {self.fmt.name} weight of shape {self.weight_shape} "
                               f"on {self.codes.device} ({kernels.why_not(self.packed())}): use kernel_path 'auto' or 'torch'")
        return self._kernel

    def weight(self) -> torch.Tensor:
        """The decoded float weight (computed on each call, by the native kernel where it can)."""
        kernel = self.kernel()
        if kernel is None:
            return F.dequantize(self.packed())
        return kernel.rows().to(self.weight_dtype)


class QuantLinear(PackedWeight):
    def __init__(self, packed: F.Packed, bias: torch.Tensor | None = None, act_format: F.Format | str | None = None,
                 kernel_path: str = "auto"):
        super().__init__(packed, "a linear weight (out, in)", kernel_path)
        self.out_features, self.in_features = packed.shape
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.act_format = F.resolve(act_format) if act_format is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt, act_format=None, kernel_path: str = "auto") -> "QuantLinear":
        return cls(F.quantize(linear.weight.detach(), fmt), linear.bias, act_format, kernel_path)

    @property
    def nbytes(self) -> int:
        return self.packed().nbytes + (self.bias.numel() * self.bias.element_size() if self.bias is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_format is not None:
            x = F.fake_quantize(x, self.act_format)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        wants_grad = torch.is_grad_enabled() and x.requires_grad
        kernel = None if self.kernel_path == "auto" and wants_grad else self.kernel()
        if kernel is None:
            return Fn.linear(x, self.weight().to(x.dtype), bias)
        rows = x.reshape(-1, self.in_features).float()
        if rows.shape[0] <= kernels.max_rows() and not wants_grad:  # decoding: multiply from the packed codes
            y = kernel.matmul_t(rows)
            y = (y if bias is None else y + bias).to(x.dtype)
        else:  # prefill: decode once (fast), then BLAS does the heavy product
            y = Fn.linear(rows.to(x.dtype), kernel.rows().to(x.dtype), bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        act = f", act={self.act_format.name}" if self.act_format is not None else ""
        path = f", kernel_path={self.kernel_path}" if self.kernel_path != "auto" else ""
        return f"in={self.in_features}, out={self.out_features}, format={self.fmt.name}{act}{path}, bytes={self.packed().nbytes}"
