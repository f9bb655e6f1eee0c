"""build(): from a float model and a few base formats to an elastic artifact on disk.

1. Pack every unit in every base format (these copies are all the artifact stores).
2. Estimate each (unit, base) quality cost once, from one probe pass (sensitivity.py).
3. Order the moves into a chain (chain.py).
4. Measure the real KL divergence from the float model at options spread along the
   chain, on calibration text other than the probe's; the estimates between them are
   mapped through these measurements.
5. Prune to a storage limit if one is given, and write the artifact (artifact.py).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from torch import nn

from elastiq import formats as F
from elastiq.calib import Hessians, calibration_windows, pack_linear
from elastiq.options import BuildOptions, CalibOptions
from elastiq.progress import progress_bar
from elastiq.quant import QuantEmbedding, weight_bytes

from . import artifact
from .chain import build_chain, estimate_cost, family_of, prune
from .sensitivity import output_cost, record_probes
from .units import find_units

DEFAULT_FORMATS = BuildOptions.formats


@contextmanager
def _progress(enabled: bool):
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with progress_bar(*cols, enabled=enabled) as p:
        yield p


def check_formats(formats) -> list[F.Format]:
    fmts = [F.resolve(f) for f in formats]
    if len(fmts) < 2:
        raise ValueError(f"an elastic chain needs at least two base formats, got {len(fmts)}: e.g. "
                         f"{','.join(DEFAULT_FORMATS)}")
    specs = [F.spec(f) for f in fmts]
    if len(set(specs)) != len(specs):
        raise ValueError(f"base formats repeat: {', '.join(specs)}")
    return fmts


def calibration_ids(tokenizer, text: str, tokens: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of windows (windows, context): one to probe, one to measure."""
    from elastiq.data import tokenize

    if context < 2 or tokens < context:
        raise ValueError(f"need calib_tokens >= context >= 2, got calib_tokens={tokens}, context={context}")
    ids = tokenize(tokenizer, text)
    n = tokens // context * context
    if len(ids) < 2 * n:
        raise ValueError(f"the calibration text has {len(ids)} tokens; {2 * n} are needed "
                         "(half to probe, half to measure): give a longer text or fewer calib_tokens")
    return ids[:n].reshape(-1, context), ids[n : 2 * n].reshape(-1, context)


def pack(module: nn.Module, fmt: F.Format, method: str = "rtn", hessian: torch.Tensor | None = None) -> nn.Module:
    """A unit's module packed as a base: embeddings round to nearest, linear layers by ``method``."""
    if isinstance(module, nn.Embedding):
        return QuantEmbedding.from_embedding(module, fmt)
    return pack_linear(module, fmt, method, hessian)


def _hessians(model, units, tokenizer, text: str, method: str):
    """The input Hessians of the units' linear layers on the calibration text (None for RTN bases)."""
    if method == "rtn":
        return None
    o = CalibOptions(method=method)
    linears = {m: model.get_submodule(m) for u in units for m in u.modules if isinstance(model.get_submodule(m), nn.Linear)}
    with Hessians(linears) as hs:
        for w in calibration_windows(tokenizer, text, o.tokens, o.context):
            model(w[None], use_cache=False)
    return hs


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


def measure_windows(artifact, tokenizer) -> torch.Tensor:
    """The windows an artifact's quality was measured on (to measure a new option alike)."""
    from elastiq.data import load_text

    info = artifact.manifest["info"]
    if not info.get("calib"):
        raise ValueError(f"{artifact.path} was built on a calibration text passed in code, not a named one: "
                         "measure the new option on windows of that text yourself")
    _, ids = calibration_ids(tokenizer, load_text(info["calib"]), info["calib_tokens"], info["context"])
    return ids


class _Quality:
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


