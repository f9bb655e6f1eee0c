"""AdamW for adapters whose weights and moments may be kept in low precision.

Adapters stored in bfloat16 cannot take AdamW's small late updates directly (bfloat16
keeps 8 significant bits, so an update under ~0.4% of a weight rounds away): the
optimizer keeps a float32 master copy of each such weight and writes the rounded value
back after every step. The two moments are kept in ``state_dtype`` (float32, or bfloat16
for half their bytes); the arithmetic runs in float32 either way.
"""
from __future__ import annotations

import torch

from .adapter import adapter_dtype


class AdapterAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) with moments in
    ``state_dtype`` and float32 master weights for parameters that are not float32."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 state_dtype="float32"):
        self.state_dtype = adapter_dtype(state_dtype, "optimizer state dtype")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, dtype=self.state_dtype)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=self.state_dtype)
                    if p.dtype != torch.float32:
                        st["master"] = p.detach().float().clone()
                st["step"] += 1
                t = float(st["step"])
                w = st["master"] if "master" in st else p
                g = p.grad.float()
                m = st["exp_avg"].float().mul_(b1).add_(g, alpha=1 - b1)
                v = st["exp_avg_sq"].float().mul_(b2).addcmul_(g, g, value=1 - b2)
                st["exp_avg"].copy_(m)
                st["exp_avg_sq"].copy_(v)
                if group["weight_decay"]:
                    w.mul_(1 - group["lr"] * group["weight_decay"])
                denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                w.addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** t))
                if w is not p:
                    p.copy_(w)
        return None

    def load_state_dict(self, state_dict) -> None:
        """As torch's, but the master weights and moments keep the dtypes they were saved
        in (torch would cast them to each parameter's dtype, rounding the masters)."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            for k, v in state_dict["state"].get(i, {}).items():
                self.state[p][k] = v.clone()

    @property
    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for st in self.state.values() for t in st.values()
                   if isinstance(t, torch.Tensor))


__all__ = ["AdapterAdamW"]
