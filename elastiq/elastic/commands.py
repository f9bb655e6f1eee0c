"""The ``elastiq build``, ``elastiq prune`` and ``elastiq host`` commands (registered at the
end of elastiq/cli.py). Heavy modules load inside the functions."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

FORMATS_DEFAULT = "int8,int6,nxfp4,int3"


def _mib(x) -> str:
    return f"{x / 2**20:.2f}"


def _cli():
    from elastiq import cli

    return cli


def build(
    model: str = typer.Argument("smollm2-135m", help="a built-in name, a Hugging Face directory or a .gguf file"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the artifact to"),
    formats: str = typer.Option(FORMATS_DEFAULT, help="base formats, comma-separated, largest first"),
    unit: str = typer.Option("linear", help="what one step moves: linear (one layer) or layer (a decoder layer's linears)"),
    embedding: bool = typer.Option(True, help="make the token embedding (and a head tied to it) a unit too"),
    calib: str = typer.Option("wiki-calib", help="calibration text (never the evaluation text)"),
    calib_tokens: int = typer.Option(512, help="tokens to probe sensitivity with (as many again are used to measure KL)"),
    context: int = typer.Option(256, help="tokens per calibration window"),
    measure: int = typer.Option(12, help="options along the chain at which the real KL is measured"),
    storage_limit: Optional[str] = typer.Option(None, help="prune the family to this much storage (e.g. 300MiB)"),
    max_kl: Optional[float] = typer.Option(None, help="quality floor: leave out options whose KL from the float model "
                                                      "(nats per token) exceeds this"),
    overwrite: bool = typer.Option(False, help="replace an existing artifact"),
) -> None:
    """Build the elastic family of MODEL: a chain of hosting options from a few base formats."""
    from elastiq.elastic import Artifact, build as run_build, parse_bytes

    cli = _cli()
    if calib == "wiki-eval":
        cli._fail(ValueError("calibrating on the evaluation text would tune the chain on what it is scored on: "
                             "use wiki-calib or your own file"))
    try:
        from elastiq.cache import check_output

        check_output(out, overwrite, owner="elastic.json")
        limit = parse_bytes(storage_limit) if storage_limit else None
        fmts = [f.strip() for f in formats.split(",") if f.strip()]
        from elastiq.elastic.builder import check_formats

        check_formats(fmts)
    except (ValueError, FileExistsError) as e:
        cli._fail(e)
    fp, tok = cli._load(model)
    text = cli._text(calib)
    try:
        path = run_build(fp, tok, out, fmts, unit=unit, embedding=embedding, calib_text=text, calib_name=calib,
                         calib_tokens=calib_tokens, context=context, measure=measure, storage_limit=limit,
                         max_kl=max_kl, overwrite=overwrite, source=model)
    except ValueError as e:
        cli._fail(e)
    show_family(Artifact(path), title=f"elastic family of {model} -> {path}")


def show_family(a, title: str, rows: int = 12) -> None:
    """A summary and a sample of the family's options."""
    import numpy as np

    cli = _cli()
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
        t.add_row(str(k), _mib(sizes[k]), f"{measured.get(str(k), est[k]):.4f}",
                  "measured" if str(k) in measured else "estimated")
    for e in a.extras:
        t.add_row(f"{e['option']}+{e['name']}", _mib(sizes[e["option"]] + e["bytes"]), f"{e['kl']:.4f}",
                  "measured, low-rank")
    cli.console.print(t)
    cli.console.print(
        f"{len(opts)} options from {_mib(sizes[opts[0]])} to {_mib(sizes[opts[-1]])} MiB; step median "
        f"{_mib(np.median(steps)) if len(steps) else '-'} MiB, largest {_mib(steps.max()) if len(steps) else '-'} MiB; "
        f"bases {', '.join(a.chain.formats)}; storage {_mib(a.storage_bytes())} MiB"
        + (f"; built in {a.manifest['info']['build_seconds']} s" if a.manifest["info"].get("build_seconds") else ""))


