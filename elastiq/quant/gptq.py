"""GPTQ and scale search for every format: calibrated casts of one linear layer's weight.

``gptq`` (Frantar et al., 2022) rounds the weight a column at a time and spreads each
column's rounding error over the columns not yet rounded, through the inverse of the
layer's input Hessian ``H = sum x xᵀ`` (damped by a fraction of its mean diagonal), in
lazy batches of columns. The rounding is the format's own cast (``formats.blocks``):
each group of ``fmt.block`` input columns gets its scales and grids, by the format's
rule, from the group's weights as they stand when GPTQ reaches it (with act-order, from
the weights before GPTQ starts: the groups stay the format's contiguous blocks while the
columns are visited by decreasing Hessian diagonal), so every stored value is a code.

``search_scales`` picks each block's scale target among clip ratios of its largest
magnitude, for the least error weighted per input column: by the Hessian's diagonal
(activation-aware, as AWQ's clip search) or uniformly (least squares). It serves alone
(``rtn_cast`` with the searched targets) or under GPTQ (each group searched as reached,
weighted by the error GPTQ itself would pay per column).
"""
from __future__ import annotations

import math

import torch

from elastiq import formats as F
from elastiq.formats.blocks import Choice, cast_with, choose, pack_codes, tensor_scale

CLIP_RATIOS = tuple(1.0 - 0.05 * i for i in range(10))  # 1.0 down to 0.55


def _groups(fmt: F.Format, columns: int) -> list[tuple[int, int]]:
    if fmt.axis not in (-1, 1):
        raise ValueError(f"format {fmt.name} blocks along axis {fmt.axis}: GPTQ needs blocks along the input dimension")
    block = min(fmt.block, columns) if fmt.block else columns
    return [(a, min(a + block, columns)) for a in range(0, columns, block)]


def search_amax(group: torch.Tensor, fmt: F.Format, ts, weight: torch.Tensor | None = None,
                ratios=CLIP_RATIOS) -> torch.Tensor:
    """Each row's scale target for ``group`` (rows, columns): the clip ratio of its largest
    magnitude whose cast has the least squared error, columns weighted by ``weight``."""
    group = group.to(torch.float32)
    amax = group.abs().amax(1)
    best, best_err = amax, None
    for r in ratios:
        target = amax * r
        _, vals = cast_with(group, fmt, choose(group, fmt, ts, target))
        d = (vals - group) ** 2
        err = (d * weight[None, :]).sum(1) if weight is not None else d.sum(1)
        if best_err is None:
            best_err = err
        else:
            better = err < best_err
            best, best_err = torch.where(better, target, best), torch.where(better, err, best_err)
    return best


def search_scales(w: torch.Tensor, fmt, importance: torch.Tensor | None = None, ratios=CLIP_RATIOS) -> list[torch.Tensor]:
    """Searched scale targets of every group of ``w`` (out, in): one tensor per group.
    ``importance`` (in,): per-column weights of the error (a Hessian's diagonal), None for least squares."""
    fmt = F.resolve(fmt)
    ts = tensor_scale(w, fmt)
    return [search_amax(w[:, a:b], fmt, ts, None if importance is None else importance[a:b], ratios)
            for a, b in _groups(fmt, w.shape[1])]


def rtn_cast(w: torch.Tensor, fmt, amax: list[torch.Tensor] | None = None) -> tuple[F.Packed, torch.Tensor]:
    """(packed, values) of ``w`` (out, in) rounded to nearest, each group's scale from
    ``amax`` (``search_scales``) or, when None, by the format's rule (what ``F.quantize`` gives)."""
    fmt = F.resolve(fmt)
    dtype, w = w.dtype, w.detach().to(torch.float32)
    ts = tensor_scale(w, fmt)
    codes, vals, choices = torch.empty(w.shape, dtype=torch.int32), torch.empty_like(w), []
    for i, (a, b) in enumerate(_groups(fmt, w.shape[1])):
        choices.append(choose(w[:, a:b], fmt, ts, None if amax is None else amax[i]))
        codes[:, a:b], vals[:, a:b] = cast_with(w[:, a:b], fmt, choices[-1])
    return pack_codes(fmt, w.shape, dtype, codes, choices, ts), vals


