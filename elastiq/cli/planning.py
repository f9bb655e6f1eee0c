"""The ``elastiq perf`` and ``elastiq carbon`` commands: deployment performance and carbon.

Only typer and rich at import time; the planning modules load inside the functions."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import EXECUTOR, RAY_ADDRESS, WORKERS, console, fail, open_executor, write_json


def _gib(x: float) -> str:
    return f"{x / 2 ** 30:.1f}"


def perf(
    model: str = typer.Argument(..., help="a preset (megatron-22b, gpt3-175b, llama-2-7b, ...), a Hugging Face config.json or model directory"),
    system: str = typer.Option("a100-80gb", "--system", "-s", help="a100-80gb, a100-40gb, h100-80gb, h200-141gb, laptop-m2, or a JSON file"),
    task: str = typer.Option("train", help="train or infer"),
    devices: Optional[int] = typer.Option(None, help="device count; dp defaults to devices / (tp x pp)"),
    tp: int = typer.Option(1, help="tensor parallel degree"),
    pp: int = typer.Option(1, help="pipeline parallel degree"),
    dp: Optional[int] = typer.Option(None, help="data parallel degree (default: from --devices, else 1)"),
    fsdp: bool = typer.Option(False, help="fully sharded data parallel over dp"),
    zero1: bool = typer.Option(False, help="shard the optimizer state over dp (distributed optimizer)"),
    sp: bool = typer.Option(False, help="sequence parallel with tp"),
    recompute: str = typer.Option("none", help="activation recompute: none, selective or full"),
    interleave: int = typer.Option(1, help="virtual pipeline stages per device"),
    batch: int = typer.Option(8, help="global batch (sequences) for train; concurrent sequences for infer"),
    micro_batch: int = typer.Option(1, help="micro-batch size (train)"),
    seq: Optional[int] = typer.Option(None, help="sequence length (train; default: the model's)"),
    dtype: str = typer.Option("bf16", help="compute dtype: bf16, fp16, fp8, ..."),
    flash: bool = typer.Option(True, help="fused (flash) attention; --no-flash for Megatron-2022's unfused softmax"),
    prompt: int = typer.Option(512, help="prompt tokens (infer)"),
    new_tokens: int = typer.Option(128, help="generated tokens (infer)"),
    weights: str = typer.Option("bf16", help="weight format (infer): bf16, fp16, or any elastiq format (nvfp4, mxfp4, int4, ...)"),
    search_: bool = typer.Option(False, "--search", help="rank every strategy that fits --devices and compare with a default "
                                 "(train: FSDP on every device; infer: one tensor-parallel replica per node)"),
    top: int = typer.Option(10, help="rows of --search to show"),
    executor: str = EXECUTOR,
    workers: Optional[int] = WORKERS,
    ray_address: Optional[str] = RAY_ADDRESS,
    plot: Optional[Path] = typer.Option(None, help="write a stacked-bar PNG of the time breakdown here"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result as JSON here"),
) -> None:
    """How fast MODEL trains or serves on SYSTEM with a parallelization, and whether it fits."""
    from elastiq.labs.planning import perf as P
    from elastiq.labs.planning.plots import plot_time_breakdown

    try:
        if task not in ("train", "infer"):
            raise ValueError(f"--task must be train or infer, got {task!r}")
        if search_ and task == "infer":
            return _search_infer(model, system, devices, batch, prompt, new_tokens, weights, top, json_out)
        if search_:
            with open_executor(executor, workers, ray_address) as ex:
                return _search(model, system, devices, batch, seq, dtype, flash, top, plot, json_out, ex)
        if dp is None:
            if devices is not None and devices % (tp * pp):
                raise ValueError(f"tp x pp = {tp * pp} does not divide the {devices} devices")
            d = devices // (tp * pp) if devices is not None else 1
        else:
            d = dp
        par = P.Parallel(dp=d, tp=tp, pp=pp, sp=sp, fsdp=fsdp, shard_optimizer=zero1, recompute=recompute, interleave=interleave)
        if task == "infer":
            r = P.infer(model, system, par, batch=batch, prompt=prompt, new_tokens=new_tokens, weights=weights,
                        dtype=dtype, devices=devices, flash=flash)
            t = Table(title=f"{r.model} inference on {r.devices} x {r.system} ({par.label()}), weights {r.weights} "
                            f"({r.bits_per_weight:.3g} bits)")
            for c in ("batch", "prompt", "new", "prefill s", "decode step ms", "tokens/s", "weights GiB", "KV GiB", "total GiB", "fits"):
                t.add_column(c, justify="right")
            t.add_row(str(batch), str(prompt), str(new_tokens), f"{r.prefill_s:.3f}", f"{1e3 * r.decode_step_s:.2f}",
                      f"{r.tokens_per_s:.1f}", _gib(r.memory.weights), _gib(r.memory.kv_cache), _gib(r.memory.total),
                      "yes" if r.fits else "no")
            console.print(t)
            if plot:
                plot_time_breakdown([(f"{r.model} {r.weights}", {"prefill": r.prefill_s, "decode": r.decode_s}, None)], plot,
                                    f"{r.model} on {r.system}: {prompt} + {new_tokens} tokens, batch {batch}")
                console.print(f"wrote {plot}")
            write_json(json_out, r.as_dict())
            return
        r = P.train(model, system, par, batch=batch, micro_batch=micro_batch, seq=seq, dtype=dtype, devices=devices, flash=flash)
    except ValueError as e:   # includes DoesNotFit, with the memory breakdown in its message
        fail(e)
    _print_train(r)
    if plot:
        plot_time_breakdown([(r.parallel.label(), r.breakdown, None)], plot, f"{r.model} on {r.devices} x {r.system}: one iteration")
        console.print(f"wrote {plot}")
    write_json(json_out, r.as_dict())


def _print_train(r) -> None:
    t = Table(title=f"{r.model} training on {r.devices} x {r.system}: {r.parallel.label()}, batch {r.batch} x {r.seq}, micro-batch {r.micro_batch}")
    for c in ("iteration s", "compute s", "exposed comm s", "exposed %", "bubble s", "MFU", "tokens/s"):
        t.add_column(c, justify="right")
    t.add_row(f"{r.iteration_s:.3f}", f"{r.compute_s:.3f}", f"{r.exposed_comm_s:.3f}", f"{100 * r.exposed_comm_fraction:.1f}",
              f"{r.bubble_s:.3f}", f"{r.mfu:.3f}", f"{r.tokens_per_s:,.0f}")
    console.print(t)
    m = Table(title="memory per device (GiB, most loaded stage)")
    for c in ("weights", "gradients", "optimizer", "activations", "total", "capacity", "fits"):
        m.add_column(c, justify="right")
    m.add_row(_gib(r.memory.weights), _gib(r.memory.gradients), _gib(r.memory.optimizer), _gib(r.memory.activations),
              _gib(r.memory.total), _gib(r.capacity), "yes" if r.fits else "no")
    console.print(m)


def _search(model, system, devices, batch, seq, dtype, flash, top, plot, json_out, ex):
    from elastiq.progress import progress_bar

    from elastiq.labs.planning.plots import plot_time_breakdown
    from elastiq.labs.planning.search import search

    if devices is None:
        raise ValueError("--search needs --devices")
    with progress_bar(console=console) as prog:
        task = prog.add_task("strategies", total=None)
        s = search(model, system, devices, batch, seq, dtype, flash=flash, progress=lambda n: prog.update(task, completed=n),
                   executor=ex)
    if not s.ranked:
        raise ValueError(f"no strategy of {s.tried} tried fits {model} on {devices} x {system}; use more devices or a "
                         "larger-memory system")
    t = Table(title=f"{model} on {devices} x {system}: {len(s.ranked)} of {s.tried} strategies fit (fastest first)")
    for c in ("#", "strategy", "micro-batch", "iteration s", "MFU", "exposed comm %", "bubble %", "GiB/device"):
        t.add_column(c, justify="right" if c not in ("strategy",) else "left")
    for i, r in enumerate(s.ranked[:top], 1):
        t.add_row(str(i), r.parallel.label(), str(r.micro_batch), f"{r.iteration_s:.3f}", f"{r.mfu:.3f}",
                  f"{100 * r.exposed_comm_fraction:.1f}", f"{100 * r.bubble_s / r.iteration_s:.1f}", f"{r.memory.total_gib:.1f}")
    console.print(t)
    if s.default is not None:
        console.print(f"default (FSDP over all {devices} devices, full recompute, micro-batch 1): {s.default.iteration_s:.3f} s, "
                      f"MFU {s.default.mfu:.3f}; best is [bold]{s.speedup_over_default:.2f}x[/bold] faster")
    else:
        console.print(f"default (FSDP over all {devices} devices, full recompute) cannot run: {s.default_problem}")
    if plot:
        rows = [(f"#{i} {r.parallel.label()}", r.breakdown, None) for i, r in enumerate(s.ranked[:5], 1)]
        if s.default is not None:
            rows.append(("default " + s.default.parallel.label(), s.default.breakdown, None))
        plot_time_breakdown(rows, plot, f"{model} on {devices} x {system}: best strategies and the default")
        console.print(f"wrote {plot}")
    write_json(json_out, {"ranked": [r.as_dict() for r in s.ranked], "tried": s.tried,
                           "default": s.default.as_dict() if s.default else None, "default_problem": s.default_problem,
                           "speedup_over_default": s.speedup_over_default})


def _search_infer(model, system, devices, batch, prompt, new_tokens, weights, top, json_out):
    from elastiq.labs.planning.search import search_inference

    if devices is None:
        raise ValueError("--search needs --devices")
    s = search_inference(model, system, devices, batch, prompt, new_tokens, weights)
    if not s.ranked:
        raise ValueError(f"no split of {devices} x {system} into replicas fits {model} with {weights} weights")
    t = Table(title=f"{model} serving {batch} sequences on {devices} x {system}, {weights} weights: "
                    f"{len(s.ranked)} of {s.tried} splits fit (highest throughput first)")
    for c in ("#", "split", "decode step ms", "tokens/s", "GiB/device"):
        t.add_column(c, justify="left" if c == "split" else "right")
    for i, c in enumerate(s.ranked[:top], 1):
        t.add_row(str(i), c.label(), f"{1e3 * c.result.decode_step_s:.2f}", f"{c.tokens_per_s:,.0f}", _gib(c.result.memory.total))
    console.print(t)
    if s.default is not None:
        console.print(f"default ({s.default.label()}): {s.default.tokens_per_s:,.0f} tokens/s; best is "
                      f"[bold]{s.speedup_over_default:.2f}x[/bold] of it")
    else:
        console.print(f"default (one replica per node) cannot run: {s.default_problem}")
    write_json(json_out, {"ranked": [{"split": c.label(), "tokens_per_s": c.tokens_per_s, "replica": c.result.as_dict()}
                                      for c in s.ranked], "tried": s.tried, "speedup_over_default": s.speedup_over_default})


def carbon(
    command: Optional[List[str]] = typer.Argument(None, help="with --measure: the command to run, after --"),
    measure: bool = typer.Option(False, help="run COMMAND and report its energy and CO2e (RAPL/NVML where readable, else a model)"),
    device: Optional[str] = typer.Option(None, help="embodied carbon of a device preset (dell-r740, fairphone-3, laptop, gpu-server-h100, ...)"),
    model: Optional[str] = typer.Option(None, help="carbon per 1,000 generated tokens of this model (with --system, --weights)"),
    system: str = typer.Option("h100-80gb", help="perf system for --model"),
    weights: str = typer.Option("bf16,nvfp4", help="comma-separated weight formats for --model"),
    batch: int = typer.Option(1, help="concurrent sequences for --model"),
    params: Optional[float] = typer.Option(None, help="LLM training estimate: parameters (e.g. 175e9)"),
    tokens: Optional[float] = typer.Option(None, help="LLM training estimate: training tokens"),
    gpus: int = typer.Option(1, "--gpus", help="LLM training estimate: accelerators"),
    peak_tflops: Optional[float] = typer.Option(None, help="LLM training estimate: peak TFLOP/s per accelerator"),
    efficiency: float = typer.Option(0.4, help="LLM training estimate: achieved / peak FLOP/s"),
    power_w: Optional[float] = typer.Option(None, help="LLM training estimate: average system power per accelerator (W)"),
    region: str = typer.Option("world", help="grid region (usa, europe, taiwan, ...), source (coal, wind, ...) or g/kWh"),
    pue: float = typer.Option(1.0, help="power usage effectiveness of the facility"),
    plot: Optional[Path] = typer.Option(None, help="write a stacked-bar PNG of the carbon breakdown here"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result as JSON here"),
) -> None:
    """Embodied and operational carbon: of a device, of generating tokens in a weight format, of
    training an LLM, or of running a command (--measure -- COMMAND)."""
    from elastiq.labs.planning import carbon as C
    from elastiq.labs.planning.plots import plot_carbon_breakdown

    try:
        ci = C.grid_intensity(region)
        if measure or command:
            if not measure:
                raise ValueError("a command was given without --measure; write elastiq carbon --measure -- COMMAND")
            return _measure(command or [], region, pue, ci, json_out)
        if model:
            rows = [C.per_1k_tokens(model, system, weights=w.strip(), region=region, pue=pue, batch=batch)
                    for w in weights.split(",") if w.strip()]
            t = Table(title=f"{model} on {system}, batch {batch}, {region} grid ({ci:g} g/kWh), PUE {pue:g}: per 1,000 generated tokens")
            for c in ("weights", "bits/weight", "weights GiB", "tokens/s", "W", "kWh", "operational g", "embodied g", "total g CO2e"):
                t.add_column(c, justify="right")
            for r in rows:
                t.add_row(r["weights"], f"{r['bits_per_weight']:.3g}", f"{r['weight_gib']:.2f}", f"{r['tokens_per_s']:.0f}",
                          f"{r['watts']:.0f}", f"{r['energy_kwh']:.2e}", f"{1e3 * r['operational_kg']:.4f}",
                          f"{1e3 * r['embodied_kg']:.4f}", f"{1e3 * r['total_kg']:.4f}")
            console.print(t)
            console.print("power: accelerator idle + dynamic range x busy fraction (an upper bound for memory-bound decode); "
                          "host power not included")
            if plot:
                plot_carbon_breakdown([(r["weights"], {"operational": 1e3 * r["operational_kg"], "embodied (amortized)": 1e3 * r["embodied_kg"]})
                                       for r in rows], plot, f"{model} on {system}: g CO2e per 1,000 tokens")
                console.print(f"wrote {plot}")
            return write_json(json_out, rows)
        if params is not None or tokens is not None:
            if peak_tflops is None or power_w is None:
                raise ValueError("an LLM training estimate needs --params, --tokens, --peak-tflops and --power-w")
            tr = C.training_carbon(params, tokens, gpus, peak_tflops * 1e12, efficiency, power_w, ci / 1000, pue)
            t = Table(title=f"training {params:.3g} parameters on {tokens:.3g} tokens, {gpus} accelerators (LLMCarbon model)")
            for c in ("FLOPs", "days", "energy MWh", "operational t CO2e"):
                t.add_column(c, justify="right")
            t.add_row(f"{tr.flops:.3g}", f"{tr.days:.1f}", f"{tr.energy_mwh:.1f}", f"{tr.operational_t:.1f}")
            console.print(t)
            return write_json(json_out, {"flops": tr.flops, "days": tr.days, "energy_mwh": tr.energy_mwh, "operational_t": tr.operational_t})
        names = [device] if device else C.devices()
        embodied = {n: C.device(n) for n in names}
    except ValueError as e:
        fail(e)
    t = Table(title="embodied carbon (ACT model), kg CO2e")
    for c in ("device", "component group", "kg CO2e", "share"):
        t.add_column(c, justify="right" if c in ("kg CO2e", "share") else "left")
    for n, e in embodied.items():
        total = e.total_kg
        for g, kg in e.by_group().items():
            t.add_row(n, g, f"{kg:.3f}", f"{100 * kg / total:.1f}%")
        t.add_row(n, "[bold]total[/bold]", f"[bold]{total:.3f}[/bold]", f"lifetime {e.lifetime_years:g} y", end_section=True)
    console.print(t)
    if plot:
        plot_carbon_breakdown([(n, e.by_group()) for n, e in embodied.items()], plot, "embodied carbon by component (ACT model)")
        console.print(f"wrote {plot}")
    write_json(json_out, {n: e.by_group() | {"total": e.total_kg} for n, e in embodied.items()})


def _measure(command, region, pue, ci, json_out):
    from elastiq.labs.planning import carbon as C
    from elastiq.labs.planning import measure as M

    console.print(f"[dim]{M.environment()}[/dim]")
    m = M.measure(command)
    kg = C.operational_kg(m.energy_kwh, region, pue)
    t = Table(title=f"energy of: {' '.join(command)}")
    for c in ("exit", "wall s", "CPU s", "energy J", "kWh", "method", f"g CO2e ({region}, PUE {pue:g})"):
        t.add_column(c, justify="right")
    t.add_row(str(m.returncode), f"{m.seconds:.2f}", f"{m.cpu_seconds:.2f}", f"{m.energy_j:.1f}", f"{m.energy_kwh:.2e}",
              m.method + ("" if m.measured else " (estimate)"), f"{1e3 * kg:.4f}")
    console.print(t)
    for n in m.notes:
        console.print(("[yellow]" if not m.measured else "") + n)
    write_json(json_out, {"command": command, "returncode": m.returncode, "seconds": m.seconds, "energy_j": m.energy_j,
                           "method": m.method, "measured": m.measured, "notes": m.notes, "co2e_kg": kg,
                           "region": region, "pue": pue, "grid_g_per_kwh": ci})
    if m.returncode:
        raise typer.Exit(m.returncode)
