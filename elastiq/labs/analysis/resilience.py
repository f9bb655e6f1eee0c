"""Fault-injection campaigns: bit flips against a golden run, for classifiers and LMs.

    from elastiq.labs.analysis.resilience import CampaignSpec, classifier_campaign, lm_campaign
    spec = CampaignSpec(kind="activation", trials=100, seed=0)     # one flip per run, every layer
    res = classifier_campaign(model, images, spec)                  # SDC rate per layer and overall
    res = lm_campaign(model, ids, CampaignSpec(kind="weight", site="scales", trials=50))

Each run applies its faults (``Fault``, sampled from a ``random.Random`` seeded by
(seed, layer, trial): the same spec gives the same faults), runs the model, and
compares with the golden (fault-free) run: for a classifier the top-1 label of each
image (a mismatch is a silent data corruption, SDC), for a language model the
next-token argmax at every position and the perplexity. Outputs with NaN or Inf
count as mismatches. Weight faults hit every input of the run; activation faults
hit the same neuron of every sample in the batch, so a run of B samples is B
injections.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as Fn

from .inject import Fault, Injector, activation_sites


@dataclass
class CampaignSpec:
    layers: list[str] | None = None  # fnmatch patterns; None = every injectable layer
    kind: str = "weight"  # weight | activation | both (one of each per run)
    site: str | None = None  # weight site: codes / scales / selectors / tensor_scale / value (None: elements)
    bits: list[int] | None = None  # bit positions to draw from (None: every bit of the site)
    flips: int = 1  # flips per run (of each kind), all in the run's layer
    trials: int = 50  # runs per layer (per_layer) or in all
    per_layer: bool = True  # False: each run draws its layer at random
    act_format: str = "fp32"  # the precision activations are held in at the faulty layer
    act_site: str | None = None
    range_detector: bool = False  # clamp flipped activations to the profiled range (GoldenEye)
    seed: int = 0

    def check(self):
        if self.kind not in ("weight", "activation", "both"):
            raise ValueError(f"kind must be weight, activation or both, got {self.kind!r}")
        for name in ("trials", "flips"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _progress(total: int, what: str, enabled: bool):
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from elastiq.progress import progress_bar

    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"), TimeRemainingColumn())
    prog = progress_bar(*cols, enabled=enabled)
    return prog, prog.add_task(what, total=total)


def output_shapes(model, layers, example) -> dict[str, tuple]:
    """Per-sample output shape of each layer for one example batch."""
    modules = dict(model.named_modules())
    shapes, hooks = {}, []
    for n in layers:
        hooks.append(modules[n].register_forward_hook(lambda m, a, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:]))))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def plan(inj: Injector, spec: CampaignSpec, shapes: dict | None = None) -> list[tuple[str, list[Fault]]]:
    """The campaign's runs: (layer, faults) each, reproducible from ``spec.seed``."""
    spec.check()
    layers = inj.select(spec.layers)
    if spec.kind in ("activation", "both") and shapes is None:
        raise ValueError("activation faults need the layers' output shapes (output_shapes)")
    runs = []
    slots = [(layer, t) for layer in layers for t in range(spec.trials)] if spec.per_layer else \
        [(None, t) for t in range(spec.trials)]
    for layer, t in slots:
        rng = random.Random(f"{spec.seed}:{layer}:{t}")
        layer = layer or rng.choice(layers)
        faults = []
        for _ in range(spec.flips):
            if spec.kind in ("weight", "both"):
                faults.append(_draw(inj, rng, layer, "weight", spec.site, spec.bits, spec, None))
            if spec.kind in ("activation", "both"):
                faults.append(_draw(inj, rng, layer, "activation", spec.act_site, spec.bits, spec, shapes[layer]))
        runs.append((layer, faults))
    return runs


def _draw(inj, rng, layer, kind, site, bits, spec, shape):
    bit = None
    if bits:
        bit = rng.choice(list(bits))
    return inj.sample(rng, layer, kind, site=site, bit=bit, act_format=spec.act_format, act_shape=shape)


def _act_formats(spec, layer):
    return {layer: spec.act_format} if spec.kind in ("activation", "both") and spec.act_format != "fp32" else {}


# ---- classifiers -------------------------------------------------------------------
def _top2_margin(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), -1).topk(2, -1).values
    return p[:, 0] - p[:, 1]


