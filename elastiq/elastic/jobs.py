"""The build's independent jobs, in a form any executor can run (elastiq.executors):

- ``pack_job``: one (unit, base format) copy packed and its quality cost estimated, from
  the unit's weights and its recorded inputs and gradients (shipped once per unit, shared
  by its formats' jobs). The result is bytes (safetensors: the packed tensors, and the
  bytes, cost and module entries as metadata), so that it can be cached to resume.
- ``QualityWorker``: a pool worker holding the float model and every packed copy; it
  measures the KL divergence of an option (a level per unit) from the float model.

Keys (``pack_keys``, ``measure_keys``) are sha256s of each job's inputs, so a resumed build
reuses only results of the same inputs.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch
import torch.nn.functional as Fn
from torch import nn

from elastiq import formats as F
from elastiq.executors import inputs_key
from elastiq.calib import pack_linear
from elastiq.quant import QuantEmbedding

from . import artifact
from .sensitivity import Probe, output_cost

JOB_VERSION = 1  # bump when a job's arithmetic changes: cached results of older builds no longer match


def pack(module: nn.Module, fmt: F.Format, method: str = "rtn", hessian: torch.Tensor | None = None) -> nn.Module:
    """A unit's module packed as a base: embeddings round to nearest, linear layers by ``method``."""
    if isinstance(module, nn.Embedding):
        return QuantEmbedding.from_embedding(module, fmt)
    return pack_linear(module, fmt, method, hessian)


@torch.no_grad()
def reference_logprobs(float_model, ids: torch.Tensor) -> list[torch.Tensor]:
    """The float model's next-token log-probabilities on each window."""
    return [Fn.log_softmax(float_model(w[None]).logits[0].float(), -1) for w in ids]


@torch.no_grad()
def kl_per_token(model, ids: torch.Tensor, reference: list[torch.Tensor]) -> float:
    """Mean KL(float || model) per token, nats, over the windows ``ids``."""
    total = 0.0
    for w, ref in zip(ids, reference):
        logp = Fn.log_softmax(model(w[None]).logits[0].float(), -1)
        total += float((ref.exp() * (ref - logp)).sum())
    return total / ids.numel()


class Quality:
    """KL divergence from the float model on fixed windows, the model's weights set per option."""

    def __init__(self, model, ids, units, copies):
        self.model, self.ids, self.units, self.copies = model, ids, units, copies
        self.ref = reference_logprobs(model, ids)
        self.current: dict[str, int] = {}

    def set(self, levels) -> None:
        with torch.no_grad():
            for u, unit in enumerate(self.units):
                if self.current.get(unit.name) == int(levels[u]):
                    continue
                for name, packed in self.copies[(u, int(levels[u]))].items():
                    self.model.get_submodule(name).weight.data = packed.weight().to(self.model.dtype)
                self.current[unit.name] = int(levels[u])

    def kl(self, levels) -> float:
        self.set(levels)
        return kl_per_token(self.model, self.ids, self.ref)


@dataclass
class UnitInputs:
    """What the jobs of one unit read: its float modules, the probes of them and their tied
    heads, and how its linear layers are packed (``method``, with their input Hessians)."""
    modules: dict[str, nn.Module]
    probes: dict[str, Probe]
    tied: tuple[str, ...]
    method: str = "rtn"
    hessians: dict[str, torch.Tensor] | None = None


def unit_inputs(model: nn.Module, unit, probes: dict[str, Probe], method: str = "rtn", hessians=None) -> UnitInputs:
    mine = None if hessians is None else {m: hessians[m] for m in unit.modules if m in hessians}
    return UnitInputs({m: model.get_submodule(m) for m in unit.modules},
                      {m: probes[m] for m in unit.modules + unit.tied}, tuple(unit.tied), method, mine)


def pack_job(inputs: UnitInputs, fmt: F.Format) -> bytes:
    """Pack the unit in ``fmt``; its stored tensors, bytes and estimated cost, encoded."""
    tensors, metas, nbytes, cost = {}, {}, 0, 0.0
    for m, module in inputs.modules.items():
        q = pack(module, fmt, inputs.method, (inputs.hessians or {}).get(m))
        delta = q.weight().float() - module.weight.detach().float()
        kind = "embedding" if isinstance(q, QuantEmbedding) else "linear"
        cost += output_cost(inputs.probes[m], delta, kind)
        cost += sum(output_cost(inputs.probes[h], delta, "linear") for h in inputs.tied)
        nbytes += q.nbytes
        metas[m] = artifact.module_meta(q)
        tensors.update({f"{m}.{k}": t for k, t in artifact.module_tensors(q).items()})
    return encode(tensors, {"modules": metas, "bytes": nbytes, "cost": cost})


def encode(tensors: dict[str, torch.Tensor], meta: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"meta": json.dumps(meta)})


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of an encoded copy."""
    from safetensors.torch import load

    return load(data), decode_meta(data)


def decode_meta(data: bytes) -> dict:
    """The metadata alone (safetensors: an 8-byte header length, then a JSON header)."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["meta"])


def copy_modules(data: bytes, fmt: F.Format) -> tuple[dict[str, nn.Module], dict]:
    """The packed modules of one encoded copy, and its metadata."""
    tensors, meta = decode(data)
    mods = {}
    for m, mm in meta["modules"].items():
        parts = {k: tensors[f"{m}.{k}"] for k in artifact.stored_parts(mm, fmt)}
        mods[m] = artifact.packed_module(mm, fmt, parts)
    return mods, meta


class QualityWorker:
    """The float model and every packed copy: measures options' KL from the float model
    on fixed windows (a pool worker's state; the serial executor's is this process's model)."""

    def __init__(self, model, ids: torch.Tensor, units, encoded: dict, fmts: list[F.Format]):
        copies = {(u, i): copy_modules(data, fmts[i])[0] for (u, i), data in encoded.items()}
        self.quality = Quality(model, ids, units, copies)

    def kl(self, levels) -> bytes:
        return struct.pack("<d", self.quality.kl(levels))


def pack_keys(units, inputs: list[UnitInputs], fmts, threads: int) -> list[str]:
    """One key per (unit, format) job, units outer: a hash of everything the job reads."""
    keys = []
    for un, inp in zip(units, inputs):
        state = {m: mod.state_dict() for m, mod in inp.modules.items()}
        probes = {m: (p.inputs, p.grads) for m, p in inp.probes.items()}
        unit_key = inputs_key("pack", JOB_VERSION, torch.__version__, threads, un.name, list(inp.tied), state, probes,
                              inp.method, inp.hessians)
        keys += [inputs_key(unit_key, F.spec(f)) for f in fmts]
    return keys


def measure_keys(model, ids, copy_keys: dict, levels: list, threads: int) -> list[str]:
    """One key per option measured: the float model, the windows and the copies it holds."""
    model_key = inputs_key("measure", JOB_VERSION, torch.__version__, threads, model.state_dict(), ids)
    return [inputs_key(model_key, [copy_keys[(u, int(b))] for u, b in enumerate(lv)]) for lv in levels]


def unpack_kl(data: bytes) -> float:
    return struct.unpack("<d", data)[0]