def build(model, tokenizer, out, options: BuildOptions | None = None, calib_text: str | None = None,
          calib_name: str | None = None, overwrite: bool = False, progress: bool = True, source: str = "",
          **overrides) -> Path:
    """Build the elastic family of ``model`` (a float model, changed in place: pass a copy
    to keep it) and write it to ``out``. ``options`` (:class:`elastiq.options.BuildOptions`;
    keyword ``overrides`` change single fields) says which base formats, units and
    calibration. ``calib_text`` defaults to the built-in "wiki-calib"; with a text of your
    own, give its name or path as ``calib_name`` too, so that options added later can be
    measured on the same windows. ``max_kl`` is a quality floor: options whose (measured
    or estimated) KL from the float model exceeds it are left out of the family, and so
    are the copies only they use."""
    from elastiq.data import load_text

    o = BuildOptions.of(options, **overrides)
    own_text = calib_text is not None
    fmts = check_formats(o.formats)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    t0 = time.perf_counter()
    model.eval()
    units = find_units(model, o.unit, o.embedding)
    for f in fmts:
        if o.embedding and f.axis % 2 != 1:
            raise ValueError(f"format {f.name} blocks along axis {f.axis} and cannot pack an embedding: "
                             "build with embedding=False (--no-embedding)")
    calib_text = calib_text or load_text("wiki-calib")
    probe_ids, measure_ids = calibration_ids(tokenizer, calib_text, o.calib_tokens, o.context)
    rest, aliases, rest_bytes = _rest(model, units)
    hessians = _hessians(model, units, tokenizer, calib_text, o.method)
    copies, unit_bytes, unit_cost = _pack_and_probe(model, units, fmts, probe_ids, o.seed, progress, o.method, hessians)
    del hessians
    chain = build_chain([F.spec(f) for f in fmts], [u.name for u in units], unit_bytes, unit_cost, rest_bytes)
    measured, bases = _measure_along(chain, _Quality(model, measure_ids, units, copies), len(fmts), o.measure, progress)
    est = estimate_cost(chain, measured)
    family = _family(chain, est, o.max_kl, o.storage_limit)
    metas = {m: artifact.module_meta(q) for (u, i), mods in copies.items() if i == 0 for m, q in mods.items()}
    info = {"source": source, "calib": calib_name or (None if own_text else "wiki-calib"), "unit": o.unit, "method": o.method,
            "embedding": o.embedding, "calib_tokens": int(probe_ids.numel()), "context": o.context, "seed": o.seed,
            "build_seconds": None, "storage_limit": o.storage_limit, "max_kl": o.max_kl}
    qual = {"measure": "KL(float || option) per token, nats, on calibration windows not used to probe",
            "measured": {str(k): v for k, v in measured.items()}, "bases": bases,
            "estimated": [float(x) for x in est], "proxy": [float(x) for x in chain.option_cost()]}
    info["build_seconds"] = round(time.perf_counter() - t0, 1)
    return artifact.write(out, config=model.config, tokenizer=tokenizer, units=units, chain=chain, family=family,
                          copy_tensors=lambda u, i: {m: artifact.module_tensors(q) for m, q in copies[(u, i)].items()},
                          modules=metas, rest=rest, rest_aliases=aliases, quality=qual, info=info, overwrite=overwrite)


def _pack_and_probe(model, units, fmts, probe_ids, seed: int, progress: bool, method: str = "rtn", hessians=None):
    """Steps 1 and 2: every unit packed in every base format ({(unit, base): {module: packed}}),
    the bytes of each (units x bases), and each one's estimated quality cost from one probe pass."""
    probed = [m for u in units for m in u.modules + u.tied]
    probes = record_probes(model, probed, probe_ids, seed=seed)
    copies: dict[tuple[int, int], dict[str, nn.Module]] = {}
    unit_bytes = np.zeros((len(units), len(fmts)), dtype=np.int64)
    unit_cost = np.zeros((len(units), len(fmts)))
    with _progress(progress) as prog:
        task = prog.add_task("packing and probing", total=len(units) * len(fmts))
        for u, un in enumerate(units):
            for i, f in enumerate(fmts):
                copies[(u, i)] = {m: pack(model.get_submodule(m), f, method, hessians[m] if hessians and m in hessians else None)
                                  for m in un.modules}
                for m, q in copies[(u, i)].items():
                    w = model.get_submodule(m).weight.detach().float()
                    delta = q.weight().float() - w
                    kind = "embedding" if isinstance(q, QuantEmbedding) else "linear"
                    unit_cost[u, i] += output_cost(probes[m], delta, kind)
                    unit_cost[u, i] += sum(output_cost(probes[h], delta, "linear") for h in un.tied)
                    unit_bytes[u, i] += q.nbytes
                prog.advance(task)
    return copies, unit_bytes, unit_cost


def _measure_along(chain, quality: _Quality, n_bases: int, measure: int, progress: bool):
    """Step 4: the real KL of each base, and of ``measure`` options spread evenly by size along the chain."""
    sizes = chain.option_bytes()
    targets = np.linspace(sizes[0], sizes[-1], max(2, measure))
    points = sorted({int(np.argmin(np.abs(sizes - t))) for t in targets})
    assignments = chain.assignments()
    measured: dict[int, float] = {}
    with _progress(progress) as prog:
        task = prog.add_task("measuring KL along the chain", total=len(points) + n_bases)
        bases = []
        for i in range(n_bases):
            bases.append(quality.kl(np.full(len(quality.units), i)))
            prog.advance(task)
        for k in points:
            measured[k] = quality.kl(assignments[k])
            prog.advance(task)
    return measured, bases


def _family(chain, est, max_kl: float | None, storage_limit: int | None):
    """Step 5: the options kept: under the quality floor, then pruned to the storage limit."""
    keep = range(chain.n_options) if max_kl is None else [k for k in range(chain.n_options) if k == 0 or est[k] <= max_kl]
    family = family_of(chain, keep)
    return family if storage_limit is None else prune(chain, storage_limit, family)


def _rest(model: nn.Module, units) -> tuple[dict, dict, int]:
    """The float state outside the units (each storage once, with aliases for ties), and
    the bytes it takes when hosted."""
    owned = {m for u in units for m in u.modules + u.tied}
    rest, aliases, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        if key.rpartition(".")[0] in owned:
            continue
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ptr in seen:
            aliases[key] = seen[ptr]
        else:
            seen[ptr] = key
            rest[key] = t.detach().clone()
    unit_params = {id(p): p for m in owned for p in model.get_submodule(m).parameters(recurse=False)}
    return rest, aliases, weight_bytes(model) - sum(p.numel() * p.element_size() for p in unit_params.values())
