"""The output head and the LREC loss in one pass over blocks of the vocabulary.

For a window of n positions the head's logits are n x vocabulary (256 x 49,152 floats
for SmolLM2: 48 MiB), and autograd would keep them, their log-softmax and both
gradients. Here the head's weight is taken a block of rows (vocabulary entries) at a
time, twice: the forward pass keeps only each position's log-sum-exp and the logits of
the teacher's top-k tokens; the backward pass recomputes each block's softmax and adds
its share of the gradient. A packed head (tied to a packed embedding) is decoded block
by block, so neither the logits nor a float copy of the head ever exist whole.

With teacher probabilities p over its top-k tokens (P = sum p), student logits z and
lse = logsumexp(z), per position:
    loss = sum_k p_k (log p_k - z_top_k) + P lse  [+ lm (lse - z_next)]
    dloss/dz = (P + lm) softmax(z) - scatter(p, top) [- lm onehot(next)]
"""
from __future__ import annotations

import torch
from torch import nn

from elastiq.quant import QuantLinear

from .adapter import _decoded_rows, _row_blocks


def _block_weight(head, a: int, b: int) -> torch.Tensor:
    return _decoded_rows(head, a, b) if isinstance(head, QuantLinear) else head.weight[a:b].detach()


def _block_logits(head, h: torch.Tensor, a: int, b: int) -> torch.Tensor:
    z = h @ _block_weight(head, a, b).to(h.dtype).T
    return z if head.bias is None else z + head.bias[a:b].detach().to(h.dtype)


def _blocks(head):
    return _row_blocks(head)  # in_features / out_features: a QuantLinear's or an nn.Linear's


class _HeadKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, head, logp, top, nxt, lm_weight: float):
        n = h.shape[0]
        p = logp.exp()
        lse = torch.full((n,), float("-inf"), dtype=torch.float32)
        z_top = torch.zeros(top.shape, dtype=torch.float32)
        z_next = torch.zeros(n, dtype=torch.float32)
        for a, b in _blocks(head):
            z = _block_logits(head, h, a, b).float()
            lse = torch.logaddexp(lse, torch.logsumexp(z, -1))
            inside = (top >= a) & (top < b)
            z_top += torch.where(inside, z.gather(1, (top - a).clamp(0, b - a - 1)), 0.0)
            nin = (nxt >= a) & (nxt < b)
            z_next += torch.where(nin, z.gather(1, (nxt - a).clamp(0, b - a - 1)[:, None])[:, 0], 0.0)
        loss = (p * (logp - z_top)).sum() + (p.sum(-1) * lse).sum()
        if lm_weight:
            loss = loss + lm_weight * (lse - z_next).sum()
        ctx.head, ctx.lm_weight = head, lm_weight
        ctx.save_for_backward(h, logp, top, nxt, lse)
        return loss

    @staticmethod
    def backward(ctx, grad):
        h, logp, top, nxt, lse = ctx.saved_tensors
        head, lm = ctx.head, ctx.lm_weight
        p = logp.exp()
        coef = (p.sum(-1) + lm)[:, None]
        grad_h = torch.zeros_like(h, dtype=torch.float32)
        rows = torch.arange(h.shape[0])
        for a, b in _blocks(head):
            w = _block_weight(head, a, b).float()
            z = h.float() @ w.T
            if head.bias is not None:
                z += head.bias[a:b].detach().float()
            g = (z - lse[:, None]).exp_().mul_(coef)
            inside = (top >= a) & (top < b)
            g.scatter_add_(1, (top - a).clamp(0, b - a - 1), torch.where(inside, -p, 0.0))
            if lm:
                nin = (nxt >= a) & (nxt < b)
                g.index_put_((rows[nin], nxt[nin] - a), torch.full((int(nin.sum()),), -lm), accumulate=True)
            grad_h.addmm_(g, w)
        return (grad_h * grad).to(h.dtype), None, None, None, None, None


def head_kl(head: nn.Module, h: torch.Tensor, logp: torch.Tensor, top: torch.Tensor, nxt: torch.Tensor,
            lm_weight: float = 0.0) -> torch.Tensor:
    """Summed over positions: KL over the teacher's top-k (``logp``, ``top``) of the student
    whose logits are ``head(h)``, plus ``lm_weight`` x next-token loss on ``nxt``. ``h``:
    final hidden states (n, d). Differentiable in ``h`` only: the head is frozen."""
    if head.weight.requires_grad if isinstance(head, nn.Linear) else False:
        raise ValueError("head_kl treats the output head as frozen; this head's weight trains")
    return _HeadKL.apply(h, head, logp.float(), top.long(), nxt.long(), float(lm_weight))


__all__ = ["head_kl"]
