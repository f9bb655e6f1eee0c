"""CLI commands of the numerics and reliability lab: ``elastiq deviation`` and ``elastiq faults``.

Heavy imports stay inside the functions so that the CLI starts quickly."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


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
    import json

    from rich.table import Table

    from elastiq.cache import atomic_write_text
    from elastiq.cli import _fail, console

    from .attention import AttentionPrecision
    from .numerics import attribution as run_attribution
    from .numerics import plot_deviation, sweep

    try:
        precs = [AttentionPrecision.of(p) for p in _names(precisions)]
        if inputs or accumulate or stats or output:
            precs.append(AttentionPrecision.of(inputs or "fp32", accumulate, stats, output))
        lens, dims, blocks = _ints(seq_lens, "--seq-lens"), _ints(head_dims, "--head-dims"), _ints(tiles, "--tiles")
        rows = sweep(_names(impls), precs, lens, dims, blocks, seeds, acc_chunk or None)
        att = run_attribution(seq_len=max(lens), head_dim=dims[0], block=blocks[0], seeds=seeds,
                              acc_chunk=acc_chunk or None) if attribution else None
    except ValueError as e:
        _fail(e)
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
    if json_out:
        atomic_write_text(json_out, json.dumps({"rows": rows, "attribution": att}, indent=2))
        console.print(f"wrote {json_out}")


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
    import json

    from elastiq.cache import atomic_write_text
    from elastiq.cli import _fail, _load, _text, console
    from elastiq.data import tokenize
    from .precision import precision
    from .resilience import CampaignSpec, lm_campaign, stored_injector
    from .resilience import plot as plot_rates
    from .resilience import table

    if by not in ("group", "layer", "bit"):
        _fail(ValueError(f"--by must be group, layer or bit, got {by!r}"))
    pats = _names(layers)
    try:
        precision(storage)  # refuse an unknown storage before loading the model
        spec = CampaignSpec(layers=pats, kind=kind, site=site, bits=_ints(bits, "--bits") if bits else None, flips=flips,
                            trials=trials, per_layer=False, act_format=act_format, seed=seed)
        spec.check()
        precision(act_format)
    except ValueError as e:
        _fail(e)
    m, tok = _load(model)
    ids = tokenize(tok, _text(text))[:tokens]
    n = len(ids) // context
    if n < 1:
        _fail(ValueError(f"the text has {len(ids)} tokens, fewer than one window of --context {context}"))
    ids = ids[: n * context].view(n, context)
    try:
        inj = stored_injector(m, storage, pats)
        res = lm_campaign(m, ids, spec, injector=inj)
    except ValueError as e:
        _fail(e)
    key = f"per_{by}"
    console.print(table(res, f"{model} stored in {storage}: {kind} faults, {trials} runs x {ids.numel()} tokens "
                             f"(golden perplexity {res['golden_perplexity']:.3f})", by=key))
    plot_rates({storage: res}, plot, f"{model} ({storage}): next-token mismatch per {by}", by=key)
    console.print(f"wrote {plot}")
    if json_out:
        atomic_write_text(json_out, json.dumps(res, indent=2, default=str))
        console.print(f"wrote {json_out}")
