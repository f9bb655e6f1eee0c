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
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from torch import nn

from elastiq import formats as F
from elastiq.calib import Hessians, calibration_windows
from elastiq.executors import Executor, JobCache
from elastiq.options import BuildOptions, CalibOptions
from elastiq.progress import progress_bar
from elastiq.quant import weight_bytes

from . import artifact
from .chain import build_chain, estimate_cost, family_of, prune
from .jobs import QualityWorker, decode, decode_meta, measure_keys, pack_job, pack_keys, unit_inputs, unpack_kl
from .sensitivity import record_probes
from .units import find_units

DEFAULT_FORMATS = BuildOptions.formats


@contextmanager
def _progress(enabled: bool, ex: Executor):
    """One bar per step, fed by the executor as jobs finish on any of its workers."""
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    tasks = {}
    with progress_bar(*cols, enabled=enabled) as p:
        def show(label, done, total):
            if label not in tasks:
                tasks[label] = p.add_task(f"{label} ({ex.describe()})", total=total)
            p.update(tasks[label], completed=done)

        ex.listen(show)
        try:
            yield p
        finally:
            ex.unlisten(show)


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


def _hessians(model, units, tokenizer, text: str, method: str):
    """The input Hessians of the units' linear layers on the calibration text (None for RTN bases)."""
    if method == "rtn":
        return None
    o = CalibOptions(method=method)
    linears = {m: model.get_submodule(m) for u in units for m in u.modules if isinstance(model.get_submodule(m), nn.Linear)}
    with Hessians(linears, o.sink_weight) as hs:
        for w in calibration_windows(tokenizer, text, o.tokens, o.context):
            model(w[None], use_cache=False)
    return hs


def measure_windows(artifact, tokenizer) -> torch.Tensor:
    """The windows an artifact's quality was measured on (to measure a new option alike)."""
    from elastiq.data import load_text

    info = artifact.manifest["info"]
    if not info.get("calib"):
        raise ValueError(f"{artifact.path} was built on a calibration text passed in code, not a named one: "
                         "measure the new option on windows of that text yourself")
    _, ids = calibration_ids(tokenizer, load_text(info["calib"]), info["calib_tokens"], info["context"])
    return ids


def build(model, tokenizer, out, options: BuildOptions | None = None, calib_text: str | None = None,
          calib_name: str | None = None, overwrite: bool = False, progress: bool = True, source: str = "",
          executor: Executor | None = None, jobs_dir=None, **overrides) -> Path:
    """Build the elastic family of ``model`` (a float model, changed in place: pass a copy
    to keep it) and write it to ``out``. ``options`` (:class:`elastiq.options.BuildOptions`;
    keyword ``overrides`` change single fields) says which base formats, units and
    calibration. ``calib_text`` defaults to the built-in "wiki-calib"; with a text of your
    own, give its name or path as ``calib_name`` too, so that options added later can be
    measured on the same windows. ``max_kl`` is a quality floor: options whose (measured
    or estimated) KL from the float model exceeds it are left out of the family, and so
    are the copies only they use.

    ``executor`` (:mod:`elastiq.executors`; default serial) runs the (unit, format) jobs
    and the measurements; the artifact is the same whatever the executor, for the same
    ``executor.threads``. With ``jobs_dir``, every finished job is kept there as it
    arrives, so that a build interrupted at any point resumes from what finished; the
    entries are removed once the artifact is written."""
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
    ex = executor or Executor()
    hessians = _hessians(model, units, tokenizer, calib_text, o.method)  # None for RTN bases
    cache = JobCache(jobs_dir) if jobs_dir is not None else None
    with _progress(progress, ex):
        encoded, copy_keys = _pack_and_probe(model, units, fmts, probe_ids, o.seed, ex, cache, o.method, hessians)
        del hessians
        unit_bytes = np.array([[encoded[(u, i)][1]["bytes"] for i in range(len(fmts))] for u in range(len(units))],
                              dtype=np.int64)
        unit_cost = np.array([[encoded[(u, i)][1]["cost"] for i in range(len(fmts))] for u in range(len(units))])
        chain = build_chain([F.spec(f) for f in fmts], [u.name for u in units], unit_bytes, unit_cost, rest_bytes)
        measured, bases, kl_keys = _measure_along(chain, model, measure_ids, units, encoded, copy_keys, fmts,
                                                  o.measure, ex, cache)
    est = estimate_cost(chain, measured)
    family = _family(chain, est, o.max_kl, o.storage_limit)
    metas = {m: meta for (u, i), (_, info) in encoded.items() if i == 0 for m, meta in info["modules"].items()}
    info = {"source": source, "calib": calib_name or (None if own_text else "wiki-calib"), "unit": o.unit, "method": o.method,
            "embedding": o.embedding, "calib_tokens": int(probe_ids.numel()), "context": o.context, "seed": o.seed,
            "build_seconds": None, "storage_limit": o.storage_limit, "max_kl": o.max_kl,
            "job_threads": ex.threads}  # the numbers depend on it (see elastiq.executors), not on the executor
    qual = {"measure": "KL(float || option) per token, nats, on calibration windows not used to probe",
            "measured": {str(k): v for k, v in measured.items()}, "bases": bases,
            "estimated": [float(x) for x in est], "proxy": [float(x) for x in chain.option_cost()]}
    info["build_seconds"] = round(time.perf_counter() - t0, 1)

    def copy_tensors(u, i):
        tensors = decode(encoded[(u, i)][0])[0]
        return {m: {k: tensors[f"{m}.{k}"] for k in artifact.stored_parts(meta, fmts[i])}
                for m, meta in encoded[(u, i)][1]["modules"].items()}

    path = artifact.write(out, config=model.config, tokenizer=tokenizer, units=units, chain=chain, family=family,
                          copy_tensors=copy_tensors, modules=metas, rest=rest, rest_aliases=aliases, quality=qual,
                          info=info, overwrite=overwrite)
    if cache is not None:
        cache.discard(list(copy_keys.values()) + kl_keys)
    return path


