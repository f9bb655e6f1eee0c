"""A workload: a model and the steps to run on it (denoising steps, decode tokens, or any call).

    w = Workload.from_inputs(model, {"sample": x, "timestep": 10, "encoder_hidden_states": e})
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

FAMILIES = ("diffusion-tti", "transformer-tti", "diffusion-ttv", "llm-prefill", "llm-decode", "custom")


class ProfileError(ValueError):
    """A model or input that cannot be profiled, with what to do about it."""


@dataclass
class Workload:
    """step(i) runs step i (and advances any state, such as latents or a KV cache);
    reset() returns to the state before step 0. Both run under torch.no_grad()."""
    name: str
    model: nn.Module
    step: Callable[[int], Any]
    steps: int = 3
    reset: Callable[[], None] = lambda: None
    family: str = "custom"
    config: dict = field(default_factory=dict)   # what the model was built from, for reports
    step_name: str = "step"                      # "denoising step", "decode token", ...
    attention_kinds: dict[str, str] | None = None

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise ProfileError(f"{self.name}: model must be a torch.nn.Module, not {type(self.model).__name__}")
        if not callable(self.step):
            raise ProfileError(f"{self.name}: step must be a callable step(i), not {type(self.step).__name__}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ProfileError(f"{self.name}: steps must be a positive integer, not {self.steps!r}")
        if self.family not in FAMILIES:
            raise ProfileError(f"{self.name}: family must be one of {', '.join(FAMILIES)}, not {self.family!r}")

    @classmethod
    def from_inputs(cls, model: nn.Module, inputs: Any, steps: int = 3, name: str | None = None,
                    device: str | torch.device = "cpu", **kw) -> "Workload":
        """Each step calls model(*inputs) for a tuple or list, model(**inputs) for a dict,
        model(inputs) for a tensor. Model and tensors are moved to device."""
        if not isinstance(model, nn.Module):
            raise ProfileError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        if not isinstance(inputs, (tuple, list, dict, torch.Tensor)):
            raise ProfileError(f"inputs must be a tensor, a tuple/list of positional arguments or a dict of keyword "
                               f"arguments, not {type(inputs).__name__}")
        device = check_device(device)
        model = model.to(device).eval()
        moved = _to(inputs, device)
        if isinstance(moved, dict):
            step = lambda i: model(**moved)  # noqa: E731
        elif isinstance(moved, (tuple, list)):
            step = lambda i: model(*moved)  # noqa: E731
        else:
            step = lambda i: model(moved)  # noqa: E731
        return cls(name or type(model).__name__, model, step, steps, **kw)


def check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ProfileError(f"unknown device {device!r}: {e}. Use 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError("device 'cuda' was asked for but torch sees no CUDA GPU here; use device='cpu'")
    if device.type not in ("cpu", "cuda"):
        raise ProfileError(f"device {device.type!r} is not supported by the profiler; use 'cpu' or 'cuda'")
    return device


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x
