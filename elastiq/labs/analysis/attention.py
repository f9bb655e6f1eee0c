"""Attention written out step by step, each step rounded onto a chosen precision.

``AttentionPrecision`` names four precisions, chosen separately:

* ``inputs``      Q, K, V, the probabilities P as the P·V product reads them, and the
                  returned output (what a kernel stores in memory);
* ``accumulate``  the results of each matrix product (the scores Q·Kᵀ and P·V). With
                  ``acc_chunk=None`` the products are summed in the carrier (float32)
                  and the result rounded, as a GPU GEMM does for bf16 inputs; with
                  ``acc_chunk=n`` the running sum itself is held in this precision,
                  rounded after every n products (1: after every addition);
* ``stats``       the softmax statistics: row maximum m and row sum l (flash: the
                  running m and l, rescaled at every key tile);
* ``output``      flash only: the running, unnormalized output accumulator O, which
                  is rescaled by exp(m_old - m_new) at every key tile.

``baseline_attention`` materializes the scores, takes the softmax, multiplies by V.
``flash_attention`` walks key tiles of ``block_k`` with the online softmax (Milakov &
Gimelshein; FlashAttention), query tiles of ``block_q``. With every precision float64
the two agree to rounding (tests hold them to 1e-12). Real FlashAttention-2 kernels
keep m, l and O in float32 and round only P to the input type: that is
``AttentionPrecision(inputs="bf16", accumulate="fp32", stats="fp32", output="fp32")``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .precision import Precision, carrier_for, precision


@dataclass(frozen=True)
class AttentionPrecision:
    inputs: Precision
    accumulate: Precision
    stats: Precision
    output: Precision

    @classmethod
    def of(cls, inputs="fp32", accumulate=None, stats=None, output=None) -> "AttentionPrecision":
        """Unset precisions default to ``inputs`` (all arithmetic in one precision)."""
        i = precision(inputs)
        return cls(i, precision(accumulate or i), precision(stats or i), precision(output or i))

    @property
    def carrier(self) -> torch.dtype:
        return carrier_for(self.inputs, self.accumulate, self.stats, self.output)

    @property
    def label(self) -> str:
        parts = [self.inputs.name, self.accumulate.name, self.stats.name, self.output.name]
        if len(set(parts)) == 1:
            return parts[0]
        return f"in={parts[0]},acc={parts[1]},stats={parts[2]},out={parts[3]}"


def as_precision(p) -> AttentionPrecision:
    if isinstance(p, AttentionPrecision):
        return p
    return AttentionPrecision.of(p)


def matmul(a: torch.Tensor, b: torch.Tensor, acc: Precision, chunk: int | None = None, ste: bool = False) -> torch.Tensor:
    """a @ b held in ``acc``. ``chunk=None``: summed in the carrier, the result rounded;
    else the running sum is rounded after each group of ``chunk`` products."""
    if acc.covers(a.dtype):
        return a @ b
    if chunk is None:
        return acc.round(a @ b, ste)
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"acc_chunk must be a positive integer or None, got {chunk!r}")
    out = None
    k = a.shape[-1]
    for k0 in range(0, k, chunk):
        part = a[..., k0:k0 + chunk] @ b[..., k0:k0 + chunk, :]
        out = acc.round(part if out is None else out + part, ste)
    return out


def _check(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"{name} must be a float tensor of shape (..., seq, head_dim), got {getattr(t, 'shape', type(t))}")
    if q.shape[-1] != k.shape[-1] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"shapes do not fit attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


def _prepare(q, k, v, prec, ste):
    _check(q, k, v)
    prec = as_precision(prec)
    c = prec.carrier
    r = prec.inputs.round
    return prec, r(q.to(c), ste), r(k.to(c), ste), r(v.to(c), ste)


def _causal_mask(sq: int, k0: int, k1: int, sk: int, device) -> torch.Tensor:
    """True where query i (aligned to the end of the keys) may not see key j."""
    i = torch.arange(sq, device=device)[:, None] + (sk - sq)
    j = torch.arange(k0, k1, device=device)[None, :]
    return j > i


def baseline_attention(q, k, v, prec="fp32", acc_chunk: int | None = None, causal: bool = False, ste: bool = False):
    """softmax(Q Kᵀ / sqrt(d)) V with scores materialized; returns the carrier dtype."""
    prec, q, k, v = _prepare(q, k, v, prec, ste)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = prec.accumulate.round(matmul(q, k.transpose(-1, -2), prec.accumulate, acc_chunk, ste) * scale, ste)
    if causal:
        s = s.masked_fill(_causal_mask(q.shape[-2], 0, k.shape[-2], k.shape[-2], s.device), -math.inf)
    m = prec.stats.round(s.amax(-1, keepdim=True), ste)
    p = prec.stats.round(torch.exp(s - m), ste)
    l = prec.stats.round(p.sum(-1, keepdim=True), ste)
    p = prec.inputs.round(p / l, ste)
    o = matmul(p, v, prec.accumulate, acc_chunk, ste)
    return prec.inputs.round(o, ste)


def _check_tiles(block_q, block_k, sq, sk):
    for name, b, s, what in (("block_q", block_q, sq, "query"), ("block_k", block_k, sk, "key")):
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ValueError(f"{name} must be a positive integer, got {b!r}")
        if b > s:
            raise ValueError(f"{name}={b} is larger than the {what} sequence ({s} tokens): use a tile of at most {s}")


def flash_attention(q, k, v, prec="fp32", block_q: int = 64, block_k: int = 64, acc_chunk: int | None = None,
                    causal: bool = False, ste: bool = False):
    """Tiled attention with the online softmax; returns the carrier dtype.

    Query tiles are independent, so when ``block_q`` divides the sequence they are
    processed side by side as a batch dimension (the numbers are those of a loop over
    tiles); otherwise the tiles are looped over."""
    prec, q, k, v = _prepare(q, k, v, prec, ste)
    sq, sk = q.shape[-2], k.shape[-2]
    _check_tiles(block_q, block_k, sq, sk)
    if sq % block_q == 0:
        lead = q.shape[:-2]
        qt = q.reshape(*lead, sq // block_q, block_q, q.shape[-1])
        o = _flash_tiles(qt, k.unsqueeze(-3), v.unsqueeze(-3), prec, block_k, acc_chunk, causal, ste, block_q, sk, sq)
        return o.reshape(*lead, sq, v.shape[-1])
    outs = []
    for q0 in range(0, sq, block_q):
        qt = q[..., q0:q0 + block_q, :].unsqueeze(-3)
        outs.append(_flash_tiles(qt, k.unsqueeze(-3), v.unsqueeze(-3), prec, block_k, acc_chunk, causal, ste,
                                 qt.shape[-2], sk, sq, q_offset=q0).squeeze(-3))
    return torch.cat(outs, -2)


def _flash_tiles(q, k, v, prec, block_k, acc_chunk, causal, ste, block_q, sk, sq, q_offset=0):
    """q: (..., tiles, Br, D); k, v: (..., 1, Sk, D)."""
    st, acc, out_p = prec.stats, prec.accumulate, prec.output
    scale = 1.0 / math.sqrt(q.shape[-1])
    m = l = o = None
    if causal:  # row index of each query in the whole sequence, aligned to the end of the keys
        rows = (torch.arange(q.shape[-3], device=q.device)[:, None] * block_q
                + torch.arange(block_q, device=q.device)[None, :] + q_offset + (sk - sq))
    for k0 in range(0, sk, block_k):
        kj, vj = k[..., k0:k0 + block_k, :], v[..., k0:k0 + block_k, :]
        s = acc.round(matmul(q, kj.transpose(-1, -2), acc, acc_chunk, ste) * scale, ste)
        if causal:
            cols = torch.arange(k0, k0 + kj.shape[-2], device=q.device)
            s = s.masked_fill(cols[None, None, :] > rows[:, :, None], -math.inf)
        rowmax = s.amax(-1)
        m_new = rowmax if m is None else torch.maximum(m, rowmax)
        m_new = st.round(torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new), ste)  # fully masked rows
        p = torch.exp(s - m_new[..., None])
        l_add = st.round(st.round(p, ste).sum(-1), ste)
        pv = matmul(prec.inputs.round(p, ste), vj, acc, acc_chunk, ste)
        if m is None:
            l, o = l_add, out_p.round(pv, ste)
        else:
            alpha = st.round(torch.exp(m - m_new), ste)
            l = st.round(alpha * l + l_add, ste)
            o = out_p.round(alpha[..., None] * o + pv, ste)
        m = m_new
    return prec.inputs.round(out_p.round(o / l[..., None], ste), ste)


def sdpa_attention(q, k, v, dtype: torch.dtype = torch.bfloat16, backend: str = "default", causal: bool = False):
    """PyTorch's own scaled_dot_product_attention on ``dtype`` inputs: the real-kernel
    comparison. ``backend``: default (torch's choice), flash, or math."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    _check(q, k, v)
    backends = {"flash": [SDPBackend.FLASH_ATTENTION], "math": [SDPBackend.MATH],
                "efficient": [SDPBackend.EFFICIENT_ATTENTION]}
    if backend not in ("default", *backends):
        raise ValueError(f"unknown SDPA backend {backend!r}: use default, flash, efficient or math")
    # the CPU flash kernel wants (batch, heads, seq, dim)
    extra = 4 - q.dim()
    args = [t.to(dtype).reshape((1,) * extra + tuple(t.shape)) if extra > 0 else t.to(dtype) for t in (q, k, v)]
    try:
        if backend == "default":
            out = scaled_dot_product_attention(*args, is_causal=causal)
        else:
            with sdpa_kernel(backends[backend]):
                out = scaled_dot_product_attention(*args, is_causal=causal)
    except RuntimeError as e:
        raise ValueError(f"PyTorch has no {backend} SDPA kernel for {dtype} on {q.device.type}: {str(e).splitlines()[0]}") from None
    return out.reshape(out.shape[extra:]) if extra > 0 else out