def _inverse_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped Hessian's inverse (float64 for the factorizations)."""
    h = h.to(torch.float64)
    h = h + damp * h.diagonal().mean() * torch.eye(len(h), dtype=h.dtype)
    for extra in (0.0, 1e-6, 1e-4, 1e-2):  # a nearly singular H (few tokens): more damping until it factors
        L, info = torch.linalg.cholesky_ex(h + extra * h.diagonal().mean() * torch.eye(len(h), dtype=h.dtype))
        if not info:
            break
    else:
        raise ValueError("the Hessian is not positive definite even with damping: too few calibration tokens?")
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


@torch.no_grad()
def gptq(w: torch.Tensor, h: torch.Tensor, fmt, damp: float = 0.01, act_order: bool = False, batch: int = 128,
         search: bool = False, ratios=CLIP_RATIOS) -> tuple[F.Packed, torch.Tensor]:
    """(packed, values) of ``w`` (out, in) by GPTQ with input Hessian ``h`` (in, in).
    ``damp``: fraction of the mean diagonal added to it; ``act_order``: visit columns by
    decreasing diagonal; ``batch``: columns per lazy update (rounded up to whole groups);
    ``search``: pick each group's scale target by ``search_amax`` weighted as GPTQ pays."""
    fmt = F.resolve(fmt)
    dtype = w.dtype
    w = w.detach().to(torch.float32).clone()
    rows, n = w.shape
    if h.shape != (n, n):
        raise ValueError(f"the Hessian is {tuple(h.shape)}, the weight has {n} input columns")
    groups = _groups(fmt, n)
    ts = tensor_scale(w, fmt)
    h = h.detach().to(torch.float64).clone()
    dead = h.diagonal() == 0  # inputs never seen: any value is free, and H is singular there
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(h.diagonal(), descending=True, stable=True) if act_order else torch.arange(n)
    hinv = _inverse_factor(h[perm][:, perm], damp).to(torch.float32)
    cost = 1.0 / hinv.diagonal() ** 2  # what GPTQ pays per unit of squared error, per (permuted) column
    group_of = torch.tensor([g for g, (a, b) in enumerate(groups) for _ in range(a, b)])
    choices: list[Choice | None] = [None] * len(groups)

    def pick(values: torch.Tensor, weight: torch.Tensor) -> Choice:
        target = search_amax(values, fmt, ts, weight, ratios) if search else None
        return choose(values, fmt, ts, target)

    if act_order or len(groups) == 1:  # groups scattered over the visiting order: choose them from the weights as they are
        inv = torch.argsort(perm)
        for g, (a, b) in enumerate(groups):
            choices[g] = pick(w[:, a:b], cost[inv[a:b]])
    span = groups[0][1] - groups[0][0]
    batch = max(batch, span) if act_order else span * math.ceil(batch / span)
    w = w[:, perm]
    codes = torch.empty(rows, n, dtype=torch.int32)
    q = torch.empty_like(w)
    for i1 in range(0, n, batch):
        i2 = min(i1 + batch, n)
        w1, err = w[:, i1:i2].clone(), torch.empty(rows, i2 - i1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            g = int(group_of[col])
            if choices[g] is None:  # in order, a group starts here: its columns are up to date in w1
                a, b = groups[g]
                choices[g] = pick(w1[:, i:i + b - a], cost[i1 + i:i1 + i + b - a])
            c, v = cast_with(w1[:, i:i + 1], fmt, choices[g])
            codes[:, col], q[:, i1 + i] = c[:, 0], v[:, 0]
            e = (w1[:, i] - v[:, 0]) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err[:, i] = e
        w[:, i2:] -= err @ hinv[i1:i2, i2:]
    values = torch.empty_like(q)
    values[:, perm] = q
    return pack_codes(fmt, w.shape, dtype, codes, choices, ts), values
