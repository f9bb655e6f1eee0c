"""Put bit flips into a model: into its weights as stored, or into a layer's output.

    inj = Injector(model)                              # every Linear / Conv / QuantLinear
    f = inj.sample(random.Random(0), "model.layers.3.mlp.down_proj", "weight", site="scales")
    with inj.inject([f]):                              # weight and activation faults combine
        logits = model(x)
    # on exit every weight is back, bit for bit

Weights: a ``QuantLinear`` (``elastiq.quant``) is flipped in its packed buffers, in place;
a float layer is flipped in its weight's storage dtype (``weight_dtype``, e.g. fp16 for
a model whose weights are stored in half precision: :func:`store_weights` rounds them
first). ``Injector(model, decoded=True)`` swaps each QuantLinear for a float Linear holding
its decoded weight and keeps the packed bytes beside it: a flip is made in the bytes and
only the touched layer is decoded again (the outputs equal the packed layer's; it is
faster because the other layers are not decoded on every forward).

Activations: the output of a chosen layer is represented in a chosen precision (a torch
dtype, or an elastiq format packed along the last axis) and one bit of one value is
flipped in every sample of the batch; golden runs represent the output the same way
without the flip. An optional range detector (GoldenEye's) clamps the flipped values to
the layer's profiled maximum magnitude and turns NaN into 0.
"""
from __future__ import annotations

import math
import random
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from elastiq import formats as F
from elastiq.quant import QuantLinear
from elastiq.quant.model import replace_module

from .bitflip import flip_all, flip_float, flip_packed, float_bits, site_sizes
from .precision import precision

KINDS = ("weight", "activation")


@dataclass(frozen=True)
class Fault:
    """One bit flip. ``site``: value (a float), or codes / scales / selectors / tensor_scale
    of a packed tensor; ``index``: which entry of the site (for activations: the flat
    position inside one sample's output, or inside its packed form)."""

    layer: str
    kind: str
    site: str
    index: int
    bit: int

    def as_dict(self) -> dict:
        return {"layer": self.layer, "kind": self.kind, "site": self.site, "index": self.index, "bit": self.bit}