@torch.no_grad()
def classifier_campaign(model, x: torch.Tensor, spec: CampaignSpec, injector: Injector | None = None,
                        ranges: dict | None = None, progress: bool = True) -> dict:
    """Top-1 mismatch (SDC) rate per layer and overall, against the golden labels of ``x``.
    ``ranges`` (profile_ranges) is used when ``spec.range_detector``."""
    model.eval()
    inj = injector or Injector(model)
    layers = inj.select(spec.layers)
    shapes = output_shapes(model, layers, x[:1]) if spec.kind != "weight" else None
    runs = plan(inj, spec, shapes)
    if spec.range_detector and not ranges:
        raise ValueError("the range detector needs the layers' profiled ranges (profile_ranges on training data)")
    goldens = {}
    records = []
    prog, task = _progress(len(runs), "fault injection", progress)
    with prog:
        for layer, faults in runs:
            fmts = _act_formats(spec, layer)
            key = tuple(fmts.items())
            if key not in goldens:
                with inj.inject((), fmts):
                    goldens[key] = model(x).argmax(-1)
            with inj.inject(faults, fmts, ranges if spec.range_detector else None):
                out = model(x)
            bad = (out.argmax(-1) != goldens[key]) | ~torch.isfinite(out).all(-1)
            records.append({"layer": layer, "faults": [f.as_dict() for f in faults], "mismatches": int(bad.sum()),
                            "injections": x.shape[0]})
            prog.advance(task)
    golden = model(x)
    return {"spec": asdict(spec), "samples": x.shape[0], "golden_top2_margin": float(_top2_margin(golden).mean()),
            **summarize(records)}


# ---- language models ---------------------------------------------------------------
@torch.no_grad()
def _lm_logits(model, ids):
    out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()


def _nll(logits, ids):
    return Fn.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@torch.no_grad()
def lm_campaign(model, ids: torch.Tensor, spec: CampaignSpec, injector: Injector | None = None,
                progress: bool = True, goldens: dict | None = None) -> dict:
    """Next-token mismatch rate and perplexity change per layer and overall; ``ids`` is a
    (batch, tokens) tensor of token windows. ``goldens`` (a dict, filled on first use)
    lets several campaigns on the same model and ids share their golden runs."""
    model.eval()
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids must be (batch, tokens) with at least 2 tokens, got {tuple(ids.shape)}")
    inj = injector or Injector(model)
    layers = inj.select(spec.layers)
    shapes = output_shapes(model, layers, ids[:1]) if spec.kind != "weight" else None
    runs = plan(inj, spec, shapes)
    goldens = {} if goldens is None else goldens
    records = []
    prog, task = _progress(len(runs), "fault injection", progress)
    with prog:
        for layer, faults in runs + [(None, None)]:
            fmts = _act_formats(spec, layer) if layer else {}
            key = tuple(fmts.items())
            if key not in goldens:
                with inj.inject((), fmts):
                    g = _lm_logits(model, ids)
                goldens[key] = (g.argmax(-1), math.exp(float(_nll(g, ids))))
            if layer is None:  # the plain golden run, for the report
                break
            top1, ppl0 = goldens[key]
            with inj.inject(faults, fmts):
                out = _lm_logits(model, ids)
            bad = (out.argmax(-1) != top1) | ~torch.isfinite(out).all(-1)
            nll = float(_nll(out, ids))
            ppl = math.exp(nll) if math.isfinite(nll) and nll < 700 else math.inf
            records.append({"layer": layer, "faults": [f.as_dict() for f in faults], "mismatches": int(bad.sum()),
                            "injections": bad.numel(), "delta_ppl": ppl - ppl0})
            prog.advance(task)
    return {"spec": asdict(spec), "tokens": ids.numel(), "golden_perplexity": goldens[()][1],
            **summarize(records)}


# ---- results -----------------------------------------------------------------------
def group_of(layer: str) -> str:
    """A layer's name with its block number replaced: model.layers.*.mlp.down_proj."""
    return re.sub(r"\.\d+\.", ".*.", layer)


