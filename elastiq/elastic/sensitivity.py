"""How much quality a unit loses in a format: an estimate of the KL divergence from the
float model, from one forward and backward pass.

For next-token distributions p (float) and q (perturbed), KL(p||q) ≈ ½ δzᵀ F δz with F
the Fisher information of the logits. Sampling each position's label from p itself makes
the gradient g of log p(label) an unbiased probe of F, so a perturbation δy of a layer's
output costs about ½ E[(g·δy)²]. Keeping the diagonal (per token, per output channel):

    cost(module, format) = ½ Σ_t Σ_o g[t,o]² δy[t,o]² / tokens,   δy = x (W_q − W)ᵀ

with x the module's recorded inputs and g the recorded output gradients. Costs add over
modules, so the chain can sum them. Each (unit, format) estimate is an independent job
given the recorded (x, g): a sweep over a large model can run them anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as Fn
from torch import nn



@dataclass
class Probe:
    """What a module saw in the probe pass: its input and the gradient at its output."""
    inputs: torch.Tensor  # (tokens, in) for a linear; token ids (tokens,) for an embedding
    grads: torch.Tensor  # (tokens, out)


def record_probes(model: nn.Module, names: list[str], ids: torch.Tensor, seed: int = 0) -> dict[str, Probe]:
    """Run ``model`` on ``ids`` (windows, tokens) with labels sampled from its own
    predictions, and record each named module's inputs and output gradients."""
    saved: dict[str, dict] = {n: {} for n in names}

    def probe_hook(name):
        def hook(module, args, out):
            x = args[0].detach()
            saved[name]["x"] = x.reshape(-1) if isinstance(module, nn.Embedding) else x.reshape(-1, x.shape[-1])
            out.register_hook(lambda g: saved[name].__setitem__("g", g.detach().reshape(-1, g.shape[-1])))
        return hook

    # weights stay frozen; the embedding output is made to need a gradient instead, so
    # the backward pass still runs through every layer (this hook must fire first)
    hooks = [model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True))]
    hooks += [model.get_submodule(n).register_forward_hook(probe_hook(n)) for n in names]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        with torch.enable_grad():
            logits = model(ids).logits.float()
            with torch.no_grad():
                probs = torch.softmax(logits.reshape(-1, logits.shape[-1]), -1)
                labels = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).reshape(-1)
            Fn.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="sum").backward()
    finally:
        for h in hooks:
            h.remove()
        for p, was in frozen:
            p.requires_grad_(was)
    missing = [n for n in names if "g" not in saved[n]]
    if missing:
        raise RuntimeError(f"the probe pass reached no gradient at {missing[:3]}: these modules do not affect the logits")
    return {n: Probe(saved[n]["x"], saved[n]["g"]) for n in names}


def output_cost(probe: Probe, delta: torch.Tensor, kind: str) -> float:
    """½ Σ g² δy² / tokens for a weight change ``delta`` of a linear (out, in) or embedding (vocab, dim)."""
    g = probe.grads
    if kind == "embedding":
        dy = delta.index_select(0, probe.inputs.long())
    else:
        dy = probe.inputs.float() @ delta.t()
    return 0.5 * float((g.square() * dy.square()).sum()) / g.shape[0]