def prune(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`"),
    storage_limit: str = typer.Option(..., help="storage the pruned family may take (e.g. 250MiB)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the pruned artifact"),
    overwrite: bool = typer.Option(False, help="replace an existing directory"),
) -> None:
    """Keep the largest family of ARTIFACT that fits a storage limit; report what it lost."""
    from elastiq.elastic import Artifact, ArtifactError, parse_bytes, prune_artifact

    cli = _cli()
    try:
        path, report = prune_artifact(artifact, out, parse_bytes(storage_limit), overwrite=overwrite)
    except (ArtifactError, ValueError, FileExistsError) as e:
        cli._fail(e)
    cli.console.print(f"kept {report['options_after']} of {report['options_before']} options "
                      f"({len(report['options_removed'])} removed); storage {_mib(report['storage_before'])} -> "
                      f"{_mib(report['storage_after'])} MiB; largest option {_mib(report['largest_before'])} -> "
                      f"{_mib(report['largest_after'])} MiB")
    show_family(Artifact(path), title=f"pruned family -> {path}")


def host(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`"),
    budget: Optional[str] = typer.Option(None, help="a fixed weight budget (e.g. 90MiB)"),
    available: bool = typer.Option(False, help="budget: this machine's available memory minus --reserve"),
    cgroup: bool = typer.Option(False, help="budget: this cgroup's memory limit minus its use and --reserve"),
    trace: Optional[Path] = typer.Option(None, help="replay a memory trace: a file of 'seconds,bytes' lines"),
    reserve: str = typer.Option("0", help="memory kept free for everything but the weights (with --available/--cgroup)"),
    speed: float = typer.Option(1.0, help="trace replay speed (2: twice as fast)"),
    prompt: Optional[str] = typer.Option(None, help="generate a reply to this prompt while hosting"),
    max_new_tokens: int = typer.Option(48, help="tokens to generate"),
    options: bool = typer.Option(False, "--options", help="list the artifact's options and exit"),
) -> None:
    """Host ARTIFACT under a memory budget: run the best option that fits, swap as it moves."""
    from elastiq.elastic import (ArtifactError, AvailableMemory, BudgetError, CgroupLimit, ElasticModel, Fixed,
                                 parse_bytes, read_trace)

    cli = _cli()
    chosen = [name for name, on in (("--budget", budget is not None), ("--available", available),
                                    ("--cgroup", cgroup), ("--trace", trace is not None)) if on]
    if len(chosen) > 1:
        cli._fail(ValueError(f"give one budget source, not {' and '.join(chosen)}"))
    if not 0 < speed < float("inf"):
        cli._fail(ValueError(f"--speed must be a positive number, got {speed}"))
    try:
        from elastiq.elastic.host import check_max_new_tokens

        check_max_new_tokens(max_new_tokens)  # before the artifact is opened
        keep_free = parse_bytes(reserve)
        limit = parse_bytes(budget) if budget is not None else None
        events = read_trace(trace) if trace else None
    except (ValueError, FileNotFoundError) as e:
        cli._fail(e)
    try:
        with cli.console.status(f"opening {artifact} ..."):
            hosted = ElasticModel(artifact)
        if options:
            show_family(hosted.artifact, title=f"options of {artifact}", rows=10**9)
            return
        source = (Fixed(limit) if budget is not None else AvailableMemory(keep_free) if available
                  else CgroupLimit(keep_free) if cgroup else None)
    except (ArtifactError, ValueError, FileNotFoundError) as e:
        cli._fail(e)
    if events is None:
        try:
            b = source(hosted.held_bytes) if source else int(hosted.sizes[hosted.options[0]])
            tr = hosted.apply_budget(b)
        except (BudgetError, ArtifactError, ValueError) as e:
            cli._fail(e)
        cli.console.print(f"budget {_mib(b)} MiB -> option {tr.option}: {_mib(tr.bytes)} MiB of weights, "
                          f"loaded in {tr.seconds * 1e3:.0f} ms")
        if prompt:
            cli.console.print(hosted.generate(prompt, max_new_tokens))
        return
    _replay(hosted, events, speed, prompt, max_new_tokens)


def _replay(hosted, events, speed: float, prompt: str | None, max_new_tokens: int) -> None:
    """Apply each trace event at its time while (optionally) a reply is generated."""
    import psutil
    from rich.markup import escape

    from elastiq.elastic import ArtifactError, BudgetError

    cli = _cli()
    proc = psutil.Process()
    try:
        hosted.apply_budget(events[0][1])
    except BudgetError:
        hosted.swap(hosted.options[-1])
    except ArtifactError as e:  # nothing is hosted yet: nothing to keep serving
        cli._fail(e)
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
            try:
                tr = hosted.apply_budget(b)
                row = ([str(tr.option), _mib(tr.bytes), str(tr.units_changed), f"{tr.seconds * 1e3:.1f}"] if tr
                       else [str(hosted.option), _mib(hosted.held_bytes), "0", "-"])
            except BudgetError as e:
                cli.console.print(f"[yellow]t={t:g}s: {escape(str(e))}; holding the smallest option[/yellow]")
                row = [f"{hosted.option} (refused)", _mib(hosted.held_bytes), "0", "-"]
                tr = hosted.swap(hosted.options[-1]) if hosted.option != hosted.options[-1] else None
                row = [f"{hosted.option} (refused)", _mib(hosted.held_bytes), str(tr.units_changed if tr else 0),
                       f"{tr.seconds * 1e3:.1f}" if tr else "-"]
        except ArtifactError as e:  # a swap that fails changes nothing: keep serving the option held
            cli.console.print(f"[yellow]t={t:g}s: swap failed, holding option {hosted.option}:[/yellow] {escape(str(e))}",
                              soft_wrap=True)
            row = [f"{hosted.option} (swap failed)", _mib(hosted.held_bytes), "0", "-"]
        table.add_row(f"{time.perf_counter() - t0:.2f}", _mib(b), *row, _mib(proc.memory_info().rss))
    if worker:
        worker.join()
    cli.console.print(table)
    if state["error"] is not None:
        cli._fail(state["error"])
    if prompt:
        cli.console.print(f"[bold]prompt:[/bold] {prompt}")
        spans: list[list] = []
        for option, text in pieces:
            if spans and spans[-1][0] == option:
                spans[-1][1] += text
            else:
                spans.append([option, text])
        for option, text in spans:
            cli.console.print(escape(f"[option {option}, {_mib(hosted.sizes[option])} MiB]"), text, style=None, highlight=False)