def _pack_and_probe(model, units, fmts, probe_ids, seed: int, ex: Executor, cache, method: str = "rtn",
                    hessians=None):
    """Steps 1 and 2: one probe pass here, then one job per (unit, base) wherever ``ex``
    runs jobs: the unit packed (by ``method``, with its layers' input Hessians), its bytes and its estimated quality cost. Returns
    {(unit, base): (encoded copy, its metadata)} and each job's key."""
    probed = [m for u in units for m in u.modules + u.tied]
    probes = record_probes(model, probed, probe_ids, seed=seed)
    inputs = [unit_inputs(model, un, probes, method, hessians) for un in units]
    del probes
    pairs = [(u, i) for u in range(len(units)) for i in range(len(fmts))]
    keys = pack_keys(units, inputs, fmts, ex.threads) if cache is not None else None
    shared = [ex.put(inp) for inp in inputs]  # each unit's inputs shipped once, read by its formats' jobs
    results = ex.map(pack_job, [(shared[u], fmts[i]) for u, i in pairs], keys=keys, cache=cache,
                     label="packing and probing")
    ex.release(*shared)
    encoded = {p: (r, decode_meta(r)) for p, r in zip(pairs, results)}
    return encoded, (dict(zip(pairs, keys)) if keys else {})


def _measure_along(chain, model, ids, units, encoded, copy_keys, fmts, measure: int, ex: Executor, cache):
    """Step 4: the real KL of each base, and of ``measure`` options spread evenly by size
    along the chain, by a pool of workers that each hold the model and every copy."""
    sizes = chain.option_bytes()
    targets = np.linspace(sizes[0], sizes[-1], max(2, measure))
    points = sorted({int(np.argmin(np.abs(sizes - t))) for t in targets})
    assignments = chain.assignments()
    levels = [np.full(len(units), i) for i in range(len(fmts))] + [assignments[k] for k in points]
    keys = measure_keys(model, ids, copy_keys, levels, ex.threads) if cache is not None else None
    blobs = {p: data for p, (data, _) in encoded.items()}
    args = (ex.put(model), ex.put(ids), units, ex.put(blobs), fmts)
    held = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + 2 * sum(map(len, blobs.values()))
    with ex.pool(QualityWorker, *args, memory=held) as pool:  # a worker holds the model, the copies and their bytes
        kls = [unpack_kl(r) for r in pool.map("kl", levels, keys=keys, cache=cache, label="measuring KL along the chain")]
    ex.release(*args)
    return dict(zip(points, kls[len(fmts):])), kls[: len(fmts)], keys or []


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
