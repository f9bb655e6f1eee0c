"""Input Hessians of linear layers, H = sum over calibration tokens of x xᵀ, gathered by
forward hooks while the model (or one decoder layer) runs. Layers fed the same tensor in
a call (q, k and v; gate and up) share one sum: it is computed once.

Each sequence's first token counts ``sink_weight`` times. A decoder makes its first token an
attention sink: every later token attends to it, so the first token's keys and values reach
every output of the window, while a plain sum weighs it as one token of hundreds. GPTQ,
left to that sum, moves error into the directions only the first token uses (on SmolLM2 its
value projections' error grew 3 to 10 times over round-to-nearest) and the whole model got
worse than round-to-nearest (docs/calibrate.md)."""
from __future__ import annotations

import torch
from torch import nn


class Hessians:
    """``with Hessians({name: linear}) as hs: run the model``; then ``hs[name]`` is that
    layer's (in, in) float32 sum of x xᵀ and ``hs.tokens[name]`` how many inputs it saw."""

    def __init__(self, modules: dict[str, nn.Linear], sink_weight: float = 1.0):
        self.modules = modules
        self.sink_weight = sink_weight
        self.owner: dict[str, str] = {}  # name -> the name whose sum it shares
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self.first: str | None = None  # the owner whose layers ran first
        self._last: tuple[torch.Tensor | None, str | None] = (None, None)
        self._handles = []

    def __enter__(self) -> "Hessians":
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._last = [], (None, None)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            last_x, last_owner = self._last
            if name not in self.owner:  # the first call says who shares with whom
                self.owner[name] = last_owner if x is last_x else name
            owner = self.owner[name]
            self._last = (x, owner)
            self.first = self.first or owner
            if owner != name:
                return
            x = x.detach().to(torch.float32)
            if self.sink_weight != 1.0 and x.dim() == 3:  # (batch, position, features): position 0 is the sink
                x = x.clone()
                x[:, 0] *= self.sink_weight ** 0.5
            rows = x.reshape(-1, x.shape[-1])
            if owner not in self.sums:
                self.sums[owner] = torch.zeros(x.shape[-1], x.shape[-1])
                self.tokens[owner] = 0
            self.sums[owner].addmm_(rows.T, rows)
            self.tokens[owner] += rows.shape[0]
        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.sums[self.owner[name]]

    def __contains__(self, name: str) -> bool:
        return name in self.owner and self.owner[name] in self.sums
