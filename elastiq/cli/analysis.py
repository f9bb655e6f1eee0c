"""The ``elastiq deviation``, ``elastiq faults`` and ``elastiq profile`` commands: the numerics
and reliability lab, and where the time goes in a generative model.

Heavy imports stay inside the functions so that the CLI starts quickly."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, fail, load_model, load_text, write_json


def _ints(s: str, what: str) -> list[int]:
    try:
        out = [int(t) for t in s.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {s!r}") from None
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def _names(s: str) -> list[str]:
    return [t.strip() for t in s.split(",") if t.strip()]


def deviation(
    impls: str = typer.Option("baseline,flash,sdpa", help="implementations: baseline, flash, sdpa, sdpa-math, sdpa-flash"),
    precisions: str = typer.Option("bf16,fp16,fp32", help="precisions, each for every stage (dtype or elastiq format)"),
    inputs: Optional[str] = typer.Option(None, help="also one mixed configuration: precision of Q, K, V, P and the output"),
    accumulate: Optional[str] = typer.Option(None, help="... of the matmul results (default: --inputs)"),
    stats: Optional[str] = typer.Option(None, help="... of the softmax statistics m and l (default: --inputs)"),
    output: Optional[str] = typer.Option(None, help="... of flash's running output accumulator (default: --inputs)"),
    seq_lens: str = typer.Option("256,1024", help="sequence lengths"),
    head_dims: str = typer.Option("64", help="head dimensions"),
    tiles: str = typer.Option("64", help="flash tile sizes (queries = keys)"),
    seeds: int = typer.Option(3, help="input draws per point"),
    acc_chunk: int = typer.Option(0, help="round the matmul running sum every N products (0: only the result)"),
    attribution: bool = typer.Option(False, help="also: which precision makes flash deviate (at the longest sequence)"),
    plot: Path = typer.Option(Path("deviation.png"), help="where to save the plot"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the rows as JSON here"),
) -> None:
    """Numeric deviation of attention implementations from a float64 golden reference."""
    from rich.table import Table

    from elastiq.labs.analysis.attention import AttentionPrecision
    from elastiq.labs.analysis.numerics import attribution as run_attribution
    from elastiq.labs.analysis.numerics import plot_deviation, sweep

    try:
        precs = [AttentionPrecision.of(p) for p in _names(precisions)]
        if inputs or accumulate or stats or output:
            precs.append(AttentionPrecision.of(inputs or "fp32", accumulate, stats, output))
        lens, dims, blocks = _ints(seq_lens, "--seq-lens"), _ints(head_dims, "--head-dims"), _ints(tiles, "--tiles")
        rows = sweep(_names(impls), precs, lens, dims, blocks, seeds, acc_chunk or None)
        att = run_attribution(seq_len=max(lens), head_dim=dims[0], block=blocks[0], seeds=seeds,
                              acc_chunk=acc_chunk or None) if attribution else None
    except ValueError as e:
        fail(e)
    t = Table(title=f"attention deviation from float64 golden, mean over {seeds} seeds")
    for c in ("impl", "precision", "seq", "dim", "tile", "max |dev|", "mean |dev|", "rel. error"):
        t.add_column(c, justify="left" if c in ("impl", "precision") else "right")
    for r in rows:
        t.add_row(r["impl"], r["precision"], str(r["seq_len"]), str(r["head_dim"]), str(r["block"] or "-"),
                  f"{r['max_abs']:.3e}", f"{r['mean_abs']:.3e}", f"{r['rel']:.3e}")
    console.print(t)
    if att:
        a = Table(title=f"which precision makes flash deviate (seq {max(lens)}, tile {blocks[0]})")
        for c in ("configuration", "impl", "max |dev|", "vs baseline"):
            a.add_column(c, justify="left" if c in ("configuration", "impl") else "right")
        base = att[0]["max_abs"]
        for r in att:
            a.add_row(r["config"], r["impl"], f"{r['max_abs']:.3e}", f"{r['max_abs'] / base:.2f}x")
        console.print(a)
    plot_deviation(rows, plot)
    console.print(f"wrote {plot}")
    write_json(json_out, {"rows": rows, "attribution": att})


def faults(
    model: str = typer.Argument("smollm2-135m", help="a built-in name, a Hugging Face directory, a .gguf file or a saved packed model"),
    storage: str = typer.Option("fp32", "--format", "-f", help="how the weights are stored: fp32 (as loaded), fp16, bf16, or an elastiq format"),
    layers: str = typer.Option("model.layers.*", help="comma-separated layer-name patterns to inject into"),
    kind: str = typer.Option("weight", help="weight, activation, or both (one of each per run)"),
    site: Optional[str] = typer.Option(None, help="weight site: codes, scales, selectors, tensor_scale, or value (float)"),
    bits: Optional[str] = typer.Option(None, help="bit positions to draw from (default: all)"),
    flips: int = typer.Option(1, help="flips per run (of each kind)"),
    trials: int = typer.Option(30, help="runs (each in a random layer)"),
    act_format: str = typer.Option("fp32", help="precision the faulty layer's output is held in (activation faults)"),
    text: str = typer.Option("wiki-eval", help="a built-in text or a UTF-8 file"),
    tokens: int = typer.Option(128, help="tokens scored per run"),
    context: int = typer.Option(64, help="tokens per window"),
    seed: int = typer.Option(0, help="campaign seed (same seed, same faults)"),
    by: str = typer.Option("group", help="table and plot per: group (layer kind), layer, or bit"),
    plot: Path = typer.Option(Path("faults.png"), help="where to save the per-layer plot"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON here"),
) -> None:
    """Bit-flip campaign on a language model: next-token mismatch and perplexity change."""
    from elastiq.labs.analysis.precision import precision
    from elastiq.labs.analysis.resilience import CampaignSpec, lm_campaign, stored_injector
    from elastiq.labs.analysis.resilience import plot as plot_rates
    from elastiq.labs.analysis.resilience import table
    from elastiq.data import tokenize

    if by not in ("group", "layer", "bit"):
        fail(ValueError(f"--by must be group, layer or bit, got {by!r}"))
    pats = _names(layers)
    try:
        precision(storage)  # refuse an unknown storage before loading the model
        spec = CampaignSpec(layers=pats, kind=kind, site=site, bits=_ints(bits, "--bits") if bits else None, flips=flips,
                            trials=trials, per_layer=False, act_format=act_format, seed=seed)
        spec.check()
        precision(act_format)
    except ValueError as e:
        fail(e)
    m, tok = load_model(model)
    ids = tokenize(tok, load_text(text))[:tokens]
    n = len(ids) // context
    if n < 1:
        fail(ValueError(f"the text has {len(ids)} tokens, fewer than one window of --context {context}"))
    ids = ids[: n * context].view(n, context)
    try:
        inj = stored_injector(m, storage, pats)
        res = lm_campaign(m, ids, spec, injector=inj)
    except ValueError as e:
        fail(e)
    key = f"per_{by}"
    console.print(table(res, f"{model} stored in {storage}: {kind} faults, {trials} runs x {ids.numel()} tokens "
                             f"(golden perplexity {res['golden_perplexity']:.3f})", by=key))
    plot_rates({storage: res}, plot, f"{model} ({storage}): next-token mismatch per {by}", by=key)
    console.print(f"wrote {plot}")
    write_json(json_out, res)


SUITE_NAMES = ("sd-unet", "pixart-dit", "video-unet3d", "smollm2-prefill", "smollm2-decode")


def profile(
    model: str = typer.Argument(..., help=f"model from the suite: {', '.join(SUITE_NAMES)}"),
    steps: Optional[int] = typer.Option(None, help="denoising steps, prefills or decode tokens (default 3; decode 16)"),
    side: Optional[int] = typer.Option(None, help="latent side of diffusion models, a multiple of 8 (image = 8x)"),
    frames: Optional[int] = typer.Option(None, help="frames of video-unet3d (default 8)"),
    tokens: Optional[int] = typer.Option(None, help="prompt tokens of the smollm2 workloads (default 256)"),
    backend: str = typer.Option("default", help="scaled-dot-product attention backend: default, flash, math "
                                                "(efficient, cudnn: GPU only)"),
    device: str = typer.Option("cpu", help="cpu, or cuda where a GPU is at hand"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)"),
    plot: Path = typer.Option(None, help="stacked-bar PNG (default profile-MODEL.png)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result as JSON here"),
    tiny: bool = typer.Option(False, "--tiny", help="tiny configurations of the diffusion models (smoke tests)"),
) -> None:
    """Where the time goes: operator-class shares, FLOPs and attention lengths per step of a suite model."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    import torch

    from elastiq.labs.analysis.profiling import ProfileError
    from elastiq.labs.analysis.profiling import profile as run_profile
    from elastiq.labs.analysis.profiling.report import plot as plot_result
    from elastiq.labs.analysis.profiling.report import table, write_json
    from elastiq.labs.analysis.profiling.suite import build
    from elastiq.progress import progress_bar

    try:
        if threads is not None:
            if threads < 1:
                raise ProfileError(f"threads must be a positive integer, not {threads}")
            torch.set_num_threads(threads)
        with console.status(f"building {model} ..."):
            w = build(model, steps=steps, side=side, frames=frames, tokens=tokens, tiny=tiny, device=device)
        cols = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn()]
        with progress_bar(*cols, console=console) as prog:
            task = prog.add_task(f"profiling {model}", total=2 * w.steps + 1)
            r = run_profile(w, backend=backend,
                            on_step=lambda phase, i: prog.update(task, advance=1, description=f"{model}: {phase} {i + 1}"))
    except ProfileError as e:
        fail(e)
    console.print(table(r))
    out = plot or Path(f"profile-{model}.png")
    plot_result(r, out)
    console.print(f"wrote {out}")
    if json_out:
        write_json(r.as_dict(), json_out)
        console.print(f"wrote {json_out}")