def store_weights(model: nn.Module, dtype) -> None:
    """Round every float Linear / Conv weight onto ``dtype`` (a model stored in fp16)."""
    prec = precision(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                m.weight.copy_(prec.round(m.weight))


class _Target:
    """One layer whose weight can be flipped."""

    def __init__(self, name, module, packed=None, weight_dtype=None):
        self.name, self.module, self.packed, self.weight_dtype = name, module, packed, weight_dtype

    def sites(self) -> dict[str, tuple[int, int]]:
        if self.packed is not None:
            return site_sizes(self.packed)
        return {"value": (self.module.weight.numel(), float_bits(self.weight_dtype))}

    @contextmanager
    def flipped(self, faults: list[Fault]):
        if isinstance(self.module, QuantLinear):
            p = self.packed
            for f in faults:
                p = flip_packed(p, f.site, f.index, f.bit)
            saved = {k: getattr(self.module, k).clone() for k in ("codes", "scales", "selectors")}
            ts = None if self.module.tensor_scale is None else self.module.tensor_scale.clone()
            with torch.no_grad():
                for k in saved:
                    getattr(self.module, k).copy_(getattr(p, k))
                if ts is not None:
                    self.module.tensor_scale.copy_(p.tensor_scale)
            try:
                yield
            finally:
                with torch.no_grad():
                    for k, v in saved.items():
                        getattr(self.module, k).copy_(v)
                    if ts is not None:
                        self.module.tensor_scale.copy_(ts)
            return
        w = self.module.weight
        saved = w.detach().clone()
        if self.packed is not None:  # decoded packed layer: flip the bytes, decode this layer
            p = self.packed
            for f in faults:
                p = flip_packed(p, f.site, f.index, f.bit)
            new = F.dequantize(p).to(w.dtype).reshape(w.shape)
        else:
            new = saved
            for f in faults:
                if f.site != "value":
                    raise ValueError(f"layer {self.name} holds a float weight: its only site is 'value', not {f.site!r}")
                new = flip_float(new, f.index, f.bit, self.weight_dtype)
        with torch.no_grad():
            w.copy_(new)
        try:
            yield
        finally:
            with torch.no_grad():
                w.copy_(saved)


_FLOAT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class Injector:
    """The injectable layers of ``model`` and the means to flip their bits."""

    def __init__(self, model: nn.Module, weight_dtype=None, decoded: bool = False, layers=None):
        self.model = model
        self.targets: dict[str, _Target] = {}
        self.modules = dict(model.named_modules())
        for name, m in list(model.named_modules()):
            if layers is not None and not any(fnmatchcase(name, p) for p in layers):
                continue
            if isinstance(m, QuantLinear):
                if decoded:
                    lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                    with torch.no_grad():
                        lin.weight.copy_(m.weight())
                        if m.bias is not None:
                            lin.bias.copy_(m.bias)
                    lin.requires_grad_(False)
                    replace_module(model, name, lin)
                    self.targets[name] = _Target(name, lin, packed=m.packed())
                else:
                    self.targets[name] = _Target(name, m, packed=m.packed())
            elif isinstance(m, _FLOAT_LAYERS):
                dt = m.weight.dtype if weight_dtype is None else _dtype(weight_dtype)
                self.targets[name] = _Target(name, m, weight_dtype=dt)
        self.modules = dict(model.named_modules())
        if not self.targets:
            every = [n for n, m in model.named_modules() if isinstance(m, (QuantLinear,) + _FLOAT_LAYERS)]
            if layers is not None and every:
                raise ValueError(f"no injectable layer named {', '.join(map(repr, layers))}; layers are e.g. "
                                 f"{', '.join(every[:4])} (patterns like '*.down_proj' work)")
            raise ValueError("the model has no Linear, Conv or QuantLinear layer to inject faults into")

    @property
    def layers(self) -> list[str]:
        return list(self.targets)

    def select(self, patterns) -> list[str]:
        """Layer names matching any fnmatch pattern; refuses a pattern that matches none."""
        if patterns is None:
            return self.layers
        out = []
        for p in patterns:
            hit = [n for n in self.targets if fnmatchcase(n, p)]
            if not hit:
                raise ValueError(f"no injectable layer named {p!r}; layers are e.g. {', '.join(self.layers[:4])} "
                                 f"(patterns like '*.down_proj' work)")
            out += [n for n in hit if n not in out]
        return out

    def module(self, layer: str) -> nn.Module:
        if layer not in self.modules:
            raise ValueError(f"the model has no layer named {layer!r}; layers are e.g. {', '.join(self.layers[:4])}")
        return self.modules[layer]

    def weight_sites(self, layer: str) -> dict[str, tuple[int, int]]:
        if layer not in self.targets:
            self.module(layer)  # unknown name -> clear error
            raise ValueError(f"layer {layer!r} has no weight to flip (use a Linear, Conv or QuantLinear layer)")
        return self.targets[layer].sites()

    def sample(self, rng: random.Random, layer: str, kind: str = "weight", site: str | None = None,
               bit: int | None = None, act_format="fp32", act_shape=None) -> Fault:
        """A uniformly random fault in ``layer``: a random entry of ``site`` (default: an
        element: ``codes`` or ``value``), a random bit unless ``bit`` is given."""
        if kind == "weight":
            sites = self.weight_sites(layer)
        elif kind == "activation":
            self.module(layer)
            if act_shape is None:
                raise ValueError("activation faults need the layer's output shape per sample (act_shape)")
            sites = activation_sites(act_format, act_shape)
        else:
            raise ValueError(f"unknown fault kind {kind!r}: use weight or activation")
        site = site or ("codes" if "codes" in sites else "value")
        if site not in sites:
            raise ValueError(f"layer {layer} ({kind}) has no site {site!r}; it has {', '.join(sites)}")
        count, width = sites[site]
        if bit is not None and not 0 <= bit < width:
            raise ValueError(f"bit {bit} is outside the {site} of layer {layer}, which have {width} bits (0 .. {width - 1})")
        return Fault(layer, kind, site, rng.randrange(count), rng.randrange(width) if bit is None else bit)

    @contextmanager
    def inject(self, faults=(), act_formats: dict | None = None, ranges: dict | None = None):
        """Apply ``faults`` for the duration of the block. ``act_formats`` maps layer ->
        the precision its output is held in (golden runs pass the same map and no faults);
        ``ranges`` maps layer -> profiled max |output| for the range detector."""
        act_formats = dict(act_formats or {})
        by_layer: dict[str, list[Fault]] = {}
        acts: dict[str, list[Fault]] = {}
        for f in faults:
            if f.kind == "weight":
                self.weight_sites(f.layer)
                by_layer.setdefault(f.layer, []).append(f)
            elif f.kind == "activation":
                self.module(f.layer)
                acts.setdefault(f.layer, []).append(f)
            else:
                raise ValueError(f"unknown fault kind {f.kind!r}: use weight or activation")
        with ExitStack() as stack:
            for layer, fs in by_layer.items():
                stack.enter_context(self.targets[layer].flipped(fs))
            for layer in set(acts) | set(act_formats):
                hook = _activation_hook(act_formats.get(layer, "fp32"), acts.get(layer, []), (ranges or {}).get(layer))
                stack.callback(self.module(layer).register_forward_hook(hook).remove)
            yield


def activation_sites(act_format, shape) -> dict[str, tuple[int, int]]:
    """Sites of one sample's output of ``shape`` held in ``act_format``."""
    prec = precision(act_format)
    numel = math.prod(shape)
    if prec.dtype is not None:
        return {"value": (numel, float_bits(prec.dtype))}
    return site_sizes(F.quantize(torch.zeros(1, numel), prec.fmt))  # packed as one row per sample


def _activation_hook(act_format, faults: list[Fault], max_abs: float | None):
    prec = precision(act_format)

    def hook(module, args, out):
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"activation faults need a layer whose output is one tensor, got {type(out).__name__}")
        b = out.shape[0]
        flat = out.reshape(b, -1)
        if prec.dtype is not None:
            flat = flat.to(prec.dtype).to(out.dtype)
            if not faults:
                return flat.reshape(out.shape)
            flat, mask = flat.clone(), torch.zeros_like(flat, dtype=torch.bool)
            for f in faults:
                if f.site != "value":
                    raise ValueError(f"an activation held in {prec.name} has only the site 'value', not {f.site!r}")
                flat[:, f.index] = flip_all(flat[:, f.index], f.bit, prec.dtype)
                mask[:, f.index] = True
        else:  # the output packed along its last axis; each sample's bit flipped at the same place
            p = F.quantize(flat.detach().float(), prec.fmt)
            gold = F.dequantize(p).to(out.dtype)
            if not faults:
                return gold.reshape(out.shape)
            sites = site_sizes(F.quantize(torch.zeros(1, flat.shape[1]), prec.fmt))
            for f in faults:
                if f.site == "tensor_scale":
                    p = flip_packed(p, f.site, 0, f.bit)
                else:
                    if f.site not in sites:
                        raise ValueError(f"an activation held in {prec.name} has no site {f.site!r}; it has {', '.join(sites)}")
                    p = flip_packed(p, f.site, torch.arange(b) * sites[f.site][0] + f.index, f.bit)
            flat = F.dequantize(p).to(out.dtype)
            mask = (flat != gold) | torch.isnan(flat)
        if max_abs is not None:  # range detector on the values the flips touched
            fixed = torch.nan_to_num(flat, nan=0.0).clamp(-max_abs, max_abs)
            flat = torch.where(mask, fixed, flat)
        return flat.reshape(out.shape)

    return hook


def profile_ranges(model: nn.Module, layers, batches) -> dict[str, float]:
    """Largest |output| of each layer over ``batches`` (for the range detector)."""
    modules = dict(model.named_modules())
    ranges = {n: 0.0 for n in layers}
    hooks = []
    for n in layers:
        def hook(m, a, out, n=n):
            ranges[n] = max(ranges[n], float(out.detach().abs().max()))
        hooks.append(modules[n].register_forward_hook(hook))
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return ranges


def _dtype(spec) -> torch.dtype:
    p = precision(spec)
    if p.dtype is None:
        raise ValueError(f"a float weight is stored in a torch dtype (fp32, fp16, bf16), not the format {p.name}; "
                         f"quantize the model to store it in a format")
    return p.dtype
