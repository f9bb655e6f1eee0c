"""The elastic build on every executor, and what it would take for 1B to 70B models.

    .venv/bin/python bench/scale.py --work ~/.cache/elastiq/bench-scale      # three builds of SmolLM2-135M
    .venv/bin/python bench/scale.py --markdown                               # docs/scale.md from the JSON

1. Builds the built-in model's elastic family (default options, one torch thread per job)
   serially, on 2 local processes and on a local Ray cluster of 2 CPUs, timing each step
   (the probe pass, the (unit, format) jobs, the measurements, the write) and checking
   that the three artifacts are identical byte for byte (the manifest without its timing).
2. From the serial build, each job's time against its unit's size: a line per base format
   (time = a + b x weights), the embedding's job, the probe pass and one measurement.
3. On paper, calibrated by these: the build time and worker-hours of Llama-class 1B, 8B
   and 70B models on 1, 8 and 64 workers (jobs placed longest first on the earliest free
   worker; the probe pass on one node; measurements on up to one worker each).

Writes bench/results/scale.json and docs/scale.md.
"""
from __future__ import annotations

import argparse
import heapq
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "scale.json"
DOC = ROOT / "docs" / "scale.md"
PACKING, MEASURING = "packing and probing", "measuring KL along the chain"


def timed_build(kind: str, out: Path, workers: int) -> dict:
    """One build of the built-in model on executor ``kind``; the time of every finished job."""
    import elastiq
    from elastiq.elastic import build
    from elastiq.executors import make_executor

    model, tok = elastiq.load("smollm2-135m")
    events: dict[str, list[float]] = {PACKING: [], MEASURING: []}
    t_start = time.perf_counter()
    ex = make_executor(kind, workers=None if kind == "serial" else workers, threads=1)
    t0 = time.perf_counter()
    ex.listen(lambda label, done, total: events[label].append(time.perf_counter() - t0))
    build(model, tok, out, executor=ex, progress=False, source="smollm2-135m")
    total = time.perf_counter() - t0
    ex.close()
    p, m = events[PACKING], events[MEASURING]
    return {"executor": kind, "workers": ex.workers, "threads": 1, "start_seconds": t0 - t_start, "seconds": total,
            "probe": p[0], "jobs": p[-1] - p[0], "measure": m[-1] - m[0], "write": total - m[-1],
            "job_gaps": list(np.diff(p)), "measure_gaps": list(np.diff(m))}


def unit_sizes():
    """(name, kind, weights) of the built-in model's units, in the build's order."""
    import elastiq
    from elastiq.elastic import find_units

    model, _ = elastiq.load("smollm2-135m")
    out = []
    for u in find_units(model):
        w = sum(model.get_submodule(m).weight.numel() for m in u.modules)
        out.append((u.name, u.kind, int(w)))
    return out, int(sum(p.numel() for p in model.parameters()))


def calibrate(serial: dict, units, formats) -> dict:
    """Per-format lines (seconds = a + b x weights) over the linear units' jobs, the embedding's
    jobs, and the step costs per weight of the model."""
    gaps = serial["job_gaps"]
    per_fmt = {}
    for i, f in enumerate(formats):
        xs = [w for u, (_, kind, w) in enumerate(units) if kind == "linear"]
        ys = [gaps[u * len(formats) + i] for u, (_, kind, _) in enumerate(units) if kind == "linear"]
        b, a = np.polyfit(xs, ys, 1)
        emb = [gaps[u * len(formats) + i] for u, (_, kind, _) in enumerate(units) if kind == "embedding"]
        per_fmt[f] = {"a": float(a), "b": float(b), "embedding_seconds": float(emb[0]) if emb else None,
                      "r2": float(np.corrcoef(xs, ys)[0, 1] ** 2)}
    meas = serial["measure_gaps"]
    return {"formats": per_fmt, "embedding_weights": next(w for _, k, w in units if k == "embedding"),
            "probe_seconds": serial["probe"], "measure_first_seconds": meas[0], "measure_seconds": float(np.median(meas[1:])),
            "measurements": len(meas), "write_seconds": serial["write"]}


def llama_1b():
    from elastiq.labs.planning.transformer import Transformer

    return Transformer("llama-3.2-1b", 16, 2048, 8192, 32, kv_heads=8, vocab=128256, gated_mlp=True,
                       tied_embeddings=True, source="meta-llama/Llama-3.2-1B config.json")


def linear_units(m) -> list[int]:
    """The weights of each linear unit of a Llama-class model (q, k, v, o, gate, up, down per layer)."""
    kvd = m.kv * m.head_dim
    return [m.hidden * m.hidden, kvd * m.hidden, kvd * m.hidden, m.hidden * m.hidden] + [m.ffn * m.hidden] * 3


