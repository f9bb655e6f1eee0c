"""The ``elastiq build``, ``elastiq prune`` and ``elastiq host`` commands: elastic hosting.
Heavy modules load inside the functions."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from elastiq.options import BuildOptions

from .common import EXECUTOR, RAY_ADDRESS, WORKERS, console, fail, load_model, load_text, mib, open_executor, parse_size

B = BuildOptions  # the defaults below are its defaults


def build(
    model: str = typer.Argument("smollm2-135m", help="a built-in name, a Hugging Face directory or a .gguf file"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the artifact to"),
    formats: str = typer.Option(",".join(B.formats), help="base formats, comma-separated, largest first"),
    unit: str = typer.Option(B.unit, help="what one step moves: linear (one layer) or layer (a decoder layer's linears)"),
    embedding: bool = typer.Option(B.embedding, help="make the token embedding (and a head tied to it) a unit too"),
    calib: str = typer.Option("wiki-calib", help="calibration text (never the evaluation text)"),
    calib_tokens: int = typer.Option(B.calib_tokens, help="tokens to probe sensitivity with (as many again are used to measure KL)"),
    context: int = typer.Option(B.context, help="tokens per calibration window"),
    method: str = typer.Option(B.method, help="how to cast the base formats: rtn, gptq, search or gptq+search"),
    measure: int = typer.Option(B.measure, help="options along the chain at which the real KL is measured"),
    storage_limit: Optional[str] = typer.Option(None, help="prune the family to this much storage (e.g. 300MiB)"),
    max_kl: Optional[float] = typer.Option(None, help="quality floor: leave out options whose KL from the float model "
                                                      "(nats per token) exceeds this"),
    overwrite: bool = typer.Option(False, help="replace an existing artifact"),
    executor: str = EXECUTOR,
    workers: Optional[int] = WORKERS,
    ray_address: Optional[str] = RAY_ADDRESS,
    threads: int = typer.Option(1, help="torch threads of each job, whatever the executor (the artifact depends on "
                                        "it, not on the executor)"),
    resume: bool = typer.Option(True, help="keep each finished job in the cache folder, so that an interrupted build "
                                           "resumes from what finished (removed once the artifact is written)"),
) -> None:
    """Build the elastic family of MODEL: a chain of hosting options from a few base formats."""
    from elastiq.elastic import Artifact, build as run_build

    if calib == "wiki-eval":
        fail(ValueError("calibrating on the evaluation text would tune the chain on what it is scored on: "
                             "use wiki-calib or your own file"))
    from elastiq.cache import check_output
    from elastiq.elastic.builder import check_formats

    try:
        check_output(out, overwrite, owner="elastic.json")
    except (ValueError, FileExistsError) as e:
        fail(e)
    try:
        options = BuildOptions(formats=[f.strip() for f in formats.split(",") if f.strip()], unit=unit,
                               embedding=embedding, calib_tokens=calib_tokens, context=context, measure=measure, method=method,
                               storage_limit=parse_size(storage_limit) if storage_limit else None, max_kl=max_kl)
        check_formats(options.formats)
    except ValueError as e:
        fail(e)
    from elastiq.cache import cache_dir
    from elastiq.executors import WorkerLost

    ex = open_executor(executor, workers, ray_address, threads)
    fp, tok = load_model(model)
    text = load_text(calib)
    try:
        with ex:
            path = run_build(fp, tok, out, options, calib_text=text, calib_name=calib, overwrite=overwrite, source=model,
                             executor=ex, jobs_dir=cache_dir() / "build-jobs" if resume else None)
    except (ValueError, WorkerLost) as e:
        fail(e)
    show_family(Artifact(path), title=f"elastic family of {model} -> {path}")


def show_family(a, title: str, rows: int = 12) -> None:
    """A summary and a sample of the family's options."""
    import numpy as np

    sizes = a.option_bytes
    opts = a.family.options
    steps = -np.diff(sizes[opts])
    quality = a.manifest["quality"]
    est, measured = quality["estimated"], quality["measured"]
    t = Table(title=title)
    for col in ("option", "weights MiB", "KL from float", ""):
        t.add_column(col, justify="right")
    shown = sorted({opts[int(round(j))] for j in np.linspace(0, len(opts) - 1, min(rows, len(opts)))})
    for k in shown:
        t.add_row(str(k), mib(sizes[k]), f"{measured.get(str(k), est[k]):.4f}",
                  "measured" if str(k) in measured else "estimated")
    for e in a.extras:
        t.add_row(f"{e['option']}+{e['name']}", mib(sizes[e["option"]] + e["bytes"]), f"{e['kl']:.4f}",
                  "measured, low-rank")
    console.print(t)
    console.print(
        f"{len(opts)} options from {mib(sizes[opts[0]])} to {mib(sizes[opts[-1]])} MiB; step median "
        f"{mib(np.median(steps)) if len(steps) else '-'} MiB, largest {mib(steps.max()) if len(steps) else '-'} MiB; "
        f"bases {', '.join(a.chain.formats)}; storage {mib(a.storage_bytes())} MiB"
        + (f"; built in {a.manifest['info']['build_seconds']} s" if a.manifest["info"].get("build_seconds") else ""))


