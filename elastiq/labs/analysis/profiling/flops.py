"""FLOPs per operator class, and the sequence lengths of every attention call.

A TorchDispatchMode sees each aten operator after decomposition and prices it with
torch.utils.flop_counter's formulas (matmul, convolution, fused attention on CUDA). Those
formulas give 0 for the CPU fused attention kernel (_scaled_dot_product_flash_attention_for_cpu,
pytorch/pytorch#195460), so fused attention is priced here by hand: QK^T and PV are two
batched matmuls, 2 * 2 * batch * heads * Lq * Lk * head_dim FLOPs (softmax not counted, as
in torch's counter). The math backend decomposes into bmm and is counted by torch's formulas,
so both backends give the same count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from . import classes as C
from .scopes import Scopes


@dataclass
class AttentionCall:
    """One call of an attention module: its query and key/value lengths."""
    module: str
    kind: str             # self, cross or temporal
    q_len: int = 0
    kv_len: int = 0
    batch_heads: int = 0  # batch * heads (for temporal attention: batch * spatial positions * heads)
    head_dim: int = 0
    flops: int = 0

    @property
    def score_bytes(self) -> int:
        """Bytes of the Lq x Lk score matrix in float32, which the math backend materializes."""
        return 4 * self.batch_heads * self.q_len * self.kv_len

    def as_dict(self) -> dict:
        return {**asdict(self), "score_bytes": self.score_bytes}


def sdpa_flops(q_shape, k_shape, v_shape) -> int:
    """FLOPs of QK^T and PV for (..., Lq, E) queries, (..., Lk, E) keys, (..., Lk, Ev) values."""
    batch = prod(q_shape[:-2])
    lq, e = q_shape[-2], q_shape[-1]
    lk, ev = k_shape[-2], v_shape[-1]
    return 2 * batch * lq * lk * e + 2 * batch * lq * lk * ev


def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else None


class FlopCounter(TorchDispatchMode):
    """Counts FLOPs per class and records attention calls while a model runs under Scopes."""

    def __init__(self, scopes: Scopes):
        super().__init__()
        self.scopes = scopes
        self.flops = {c: 0 for c in C.CLASSES}
        self.calls: list[AttentionCall] = []

    def new_call(self, module: str, kind: str) -> int:
        self.calls.append(AttentionCall(module, kind))
        return len(self.calls) - 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        op = C.op_name(str(packet))
        attention, in_norm, in_weight, call = self.scopes.current()
        if in_weight and op in C._MATMUL:
            cls = C.LINEAR
        else:
            cls = C.classify(op, attention, in_norm)
        flops = 0
        if C.is_sdpa(op) and len(args) >= 3:
            q, k, v = (_shape(a) for a in args[:3])
            if q and k and v:
                flops = sdpa_flops(q, k, v)
                if call < 0:  # attention called outside any module we know as attention
                    call = self.new_call("(no attention module)", "self")
                self._note_call(call, cls, q[-2], k[-2], prod(q[:-2]), q[-1])
        elif packet in flop_registry:
            try:  # the registry's formulas take the tensors and read their shapes themselves
                flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            except Exception:  # a formula that cannot price this call: count none rather than guess
                flops = 0
            if cls in C.ATTENTION and op in ("bmm", "baddbmm", "mm", "matmul") and len(args) >= 2:
                a, b = (args[1], args[2]) if op == "baddbmm" else (args[0], args[1])
                if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                    self._note_call(call, cls, a.shape[-2], b.shape[-1], prod(a.shape[:-2]), a.shape[-1])
        self.flops[cls] += flops
        if 0 <= call < len(self.calls) and cls in C.ATTENTION:
            self.calls[call].flops += flops
        return out

    def _note_call(self, call: int, cls: str, q_len: int, kv_len: int, batch_heads: int, head_dim: int) -> None:
        """Lengths come from the call's first attention product (QK^T), not from PV."""
        if 0 <= call < len(self.calls) and self.calls[call].q_len == 0:
            c = self.calls[call]
            c.q_len, c.kv_len, c.batch_heads, c.head_dim = int(q_len), int(kv_len), int(batch_heads), int(head_dim)