def probe_store_bytes(m, tokens: int = 512) -> int:
    """The recorded inputs and output gradients of every linear unit, float32, as the store
    holds them (each unit its own copy of its input: q, k and v share one in the driver)."""
    kvd = m.kv * m.head_dim
    inputs = 6 * m.hidden + m.ffn  # q, k, v, o, gate, up read hidden-wide rows; down reads ffn-wide rows
    grads = 3 * m.hidden + 2 * kvd + 2 * m.ffn  # q, o, down write hidden-wide; k, v kv-wide; gate, up ffn-wide
    return 4 * tokens * m.layers * (inputs + grads)


def makespan(durations, workers: int) -> float:
    """Longest job first, each on the worker free earliest."""
    free = [0.0] * workers
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def project(cal: dict, base_params: int, workers_list=(1, 8, 64)) -> list[dict]:
    from elastiq.labs.planning.transformer import get

    rows = []
    for m in (llama_1b(), get("llama-3-8b"), get("llama-2-70b")):
        scale = m.params / base_params  # probe pass, a measurement and the write grow with the whole model
        jobs = []
        for f, line in cal["formats"].items():
            jobs += [line["a"] + line["b"] * w for w in linear_units(m)] * m.layers
            jobs.append(line["embedding_seconds"] * m.vocab * m.hidden / cal["embedding_weights"])
        for w in workers_list:
            meas_workers = min(w, cal["measurements"])
            measure = (cal["measure_first_seconds"] - cal["measure_seconds"]) * scale \
                + np.ceil(cal["measurements"] / meas_workers) * cal["measure_seconds"] * scale
            parts = {"probe": cal["probe_seconds"] * scale, "jobs": makespan(jobs, w), "measure": float(measure),
                     "write": cal["write_seconds"] * scale}
            total = sum(parts.values())
            rows.append({"model": m.name, "params": m.params, "workers": w, "job_count": len(jobs),
                         "job_seconds_sum": float(sum(jobs)), **{k: float(v) for k, v in parts.items()},
                         "hours": total / 3600, "worker_hours": w * total / 3600,
                         "model_gib_fp32": m.params * 4 / 2**30, "probe_store_gib": probe_store_bytes(m) / 2**30,
                         "measure_workers": meas_workers})
    return rows


def run(work: Path, workers: int) -> dict:
    """The three builds; the results file is written after each (a later --finish completes it)."""
    import torch

    from elastiq.elastic.artifact import differences
    from elastiq.options import BuildOptions

    work.mkdir(parents=True, exist_ok=True)
    r = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "cpus": __import__("os").cpu_count(),
         "machine": platform.processor() or platform.machine(), "model": "smollm2-135m",
         "formats": list(BuildOptions.formats), "builds": []}
    for kind in ("serial", "processes", "ray"):
        out = work / kind
        shutil.rmtree(out, ignore_errors=True)
        print(f"building on {kind} ...", flush=True)
        b = timed_build(kind, out, workers)
        b["differences_from_serial"] = differences(work / "serial", out)
        print({k: v for k, v in b.items() if not k.endswith("gaps")}, flush=True)
        r["builds"].append(b)
        RESULTS.write_text(json.dumps(r, indent=1))
    return r


def finish(r: dict) -> dict:
    """Calibration from the serial build, and the projection."""
    units, params = unit_sizes()
    cal = calibrate(r["builds"][0], units, r["formats"])
    return {**r, "units": len(units), "params": params, "calibration": cal, "projection": project(cal, params)}


