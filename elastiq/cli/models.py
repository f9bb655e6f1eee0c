"""The ``elastiq quantize``, ``elastiq eval`` and ``elastiq compare`` commands: pack a model,
score it, compare formats on it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from elastiq.options import METHODS, CalibOptions

from .common import EMBEDDING_HELP, MODEL_HELP, TEXT_HELP, check_format, console, fail, load_model, load_text, write_json

C = CalibOptions  # the calibration defaults below are its defaults


def quantize(
    model: str = typer.Argument("smollm2-135m", help=MODEL_HELP),
    fmt: str = typer.Option(..., "--format", "-f", help="a format name or 'key=value,...' string"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the packed model to"),
    act_format: Optional[str] = typer.Option(None, help="also round each linear layer's input onto this format"),
    embedding: Optional[str] = typer.Option(None, help=EMBEDDING_HELP),
    method: str = typer.Option("rtn", help=f"how to cast the weights: {', '.join(METHODS)} (calibrated, one decoder "
                                           f"layer at a time where the model allows)"),
    calib: str = typer.Option("wiki-calib", help="calibration text for the calibrated methods (never the evaluation text)"),
    calib_tokens: int = typer.Option(C.tokens, help="calibration tokens"),
    context: int = typer.Option(C.context, help="tokens per calibration window"),
    act_order: bool = typer.Option(C.act_order, help="GPTQ: visit the input columns by decreasing Hessian diagonal"),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
) -> None:
    """Pack MODEL's linear layers (and optionally its embedding) in a format and save it."""
    import elastiq
    from elastiq.cache import check_output

    try:
        check_output(out, overwrite, owner="elastiq.json")  # before the model loads
        options = CalibOptions(method=method, tokens=calib_tokens, context=context, act_order=act_order)
    except (ValueError, FileExistsError) as e:
        fail(e)
    check_format(fmt, embedding if embedding != "same" else None)
    if method != "rtn":
        m, tok = _calibrated(model, fmt, calib, options, embedding, act_format)
    else:
        m, tok = load_model(model)
    try:
        if method == "rtn":
            elastiq.quantize(m, fmt, act_format=act_format, embedding=embedding)
        elastiq.save(m, out, tokenizer=tok, overwrite=overwrite)
    except (ValueError, FileExistsError) as e:
        fail(e)
    report = m.elastiq_report
    console.print(f"{report.summary()} ({method}); kept in float: {', '.join(sorted(report.kept)) or 'nothing'}")
    console.print(f"wrote {out} ({elastiq.weight_bytes(m) / 2**20:.1f} MiB of weights)")


def _calibrated(model: str, fmt: str, calib: str, options, embedding, act_format):
    """(packed model, tokenizer) by a calibrated method: elastiq.calib.quantize_source."""
    from elastiq.calib import quantize_source

    if act_format is not None:
        fail(ValueError("--act-format is for round-to-nearest packing: use --method rtn with it"))
    if calib == "wiki-eval":
        fail(ValueError("calibrating on the evaluation text would tune the model on what it is scored on: "
                        "use wiki-calib or your own file"))
    text = load_text(calib)
    try:
        return quantize_source(model, fmt, text, options, embedding, text_name=calib, on_fallback=lambda e: console.print(
            f"[yellow]{e}: calibrating with the whole float model in memory instead"))
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(e)


def eval_(
    model: str = typer.Argument("smollm2-135m", help=MODEL_HELP),
    text: str = typer.Option("wiki-eval", help=TEXT_HELP),
    max_tokens: Optional[int] = typer.Option(None, help="score at most this many tokens"),
    context: int = typer.Option(1024, help="tokens per window"),
) -> None:
    """Perplexity of MODEL on a text."""
    import elastiq
    from elastiq.evaluate import check_window_args, evaluate

    try:
        check_window_args(context, max_tokens)  # before the model loads
    except ValueError as e:
        fail(e)
    m, tok = load_model(model)
    try:
        ev = evaluate(m, tok, load_text(text), max_tokens=max_tokens, context=context)
    except ValueError as e:
        fail(e)
    console.print(f"perplexity {ev.perplexity:.4f} over {ev.tokens} tokens (context {context}), "
                  f"weights {elastiq.weight_bytes(m) / 2**20:.1f} MiB, {ev.seconds:.1f} s")


def compare(
    model: str = typer.Argument("smollm2-135m", help=MODEL_HELP),
    fmts: str = typer.Option("int8,int4,mxfp4,nvfp4,nxfp4", "--formats", help="comma-separated formats"),
    text: str = typer.Option("wiki-eval", help=TEXT_HELP),
    max_tokens: Optional[int] = typer.Option(4096, help="score at most this many tokens (0: all)"),
    context: int = typer.Option(1024, help="tokens per window"),
    plot: Path = typer.Option(Path("compare.png"), help="where to save the perplexity-vs-bits plot"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON here"),
    embedding: Optional[str] = typer.Option(None, help=EMBEDDING_HELP),
) -> None:
    """Quality and size of MODEL in each format: bits per weight, bytes, perplexity, KL."""
    from elastiq.compare import compare as run_compare
    from elastiq.compare import format_names, plot_quality

    try:
        names = format_names(fmts)
    except ValueError as e:
        fail(e)
    check_format(*names, embedding if embedding != "same" else None)
    m, tok = load_model(model)
    emb = f", embedding {embedding}" if embedding else ", embedding kept float"
    table = Table(title=f"{model}: {max_tokens or 'all'} tokens of {text}, context {context}{emb}")
    for col in ["format", "bits/weight", "weight MiB", "perplexity", "Δ perplexity", "KL (nats)"]:
        table.add_column(col, justify="left" if col == "format" else "right")
    try:
        results = run_compare(m, tok, load_text(text), names, max_tokens=max_tokens or None, context=context, embedding=embedding,
                              on_result=lambda r: console.print(f"  {r.format}: perplexity {r.perplexity:.3f}"))
    except ValueError as e:
        fail(e)
    for r in results:
        table.add_row(r.format, f"{r.bits_per_weight:.3f}", f"{r.weight_bytes / 2**20:.1f}", f"{r.perplexity:.3f}",
                      f"{r.delta_perplexity:+.3f}", f"{r.kl:.4f}")
    console.print(table)
    plot_quality(results, plot, f"{model}, {results[0].tokens} tokens of {text}")
    console.print(f"wrote {plot}")
    write_json(json_out, [r.as_dict() for r in results])