def summarize(records: list[dict]) -> dict:
    """Mismatch rates overall, per layer, per layer group, and per (site, bit)."""
    def agg(rs):
        inj = sum(r["injections"] for r in rs)
        mis = sum(r["mismatches"] for r in rs)
        out = {"runs": len(rs), "injections": inj, "mismatches": mis, "rate": mis / inj if inj else 0.0}
        if rs and "delta_ppl" in rs[0]:
            d = sorted(r["delta_ppl"] for r in rs)
            finite = [v for v in d if math.isfinite(v)]
            out["median_delta_ppl"] = d[len(d) // 2]
            out["mean_delta_ppl"] = sum(finite) / len(finite) if finite else math.inf
            out["nonfinite_runs"] = len(d) - len(finite)
        return out

    def by(keyf):
        groups: dict = {}
        for r in records:
            for k in keyf(r):
                groups.setdefault(k, []).append(r)
        return {k: agg(v) for k, v in groups.items()}

    return {
        "overall": agg(records),
        "per_layer": by(lambda r: [r["layer"]]),
        "per_group": by(lambda r: [group_of(r["layer"])]),
        "per_bit": by(lambda r: sorted({f"{f['kind']}:{f['site']}:{f['bit']}" for f in r["faults"]})),
        "records": records,
    }


def table(result: dict, title: str, by: str = "per_layer"):
    """A rich table of mismatch rates (per_layer, per_group or per_bit)."""
    from rich.table import Table

    t = Table(title=title)
    for col in (by.replace("per_", ""), "runs", "injections", "mismatch rate"):
        t.add_column(col, justify="left" if col == by.replace("per_", "") else "right")
    lm = "median_delta_ppl" in result["overall"]
    if lm:
        t.add_column("median Δppl", justify="right")
        t.add_column("non-finite", justify="right")
    rows = list(result[by].items()) + [("overall", result["overall"])]
    for k, v in rows:
        cells = [k, str(v["runs"]), str(v["injections"]), f"{v['rate']:.4%}"]
        if lm:
            cells += [f"{v['median_delta_ppl']:+.4g}", str(v["nonfinite_runs"])]
        t.add_row(*cells)
    return t


def plot(results: dict[str, dict], path, title: str, by: str = "per_layer") -> None:
    """Grouped bars of mismatch rate per layer (or group / bit), one colour per result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elastiq.cache import atomic_write_bytes
    import io

    keys = []
    for r in results.values():
        keys += [k for k in r[by] if k not in keys]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(keys) * max(1, len(results)) ** 0.5), 4))
    w = 0.8 / max(1, len(results))
    for i, (name, r) in enumerate(results.items()):
        vals = [r[by].get(k, {}).get("rate", 0.0) for k in keys]
        ax.bar([j + i * w for j in range(len(keys))], vals, w, label=name)
    ax.set_xticks([j + w * (len(results) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.split(".")[-1] if by == "per_layer" else k for k in keys], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mismatch rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def activation_site_sizes(model, layer, example, act_format="fp32") -> dict:
    """Sites of one sample's output of ``layer`` held in ``act_format``."""
    shape = output_shapes(model, [layer], example[:1])[layer]
    return activation_sites(act_format, shape)


__all__ = ["CampaignSpec", "Fault", "Injector", "classifier_campaign", "lm_campaign", "plan", "plot", "summarize",
           "table", "output_shapes", "group_of", "stored_injector", "bit_study"]


# ---- which stored format survives a flipped bit best ---------------------------------
def stored_injector(model, storage, layers) -> Injector:
    """Store ``model``'s ``layers`` in ``storage`` (a float dtype such as fp16, or an elastiq
    format, packed) in place, and return an Injector over what is stored."""
    from elastiq.quant import quantize_model

    from .inject import store_weights
    from .precision import precision

    prec = precision(storage)
    if prec.dtype is not None:
        store_weights(model, prec.dtype)
        return Injector(model, weight_dtype=prec.dtype, layers=layers)
    quantize_model(model, {p: prec.fmt for p in layers}, progress=False)
    return Injector(model, decoded=True, layers=layers)


def bit_study(model, ids: torch.Tensor, storage: str, trials_per_bit: int = 3, layers=("model.layers.*",),
              sites=None, exclude=(), seed: int = 0, progress: bool = True) -> dict:
    """For a model stored in ``storage`` (a float dtype such as fp16, or an elastiq format),
    flip each bit position of each stored site ``trials_per_bit`` times (a random weight of
    a random layer each time) and measure next-token mismatch and perplexity change.
    ``sites`` picks the sites (default all the format stores), ``exclude`` drops some.
    ``model`` is changed in place (weights rounded or packed): pass a copy."""
    inj = stored_injector(model, storage, layers)
    first = inj.layers[0]
    all_sites = inj.weight_sites(first)
    for s in sites or ():
        if s not in all_sites:
            raise ValueError(f"{storage} stores no {s!r}; it stores {', '.join(all_sites)}")
    rows = []
    goldens: dict = {}
    for site in sites or [s for s in all_sites if s not in exclude]:
        width = all_sites[site][1]
        for bit in range(width):
            spec = CampaignSpec(layers=list(layers), site=site, bits=[bit], trials=trials_per_bit, per_layer=False,
                                seed=seed)
            r = lm_campaign(model, ids, spec, injector=inj, progress=progress, goldens=goldens)
            rows.append({"storage": storage, "site": site, "bit": bit, **{k: v for k, v in r["overall"].items()}})
    return {"storage": storage, "sites": {k: {"entries_in_first_layer": v[0], "bits": v[1]} for k, v in all_sites.items()},
            "golden_perplexity": goldens[()][1], "rows": rows}