def markdown(r: dict) -> str:
    b = {x["executor"]: x for x in r["builds"]}
    s = b["serial"]
    lines = [
        "# Scaling out: the build and the search on processes or a Ray cluster",
        "",
        "Building an elastic family is a sweep of independent jobs: every (unit, base format) copy",
        "is packed and its quality cost estimated from the recorded inputs and gradients, and",
        "options along the chain are measured against the float model. The plan search evaluates",
        "candidate parallel plans. `elastiq.executors` runs such sweeps in this process",
        "(`serial`), on this machine's cores (`processes`) or on a Ray cluster (`ray`, local or",
        "remote), and the results are the same whatever the executor.",
        "",
        "```bash",
        ".venv/bin/elastiq build smollm2-135m --out s.elastic --executor processes --workers 8",
        ".venv/bin/elastiq build smollm2-135m --out s.elastic --executor ray --ray-address 10.0.0.5:6379",
        ".venv/bin/elastiq perf llama-2-70b --search --devices 64 --batch 512 --executor ray",
        "```",
        "",
        "```python",
        "from elastiq.executors import make_executor",
        "",
        "with make_executor(\"serial\") as ex:          # or make_executor(\"processes\", workers=8), make_executor(\"ray\")",
        "    cubes = ex.map(pow, [(2, 3), (3, 3)])      # [8, 27], in the jobs' order",
        "assert cubes == [8, 27]",
        "```",
        "",
        "A script that uses the `processes` executor needs multiprocessing's guard around its",
        "main code (`if __name__ == \"__main__\":`): its workers start by importing the script.",
        "",
        "## How it works",
        "",
        "- **One interface** (`elastiq/executors.py`): `ex.map(fn, jobs)` runs independent jobs and",
        "  returns their results in the jobs' order, whatever order they finished in;",
        "  `ex.pool(Factory, *args)` gives workers that each build a state once (a whole model) and",
        "  run its methods on items; `ex.put(value)` ships a value shared by many jobs once (Ray:",
        "  the object store; processes: a file in memory-backed storage that each worker reads",
        "  once). Calibration (GPTQ per layer) fits the same shape: one job per layer given its",
        "  recorded inputs, or a pool whose workers hold the model.",
        "- **The build** runs one probe pass in the driver (recorded inputs and gradients of every",
        "  unit), puts each unit's float weights and probes into the store once, and maps one job",
        "  per (unit, format): pack, estimate the cost, return the packed tensors as bytes",
        "  (safetensors). Measuring options is a pool: each worker holds the float model and every",
        "  packed copy, and measures the KL of the options it is given. The chain, pruning and the",
        "  artifact writer stay in the driver.",
        "- **The same bytes.** Every job runs with the same number of torch threads in every",
        "  executor (`--threads`, default 1, so that the workers give the parallelism; a serial",
        "  build that wants every core uses `processes`, or `--threads N` for another artifact",
        "  with equally good numbers): a sum over a large tensor is split by thread count,",
        "  so its last bits change with it (measured: the cost sums at 1, 2, 4 and 8 threads all",
        "  differ in their last bits). The driver gathers results in the jobs' order, so the",
        "  chain, every stored tensor and every checksum equal the serial build's. Nodes of a",
        "  cluster need the same CPU kind, torch and elastiq for that to hold.",
        "- **Workers that die** are retried: Ray resubmits a task (`max_retries`) and restarts an",
        "  actor; the processes executor starts a new pool and submits the unfinished jobs again",
        "  (3 times, then one error line); a pool's worker rebuilds its state. Tests kill a",
        "  worker in each step of a build (on Ray: a task's worker, then a measuring actor) and",
        "  get the identical artifact.",
        "- **Resume.** `elastiq build` keeps every finished job in `~/.cache/elastiq/build-jobs`",
        "  as it arrives, under a sha256 of the job's inputs (the unit's weights, its probes,",
        "  the format, the thread count, torch's version), written whole and checked when read.",
        "  An interrupted build started again takes what finished from there; the artifact",
        "  itself is still written in a temporary folder and renamed into place, so there is",
        "  never a half-written one. The entries go once the artifact is written (`--no-resume`:",
        "  keep nothing).",
        "- **Progress** across workers: the driver hears of every finished job and draws one bar",
        "  per step.",
        "- **The search** (`perf --search`) evaluates candidate plans in batches (`plans_per_job`)",
        "  on the executor; results are gathered in the candidates' order and sorted stably, so",
        "  the ranking equals the serial one (tested on processes and Ray).",
        "",
        "## Results",
        "",
        "```bash",
        ".venv/bin/python bench/scale.py --work ~/.cache/elastiq/bench-scale",
        "```",
        "",
        f"SmolLM2-135M, bases {', '.join(r['formats'])}, {r['units']} units, default build options; one torch",
        f"thread per job, 2 workers for processes and Ray; torch {r['torch']}, {r['cpus']} cores, {r['date']}.",
        "This machine's two cores were shared with other jobs during the run (the lead reruns",
        "this on a quiet machine): read the times as one sample of a busy machine, the identity",
        "column as exact.",
        "",
        "| executor | workers | starting it s | build s | probe pass s | (unit, format) jobs s | measuring s | writing s | artifact equal to serial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["builds"]:
        same = "yes, byte for byte" if not x["differences_from_serial"] else "no: " + ", ".join(x["differences_from_serial"])
        lines.append(f"| {x['executor']} | {x['workers']} | {x['start_seconds']:.1f} | {x['seconds']:.1f} | {x['probe']:.1f} | {x['jobs']:.1f} | "
                     f"{x['measure']:.1f} | {x['write']:.1f} | {same} |")
    cal = r["calibration"]
    lines += [
        "",
        "Each job's time in the serial build against its unit's weights (a line per base format,",
        "fitted over the linear units; the embedding's job also costs its tied head):",
        "",
        "| base | seconds per job = a + b x weights: a (s) | b (s per million weights) | r² | embedding job s |",
        "|---|---|---|---|---|",
    ]
    for f, line in cal["formats"].items():
        lines.append(f"| {f} | {line['a']:.4f} | {1e6 * line['b']:.4f} | {line['r2']:.2f} | {line['embedding_seconds']:.2f} |")
    lines += [
        "",
        f"The probe pass took {cal['probe_seconds']:.1f} s, a measurement {cal['measure_seconds']:.2f} s (the first",
        f"{cal['measure_first_seconds']:.2f} s: it also loads the copies and computes the float model's reference), the",
        f"write {cal['write_seconds']:.1f} s.",
        "",
        "## On paper: 1B, 8B and 70B",
        "",
        "Calibrated by the serial build above: each (unit, format) job from its format's line at",
        "the unit's size (the embedding's job scaled by its size); the probe pass, each",
        "measurement and the write scaled by the model's weights (they are forward and backward",
        "passes and bytes). Jobs are placed longest first on the worker free earliest; the",
        "16 measurements go to up to 16 workers. Worker-hours are workers x wall time (what a",
        "cluster of that many one-core workers bills). Models: Llama-3.2-1B, Llama-3-8B and",
        "Llama-2-70B shapes (`elastiq.labs.planning` presets), the default four bases, 512",
        "probe tokens.",
        "",
        "| model | weights | workers | jobs | probe pass h | jobs h | measuring h | writing h | build h | worker-hours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["projection"]:
        lines.append(f"| {p['model']} | {p['params'] / 1e9:.2f} B | {p['workers']} | {p['job_count']} | {p['probe'] / 3600:.2f} | "
                     f"{p['jobs'] / 3600:.2f} | {p['measure'] / 3600:.2f} | {p['write'] / 3600:.2f} | {p['hours']:.2f} | "
                     f"{p['worker_hours']:.1f} |")
    big = {p["workers"]: p for p in r["projection"] if p["model"] == "llama-2-70b"}
    b1, b64 = big[1], big[64]
    r2 = [line["r2"] for line in cal["formats"].values()]
    lines += [
        "",
        f"The lines fit the busy machine's job times loosely (r² {min(r2):.2f} to {max(r2):.2f}: other jobs shared",
        "the cores); the projection is an order of magnitude, to be redone from the quiet rerun.",
        "",
        "What stays on one node, and how it scales:",
        "",
        "- **The probe pass** (one forward and backward over the probe tokens) runs in the driver",
        "  and holds every unit's recorded inputs and gradients until they are in the store: for",
        f"  a 70B model at 512 tokens {b1['probe_store_gib']:.0f} GiB in float32. It grows with the model and does not",
        f"  spread: {b1['probe'] / 3600:.1f} of {b1['hours']:.1f} hours of a serial 70B build, {b64['probe'] / 3600:.1f} of "
        f"{b64['hours']:.1f} on 64 workers.",
        "- **Measuring an option** needs the whole model on one worker: the float model",
        f"  ({b1['model_gib_fp32']:.0f} GiB in float32 for 70B) and every packed copy. Measurements are",
        "  independent, so up to 16 workers measure in parallel, but each must be a node with",
        "  memory for the whole model, and each first loads the copies and computes the float",
        f"  model's reference; beyond 16 workers this step no longer shrinks ({b64['measure'] / 3600:.1f} hours for 70B).",
        "- **The chain, pruning and the write** run in the driver: the write is bytes to disk,",
        "  linear in the model.",
        f"- **The (unit, format) jobs** spread over every worker: {b1['jobs'] / 3600:.1f} hours for 70B on one worker,",
        f"  {b64['jobs'] / 3600:.2f} on 64. For the 1B model they stop shrinking between 8 and 64 workers, where the",
        "  embedding's job (the largest: its tied head is probed too) bounds them.",
        "",
        "So on a cluster the build of a 70B family is bounded by the two steps that need the",
        "whole model: the probe pass (one node) and the measurements (up to 16 large nodes).",
        "Spreading the probe pass over layers (a pipeline of nodes, each holding some layers)",
        "and measuring fewer options are the next steps; neither is built.",
    ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "elastiq" / "bench-scale")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--finish", action="store_true", help="only calibrate and project from the builds in the JSON")
    ap.add_argument("--markdown", action="store_true", help="only write docs/scale.md from the JSON")
    a = ap.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not a.markdown:
        r = run(a.work, a.workers) if not a.finish else json.loads(RESULTS.read_text())
        RESULTS.write_text(json.dumps(finish(r), indent=1))
    r = json.loads(RESULTS.read_text())
    DOC.write_text(markdown(r))
    print(f"wrote {RESULTS} and {DOC}")


if __name__ == "__main__":
    main()
