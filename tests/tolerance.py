"""Comparisons that hold on any x86-64 CPU.

A float32 result differs between machines (AVX2 or AVX-512 kernels, thread counts) by
rounding, and rounding error is proportional to the magnitude of the terms that were
added, not to the result: a KL of 2e-4 that is the difference of terms near 5 carries
an error near 5 x 1e-7. So every tolerance here is ``tol x scale``, with ``scale`` the
magnitude of those terms (or, for a tensor, its largest element), never a relative
tolerance on the result itself.
"""
from __future__ import annotations

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 1.19e-7


def term_magnitude(*terms) -> torch.Tensor:
    """sum |term| (float64), broadcast: the scale of the rounding error of ``sum(terms)``."""
    out = torch.zeros((), dtype=torch.float64)
    for t in terms:
        out = out + torch.as_tensor(t).detach().double().abs()
    return out


def linear_scale(x, weight, bias=None) -> torch.Tensor:
    """|x| @ |W|^T + |b|: the magnitude of the terms of each output of a linear layer."""
    out = x.detach().double().abs() @ weight.detach().double().abs().T
    return out if bias is None else out + bias.detach().double().abs()


def assert_close(actual, expected, scale=None, tol: float = 1e-5, what: str = "") -> None:
    """|actual - expected| <= tol * scale everywhere. ``scale`` (a number or a tensor that
    broadcasts) is the magnitude of the terms behind ``expected``; by default the largest
    element of ``expected`` (for tensors whose elements share one scale)."""
    a = torch.as_tensor(actual).detach().double()
    e = torch.as_tensor(expected).detach().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    s = e.abs().max() if scale is None else torch.as_tensor(scale).detach().double()
    err = (a - e).abs()
    bound = tol * s
    worst = int((err - bound).flatten().argmax()) if err.numel() else 0
    assert bool((err <= bound).all()), (
        f"{what}: error {float(err.flatten()[worst]):.3e} > {tol:g} x term magnitude "
        f"{float(torch.broadcast_to(s, err.shape).flatten()[worst]):.3e}")


def within_rounding(deviation: float, eps: float, scale: float, low: float, high: float) -> bool:
    """A measured rounding deviation lies in [low, high] units of ``eps x scale`` (``eps``:
    the precision's machine epsilon, ``scale``: the magnitude of the values compared):
    a two-sided band that means the same on every CPU."""
    unit = eps * scale
    return low * unit <= deviation <= high * unit