def prune(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`"),
    storage_limit: str = typer.Option(..., help="storage the pruned family may take (e.g. 250MiB)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the pruned artifact"),
    overwrite: bool = typer.Option(False, help="replace an existing directory"),
) -> None:
    """Keep the largest family of ARTIFACT that fits a storage limit; report what it lost."""
    from elastiq.elastic import Artifact, ArtifactError, prune_artifact

    try:
        path, report = prune_artifact(artifact, out, parse_size(storage_limit), overwrite=overwrite)
    except (ArtifactError, ValueError, FileExistsError) as e:
        fail(e)
    console.print(f"kept {report['options_after']} of {report['options_before']} options "
                      f"({len(report['options_removed'])} removed); storage {mib(report['storage_before'])} -> "
                      f"{mib(report['storage_after'])} MiB; largest option {mib(report['largest_before'])} -> "
                      f"{mib(report['largest_after'])} MiB")
    show_family(Artifact(path), title=f"pruned family -> {path}")


# the options of a budget and an engine, shared by `host` and `serve` (read by budget_options)
BUDGET = typer.Option(None, help="a fixed weight budget (e.g. 90MiB)")
AVAILABLE = typer.Option(False, help="budget: this machine's available memory minus --reserve")
CGROUP = typer.Option(False, help="budget: this cgroup's memory limit minus its use and --reserve")
TRACE = typer.Option(None, help="replay a memory trace: a file of 'seconds,bytes' lines")
RESERVE = typer.Option("0", help="memory kept free for everything but the weights (with --available/--cgroup)")
SPEED = typer.Option(1.0, help="trace replay speed (2: twice as fast)")
ENGINE = typer.Option("auto", help="native (the native runtime, no torch), torch, or auto (native where it runs the model)")
THREADS = typer.Option(None, help="threads for the forward pass (default: every core)")


def host(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`"),
    budget: Optional[str] = BUDGET,
    available: bool = AVAILABLE,
    cgroup: bool = CGROUP,
    trace: Optional[Path] = TRACE,
    reserve: str = RESERVE,
    speed: float = SPEED,
    prompt: Optional[str] = typer.Option(None, help="generate a reply to this prompt while hosting"),
    max_new_tokens: int = typer.Option(48, help="tokens to generate"),
    options: bool = typer.Option(False, "--options", help="list the artifact's options and exit"),
    engine: str = ENGINE,
    threads: Optional[int] = THREADS,
) -> None:
    """Host ARTIFACT under a memory budget: run the best option that fits, swap as it moves."""
    from elastiq.elastic import check_max_new_tokens, open_host
    # both hosts refuse a bad artifact with a ValueError (ArtifactError, NativeError): torch stays unimported

    try:
        check_max_new_tokens(max_new_tokens)  # before the artifact is opened
    except ValueError as e:
        fail(e)
    source, events = budget_options(budget, available, cgroup, trace, reserve, speed, threads)
    try:
        if options:
            from elastiq.elastic import Artifact

            show_family(Artifact(artifact), title=f"options of {artifact}", rows=10**9)
            return
        with console.status(f"opening {artifact} ..."):
            hosted = open_host(artifact, engine, threads, warn=lambda m: console.print(f"[yellow]{m}[/yellow]"))
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    if events is None:
        try:
            b = source(hosted.held_bytes) if source else int(hosted.sizes[hosted.options[0]])
            tr = hosted.apply_budget(b)
        except ValueError as e:  # BudgetError, ArtifactError, NativeError
            fail(e)
        console.print(f"budget {mib(b)} MiB -> option {tr.option}: {mib(tr.bytes)} MiB of weights, "
                      f"loaded in {tr.seconds * 1e3:.0f} ms")
        if prompt:
            reply = hosted.generate(prompt, max_new_tokens)
            console.print(getattr(reply, "text", reply))
        return
    _replay(hosted, events, speed, prompt, max_new_tokens)


