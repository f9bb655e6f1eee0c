"""Where the time goes in text-to-image, text-to-video and LLM inference (issue 8).

    .venv/bin/python bench/profiling.py                 # the suite, backends, sweeps: ~7 minutes
    .venv/bin/python bench/profiling.py --quick         # fewer steps and sweep points
    .venv/bin/python bench/markdown.py profile        # the tables of docs/profile.md

Writes bench/results/profile.json, bench/results/profile.png (all models) and
bench/results/profile_<model>.png (per step). Three parts:
1. each suite model profiled step by step (operator-class shares, FLOPs, attention calls);
2. flash versus math scaled-dot-product attention: end-to-end time without the profiler and
   attention time under it, backends alternating, median of the per-repeat ratios;
3. attention time and score-matrix bytes as the image side (sd-unet) and the frame count
   (video-unet3d) grow, under both backends.
Models are built from configurations with random weights (see elastiq/labs/analysis/profiling/suite.py).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from elastiq.labs.analysis.profiling import classes as C  # noqa: E402
from elastiq.labs.analysis.profiling import profile, time_steps  # noqa: E402
from elastiq.labs.analysis.profiling.report import plot, plot_models, table, write_json  # noqa: E402
from elastiq.labs.analysis.profiling.suite import build  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODELS = ["sd-unet", "pixart-dit", "video-unet3d", "smollm2-prefill", "smollm2-decode"]
console = Console()


def attention_summary(r) -> dict:
    calls = r.step_calls[0]
    return {"attention_s_per_step": r.attention_time / r.steps,
            "attention_share": sum(r.shares[c] for c in C.ATTENTION),
            "temporal_share_of_attention": r.share_of_attention(C.ATTN_TEMPORAL),
            "score_bytes_total": sum(c.score_bytes for c in calls),
            "score_bytes_max_call": max((c.score_bytes for c in calls), default=0),
            "temporal_score_bytes": sum(c.score_bytes for c in calls if c.kind == "temporal"),
            "temporal_attention_s_per_step": r.times[C.ATTN_TEMPORAL] / r.steps,
            "max_q_len": max((c.q_len for c in calls), default=0),
            "median_step_wall_s": r.median_step_wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="denoising steps / prefills profiled per model")
    ap.add_argument("--decode-steps", type=int, default=16, help="decode tokens profiled")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per backend (median of paired ratios)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: this 2-core CPU is shared, and extra threads only wait)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is at hand")
    ap.add_argument("--quick", action="store_true", help="2 steps, 1 repeat, fewer sweep points")
    ap.add_argument("--out", type=Path, default=RESULTS / "profile.json")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.decode_steps, a.repeats = 2, 8, 1
    torch.set_num_threads(a.threads)
    sides = [16, 32, 48] if a.quick else [16, 32, 48, 64]
    frames = [4, 8] if a.quick else [4, 8, 16]
    backends = ["flash", "math"]

    def steps_of(name):
        return a.decode_steps if name == "smollm2-decode" else a.steps

    total = (sum(2 * steps_of(m) + 1 for m in MODELS)                      # part 1
             + len(MODELS) * len(backends) * a.repeats                     # part 2: timing runs
             + len(backends) * 3 * (len(sides) + len(frames)))             # part 3: 1-step profiles
    cols = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), TimeRemainingColumn()]
    results, speedups, sweeps = {}, {}, {"sd-unet side": [], "video-unet3d frames": []}
    t_start = time.time()
    with Progress(*cols, console=console) as prog:
        task = prog.add_task("profile", total=total)

        def tick(label):
            return lambda phase, i: prog.update(task, advance=1, description=f"{label}: {phase} {i + 1}")

        # 1. the suite, PyTorch's default attention backend
        for name in MODELS:
            w = build(name, steps=steps_of(name), device=a.device)
            r = profile(w, on_step=tick(name))
            results[name] = r
            plot(r, RESULTS / f"profile_{name}.png")
            prog.console.print(table(r))

            # 2. flash vs math on the same workload, a few steps. Backends alternate within each
            # repeat and the speedup is the median of the per-repeat ratios, so load that drifts on
            # the shared CPU cancels out; one warm-up per backend first
            w.steps = {"smollm2-prefill": 1, "smollm2-decode": 4}.get(name, 2)
            wall = {b: [] for b in backends}
            att = {b: [] for b in backends}
            for b in backends:
                time_steps(w, b, repeats=0)
            for _ in range(a.repeats):
                for b in backends:
                    wall[b].append(time_steps(w, b, repeats=1, warmup=False)[0] / w.steps)
                    rb = profile(w, backend=b, count=False)
                    att[b].append(rb.attention_time / rb.steps)
                    prog.update(task, advance=1, description=f"{name}: {b} timing")
            speedups[name] = {"family": w.family, "steps": w.steps,
                              **{f"{b}_s_per_step": median(wall[b]) for b in backends},
                              **{f"{b}_runs_s_per_step": wall[b] for b in backends},
                              **{f"{b}_attention_s_per_step": median(att[b]) for b in backends},
                              **{f"{b}_attention_runs_s_per_step": att[b] for b in backends},
                              "end_to_end_speedup": median(m / f for m, f in zip(wall["math"], wall["flash"])),
                              "attention_speedup": median(m / f for m, f in zip(att["math"], att["flash"]))}
            del w

        # 3. growth with image side and frame count (one denoising step)
        for key, name, values in (("sd-unet side", "sd-unet", sides), ("video-unet3d frames", "video-unet3d", frames)):
            for v in values:
                kw = {"side": v} if name == "sd-unet" else {"frames": v}
                w = build(name, steps=1, device=a.device, **kw)
                row = {"value": v, "image_side": 8 * (kw.get("side") or w.config["latent_side"])}
                for b in backends:
                    rb = profile(w, backend=b, on_step=tick(f"{name} {key.split()[-1]}={v} {b}"))
                    row[b] = attention_summary(rb)
                sweeps[key].append(row)

    sd, dit, ttv = results["sd-unet"], results["pixart-dit"], results["video-unet3d"]
    data = {
        "meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
                 "diffusers": __import__("diffusers").__version__, "device": a.device, "threads": a.threads,
                 "cpu": platform.processor() or platform.machine(), "steps": a.steps, "decode_steps": a.decode_steps,
                 "repeats": a.repeats, "seconds": round(time.time() - t_start, 1),
                 "command": "bench/profiling.py" + (" --quick" if a.quick else "")},
        "conv_share_diffusion_tti": sd.shares[C.CONV],
        "linear_share_transformer_tti": dit.shares[C.LINEAR],
        "temporal_share_of_attention_ttv": ttv.share_of_attention(C.ATTN_TEMPORAL),
        "seq_len_spread_diffusion": sd.seq_len_spread(),
        "seq_len_adjacent_ratio_diffusion": _adjacent_ratio(sd.seq_lens()),
        "flash_speedup": {n: s["end_to_end_speedup"] for n, s in speedups.items()},
        "shares": {n: r.shares for n, r in results.items()},
        "models": {n: r.as_dict() for n, r in results.items()},
        "backends": speedups,
        "sweeps": sweeps,
    }
    write_json(data, a.out)
    plot_models(list(results.values()), RESULTS / "profile.png",
                f"operator time by class, {a.device}, {a.threads} thread(s), default attention backend")
    console.print(f"conv share (sd-unet) {data['conv_share_diffusion_tti']:.1%}, linear share (pixart-dit) "
                  f"{data['linear_share_transformer_tti']:.1%}, temporal share of attention (video-unet3d) "
                  f"{data['temporal_share_of_attention_ttv']:.1%}, seq-len spread {data['seq_len_spread_diffusion']:.0f}x")
    console.print(f"wrote {a.out}, {RESULTS / 'profile.png'} ({data['meta']['seconds']:.0f} s)")


def _adjacent_ratio(lens: list[int]) -> float:
    """Largest ratio between neighbouring distinct query lengths (one UNet level to the next)."""
    u = sorted(set(lens))
    return max((b / a for a, b in zip(u, u[1:])), default=1.0)


if __name__ == "__main__":
    main()
