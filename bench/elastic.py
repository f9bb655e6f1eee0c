"""Elastic hosting of SmolLM2-135M: granularity, storage, quality along the chain, switch
time and memory under a trace, against (a) one whole-model file per base format and
(b) the chain without pruning, all measured in this run.

    .venv/bin/python bench/elastic.py --work ~/.cache/elastiq/bench-elastic   # 15-45 minutes here
    .venv/bin/python bench/elastic.py --work ~/.cache/elastiq/bench-elastic --only prune,switch
    .venv/bin/python bench/markdown.py elastic            # the tables in docs/elastic.md

Writes bench/results/elastic.json, elastic_quality.png and elastic_trace.png. Swap
timings and the trace replay run in a fresh process (the parent holds the float model
and the baseline models, which would swamp its memory readings).
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory import rss_bytes, trim_heap  # noqa: E402  (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def host_child(artifact: str, out: str, repeats: int, threads: int) -> None:
    """In a fresh process: swap times (neighbours, extremes), then a trace replay with the
    process's resident memory after each transition."""
    from elastiq.elastic import ElasticModel

    torch.set_num_threads(threads)
    base_rss = rss_bytes()
    h = ElasticModel(artifact)
    opened_rss = rss_bytes()
    o = h.options
    h.swap(o[0])
    rng = np.random.default_rng(0)
    neighbour = []
    for k in sorted(rng.choice(len(o) - 1, size=repeats * 8, replace=False)):
        h.swap(o[k])
        for target in (o[k + 1], o[k]):
            neighbour.append(h.swap(target).seconds)
    extremes = []
    for _ in range(repeats):
        for target in (o[-1], o[0]):
            extremes.append(h.swap(target).seconds)
    sizes = h.sizes
    budgets = [sizes[o[0]], sizes[o[len(o) // 4]], sizes[o[len(o) // 2]], sizes[o[3 * len(o) // 4]], sizes[o[-1]],
               sizes[o[len(o) // 2]], sizes[o[0]], sizes[o[-1]], sizes[o[len(o) // 3]]]
    trace = []
    for b in budgets:
        tr = h.apply_budget(int(b))
        trace.append({"budget": int(b), "option": h.option, "weights": int(sizes[h.option]),
                      "swap_ms": None if tr is None else tr.seconds * 1e3, "rss": rss_bytes()})
    Path(out).write_text(json.dumps({"neighbour_s": neighbour, "extremes_s": extremes, "trace": trace,
                                     "base_rss": base_rss, "opened_rss": opened_rss}))


def reload_child(model_dir: str, out: str, repeats: int, threads: int) -> None:
    """In a fresh process: time to load a whole packed model file (the baseline's switch)."""
    import elastiq

    torch.set_num_threads(threads)
    elastiq.load(model_dir)  # warm the page cache and the imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m, _ = elastiq.load(model_dir)
        times.append(time.perf_counter() - t0)
        del m
    Path(out).write_text(json.dumps({"seconds": times}))


def child(args: list[str], timeout: int = 1800) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, "-u", __file__, *args, f.name], check=True, timeout=timeout)
        return json.loads(Path(f.name).read_text())


def below_base_line(points, bases) -> list[dict]:
    """Each measured option against the straight line between its neighbouring bases."""
    xs = sorted(bases, key=lambda b: b["weights"])
    out = []
    for p in points:
        line = float(np.interp(p["weights"], [b["weights"] for b in xs], [b["ppl"] for b in xs]))
        out.append({**p, "base_line_ppl": line, "no_worse": p["ppl"] <= line * (1 + 1e-9)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="int8,int6,nxfp4,int3")
    ap.add_argument("--points", type=int, default=10, help="chain options whose perplexity is measured")
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prune", default="0.9,0.75,0.5", help="storage limits to prune to, as shares of the full artifact")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the artifact and base files here and reuse them (default: a temporary directory)")
    ap.add_argument("--only", default="", help="redo only these parts (quality, prune, switch, lrec), keeping the rest "
                                               "of bench/results/elastic.json; needs --work from an earlier run")
    ap.add_argument("--lrec-mib", type=float, default=59.5, help="lrec part: correct the chain option nearest this size")
    ap.add_argument("--lrec-steps", type=int, default=40)
    ap.add_argument("--_host", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_reload", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._host:
        return host_child(*a._host, a.repeats, a.threads)
    if a._reload:
        return reload_child(*a._reload, a.repeats, a.threads)
    only = {p for p in a.only.split(",") if p}
    if only - {"quality", "prune", "switch", "lrec"} or (only and a.work is None):
        sys.exit("--only takes quality, prune, switch, lrec (comma-separated), with the --work of an earlier run")
    work = a.work or Path(tempfile.mkdtemp(prefix="elastic-bench-"))
    try:
        run(a, work, only)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(a, work: Path, only: set) -> None:
    import elastiq
    from elastiq.data import load_text
    from elastiq.elastic import Artifact, ElasticModel, build, prune_artifact
    from elastiq.evaluate import evaluate
    from rich.console import Console

    console = Console()
    torch.set_num_threads(a.threads)
    formats = a.formats.split(",")
    res = json.loads((RESULTS / "elastic.json").read_text()) if only else {}
    todo = set(only or {"build", "quality", "prune", "switch", "lrec"})
    fp, tok = elastiq.load("smollm2-135m")
    text = load_text("wiki-eval")

    def ppl(model):
        return evaluate(model, tok, text, max_tokens=a.eval_tokens, context=1024, progress=False).perplexity

    art = work / "smollm2.elastic"
    if not (art / "elastic.json").is_file():
        build(copy.deepcopy(fp), tok, art, formats=formats, source="smollm2-135m")
        todo.add("build")
    for f in formats:  # (a) one whole-model file per base format
        if not (work / f"whole-{f}").is_dir():
            elastiq.save(elastiq.quantize(copy.deepcopy(fp), f, embedding="same", progress=False), work / f"whole-{f}",
                         tokenizer=tok)
    A = Artifact(art)
    build_s = A.manifest["info"]["build_seconds"]
    sizes, opts = A.option_bytes, A.family.options
    steps = -np.diff(sizes[opts])
    if "build" in todo:
        console.print(f"built in {build_s:.0f} s")
        res.update({
            "meta": {"model": "smollm2-135m", "formats": formats, "unit": "linear", "embedding": True,
                     "eval_tokens": a.eval_tokens, "threads": a.threads, "repeats": a.repeats,
                     "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "build_seconds": build_s},
            "options": len(opts), "largest_option_bytes": int(sizes[opts[0]]), "smallest_option_bytes": int(sizes[opts[-1]]),
            "median_step_bytes": float(np.median(steps)), "max_step_bytes": int(steps.max()),
            "artifact_bytes": dir_bytes(art), "all_options_bytes": int(sum(int(sizes[k]) for k in opts))})

    if "build" in todo or "quality" in todo:
        bases = []
        for f in formats:
            d = work / f"whole-{f}"
            q, _ = elastiq.load(d)
            bases.append({"format": f, "weights": elastiq.weight_bytes(q), "file_bytes": dir_bytes(d), "ppl": ppl(q)})
            console.print(f"base {f}: {bases[-1]['weights'] / 2**20:.2f} MiB, ppl {bases[-1]['ppl']:.3f}")
            del q
        base_steps = -np.diff(sorted((b["weights"] for b in bases), reverse=True))
        res.update({"bases": bases, "float_ppl": ppl(fp), "baseline_options": len(bases),
                    "baseline_median_step_bytes": float(np.median(base_steps)), "baseline_max_step_bytes": int(base_steps.max()),
                    "sum_base_bytes": sum(b["file_bytes"] for b in bases)})
        res["granularity_ratio"] = res["baseline_median_step_bytes"] / res["median_step_bytes"]
        res["artifact_vs_sum_base"] = res["artifact_bytes"] / res["sum_base_bytes"]
        res["storage_ratio"] = res["all_options_bytes"] / res["artifact_bytes"]
    if "lrec" in todo:  # LREC adapters on one option, stored as one more option (elastiq.lrec.correct_option)
        from elastiq.lrec.elastic import correct_option

        target = min(opts, key=lambda k: abs(sizes[k] - a.lrec_mib * 2**20))
        lrec_art = work / "lrec.elastic"
        shutil.rmtree(lrec_art, ignore_errors=True)
        shutil.copytree(art, lrec_art)
        t0 = time.perf_counter()
        entry = correct_option(lrec_art, int(target), fp, tok, rank=16, steps=a.lrec_steps, adapter_dtype="bfloat16")
        seconds = time.perf_counter() - t0
        h = ElasticModel(lrec_art)
        extra = A.chain.n_options
        same = min((k for k in opts if sizes[k] <= h.sizes[extra]), key=lambda k: -sizes[k])  # the chain's option that fits
        row = {"option": int(target), "option_bytes": int(sizes[target]), "adapter_bytes": entry["bytes"],
               "steps": a.lrec_steps, "seconds": seconds, "kl_before": A.manifest["quality"]["estimated"][target],
               "kl_after": entry["kl"], "same_size_option": int(same), "same_size_option_bytes": int(sizes[same]),
               "same_size_option_kl": A.manifest["quality"]["estimated"][same]}
        for name, k in (("ppl_before", target), ("ppl_after", extra), ("ppl_same_size_option", same)):
            h.swap(k)
            row[name] = ppl(h.model)
        console.print(f"lrec on option {target}: {row}")
        res["lrec_option"] = row
        del h
    del fp
    trim_heap()

    if "quality" in todo:  # along the chain, through the host
        h = ElasticModel(art)
        targets = np.linspace(sizes[opts[0]], sizes[opts[-1]], a.points)
        points = []
        for k in sorted({min(opts, key=lambda k: abs(sizes[k] - t)) for t in targets}):
            h.swap(k)
            points.append({"option": int(k), "weights": int(sizes[k]), "ppl": ppl(h.model),
                           "kl_estimated": A.manifest["quality"]["estimated"][k]})
            console.print(f"option {k}: {sizes[k] / 2**20:.2f} MiB, ppl {points[-1]['ppl']:.3f}")
        del h
        trim_heap()
        res["points"] = below_base_line(points, res["bases"])
        res["all_points_no_worse_than_base_line"] = all(p["no_worse"] for p in res["points"])

    if "prune" in todo:  # (b) pruned families against the unpruned chain
        pruned = []
        for share in [float(s) for s in a.prune.split(",") if s]:
            limit = int(A.family.storage_bytes * share)
            p, report = prune_artifact(A, work / "pruned", limit, overwrite=True)
            P = Artifact(p)
            est = P.manifest["quality"]["estimated"]
            pruned.append({"share": share, "limit_bytes": limit, "artifact_bytes": dir_bytes(p), **report,
                           "options": len(P.family.options),
                           "kl_estimated_largest_option": est[P.family.options[0]],
                           "kl_estimated_smallest_option": est[P.family.options[-1]]})
        res["pruned"] = pruned

    if "switch" in todo:
        host = child(["--threads", str(a.threads), "--repeats", str(a.repeats), "--_host", str(art)])
        reload = child(["--threads", str(a.threads), "--repeats", str(a.repeats), "--_reload", str(work / f"whole-{formats[0]}")])
        res.update({"switch_ms_neighbour_median": statistics.median(host["neighbour_s"]) * 1e3,
                    "switch_ms_extremes_median": statistics.median(host["extremes_s"]) * 1e3,
                    "reload_whole_file_ms_median": statistics.median(reload["seconds"]) * 1e3,
                    "trace": host["trace"], "host_base_rss": host["base_rss"], "host_opened_rss": host["opened_rss"]})
        res["switch_speedup_extremes_vs_reload"] = res["reload_whole_file_ms_median"] / res["switch_ms_extremes_median"]
    res.setdefault("meta", {})["updated"] = {part: time.strftime("%Y-%m-%d") for part in todo}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "elastic.json").write_text(json.dumps(res, indent=1))
    plots(res)
    show(res, console)


def show(res: dict, console) -> None:
    from rich.table import Table

    t = Table(title="elastic hosting, SmolLM2-135M")
    for col in ("measure", "chain", "(a) whole files", "ratio"):
        t.add_column(col, justify="right" if col != "measure" else "left")
    n = res["baseline_options"]
    t.add_row("options", str(res["options"]), str(n), f"{res['options'] / n:.0f}x")
    t.add_row("median step MiB", f"{res['median_step_bytes'] / 2**20:.3f}", f"{res['baseline_median_step_bytes'] / 2**20:.2f}",
              f"{res['granularity_ratio']:.0f}x finer")
    t.add_row("storage MiB", f"{res['artifact_bytes'] / 2**20:.1f}", f"{res['sum_base_bytes'] / 2**20:.1f}",
              f"{res['artifact_vs_sum_base']:.3f}")
    t.add_row("every option as a file, MiB", f"{res['all_options_bytes'] / 2**20:.0f}", "", f"{res['storage_ratio']:.0f}x the artifact")
    t.add_row("switch ms (neighbour / extremes)", f"{res['switch_ms_neighbour_median']:.1f} / {res['switch_ms_extremes_median']:.0f}",
              f"{res['reload_whole_file_ms_median']:.0f} (reload)", f"{res['switch_speedup_extremes_vs_reload']:.1f}x")
    console.print(t)
    console.print(f"every measured option no worse than the line between bases: {res['all_points_no_worse_than_base_line']}")


def plots(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = res["points"]
    ax.plot([p["weights"] / 2**20 for p in pts], [p["ppl"] for p in pts], "o-", label="chain options (measured)")
    bases = sorted(res["bases"], key=lambda b: b["weights"])
    ax.plot([b["weights"] / 2**20 for b in bases], [b["ppl"] for b in bases], "s--", color="gray", label="base models (a)")
    for b in bases:
        ax.annotate(b["format"], (b["weights"] / 2**20, b["ppl"]), textcoords="offset points", xytext=(4, 6))
    ax.axhline(res["float_ppl"], color="green", lw=0.8, label=f"float ({res['float_ppl']:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("weights held, MiB")
    ax.set_ylabel("perplexity, wiki-eval")
    ax.set_title(f"SmolLM2-135M: {res['options']} options from {len(bases)} bases")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "elastic_quality.png", dpi=120)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    tr = res["trace"]
    x = range(len(tr))
    ax.step(x, [e["budget"] / 2**20 for e in tr], where="post", label="budget")
    ax.plot(x, [e["weights"] / 2**20 for e in tr], "o", label="weights of the option hosted")
    ax.plot(x, [(e["rss"] - res["host_opened_rss"]) / 2**20 for e in tr], "x", label="process RSS growth since opening")
    ax.set_xlabel("trace event")
    ax.set_ylabel("MiB")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "elastic_trace.png", dpi=120)


if __name__ == "__main__":
    main()