def budget_options(budget, available: bool, cgroup: bool, trace, reserve: str, speed: float, threads):
    """(budget source or None, trace events or None) of the budget options `host` and `serve`
    share; one clear line for options that do not go together or do not read."""
    from elastiq.elastic import AvailableMemory, CgroupLimit, Fixed, read_trace

    chosen = [name for name, on in (("--budget", budget is not None), ("--available", available),
                                    ("--cgroup", cgroup), ("--trace", trace is not None)) if on]
    if len(chosen) > 1:
        fail(ValueError(f"give one budget source, not {' and '.join(chosen)}"))
    if not 0 < speed < float("inf"):
        fail(ValueError(f"--speed must be a positive number, got {speed}"))
    try:
        if threads is not None and threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        keep_free = parse_size(reserve)
        source = (Fixed(parse_size(budget)) if budget is not None else AvailableMemory(keep_free) if available
                  else CgroupLimit(keep_free) if cgroup else None)
        return source, read_trace(trace) if trace else None
    except (ValueError, FileNotFoundError) as e:
        fail(e)


def _peak_rss(proc) -> int:
    """VmHWM: the process's peak resident size since it started (Linux), else its RSS now."""
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return proc.memory_info().rss


def _replay(hosted, events, speed: float, prompt: str | None, max_new_tokens: int) -> None:
    """Apply each trace event at its time while (optionally) a reply is generated."""
    import psutil
    from rich.markup import escape

    proc = psutil.Process()
    hosted.fit_budget(events[0][1])

    pieces: list[tuple[int, str]] = []  # (option, text) as generated
    state = {"text": "", "error": None}

    def on_token(text):
        pieces.append((hosted.option, text[len(state["text"]):]))
        state["text"] = text

    def generate():
        try:
            hosted.generate(prompt, max_new_tokens, on_token=on_token)
        except Exception as e:  # reported below, not lost in the thread
            state["error"] = e

    worker = threading.Thread(target=generate) if prompt else None
    table = Table(title=f"replaying {len(events)} budget events (x{speed:g})")
    for col in ("time s", "budget MiB", "option", "weights MiB", "units swapped", "swap ms", "process RSS MiB"):
        table.add_column(col, justify="right")
    t0 = time.perf_counter()
    if worker:
        worker.start()
    for t, b in events:
        time.sleep(max(0.0, t / speed - (time.perf_counter() - t0)))
        try:
            tr, refused = hosted.fit_budget(b)
            if refused:
                console.print(f"[yellow]t={t:g}s: a budget of {mib(b)} MiB is below the smallest option; holding "
                              "it[/yellow]")
            row = [f"{hosted.option}" + (" (refused)" if refused else ""), mib(hosted.held_bytes),
                   str(tr.units_changed if tr else 0), f"{tr.seconds * 1e3:.1f}" if tr else "-"]
        except ValueError as e:  # a swap that fails (ArtifactError, NativeError) changes nothing: keep serving
            console.print(f"[yellow]t={t:g}s: swap failed, holding option {hosted.option}:[/yellow] {escape(str(e))}",
                          soft_wrap=True)
            row = [f"{hosted.option} (swap failed)", mib(hosted.held_bytes), "0", "-"]
        table.add_row(f"{time.perf_counter() - t0:.2f}", mib(b), *row, mib(proc.memory_info().rss))
    if worker:
        worker.join()
    console.print(table)
    console.print(f"whole process: {mib(proc.memory_info().rss)} MiB resident now, {mib(_peak_rss(proc))} MiB "
                  f"at its peak (VmHWM); engine: {hosted.engine}")
    if state["error"] is not None:
        fail(state["error"])
    if prompt:
        console.print(f"[bold]prompt:[/bold] {prompt}")
        spans: list[list] = []
        for option, text in pieces:
            if spans and spans[-1][0] == option:
                spans[-1][1] += text
            else:
                spans.append([option, text])
        for option, text in spans:
            console.print(escape(f"[option {option}, {mib(hosted.sizes[option])} MiB]"), text, style=None, highlight=False)
