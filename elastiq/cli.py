"""The ``elastiq`` command."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="elastiq: low-bit formats and elastic model hosting.")
console = Console(width=None if Console().is_terminal else 150)


@app.callback()
def main() -> None:
    """elastiq: run language models on machines whose free memory moves under them."""


def _sample(rows: int, cols: int, seed: int):
    """A weight-like sample: Student-t(4) elements (outliers) times log-normal row scales."""
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t = torch.distributions.StudentT(4.0).sample((rows, cols))
    return t * torch.exp(0.5 * torch.randn(rows, 1, generator=g)) * 0.02


@app.command()
def formats(
    only: Optional[List[str]] = typer.Argument(None, help="formats to show (names or 'key=value,...' strings); default: the catalog"),
    values: Optional[str] = typer.Option(None, "--values", help="print every code's value of this format's element grid(s)"),
    rows: int = typer.Option(1024, help="rows of the sample tensor"),
    cols: int = typer.Option(1024, help="columns of the sample tensor"),
    seed: int = typer.Option(0, help="seed of the sample tensor"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the table as JSON here"),
) -> None:
    """The format catalog, and a cast of a sample tensor to each format."""
    from elastiq import formats as F

    try:
        if values:
            _print_values(F.get(values))
            return
        fmts = [F.get(n) for n in (only or F.names())]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if rows < 1 or cols < 1:
        _fail(ValueError(f"--rows and --cols must be at least 1, got {rows} x {cols}"))
    if json_out and json_out.is_dir():
        _fail(ValueError(f"--json {json_out} is a directory: give a file name, e.g. {json_out / 'formats.json'}"))
    x = _sample(rows, cols, seed)
    table = Table(title=f"elastiq formats: cast of a {rows}x{cols} Student-t(4) sample (seed {seed})")
    for col, just in [("format", "left"), ("element grid(s)", "left"), ("block", "right"), ("scale", "left"),
                      ("round", "left"), ("bits/elem", "right"), ("packed KiB", "right"), ("rel. MSE", "right"),
                      ("SQNR dB", "right"), ("quantize ms", "right")]:
        table.add_column(col, justify=just)
    results = []
    power = float((x.double() ** 2).sum())
    for fmt in fmts:
        t0 = time.perf_counter()
        p = F.quantize(x, fmt)
        ms = (time.perf_counter() - t0) * 1e3
        err = float(((F.dequantize(p).double() - x.double()) ** 2).sum())
        rel = err / power
        r = {
            "format": fmt.name, "grids": [g.name for g in fmt.grids], "block": fmt.block or "row",
            "scale": fmt.scale.name + ("+fp32" if fmt.tensor_scale else ""), "rounding": fmt.rounding,
            "bits_per_element": F.bits_per_element(fmt, cols), "nbytes": p.nbytes, "rel_mse": rel,
            "sqnr_db": -10 * __import__("math").log10(rel) if rel > 0 else float("inf"), "quantize_ms": ms,
        }
        results.append(r)
        table.add_row(r["format"], _grids_label(fmt.grids), str(r["block"]), r["scale"], r["rounding"],
                      f"{r['bits_per_element']:.4g}", f"{p.nbytes / 1024:.1f}", f"{rel:.3e}", f"{r['sqnr_db']:.2f}", f"{ms:.1f}")
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2))
        console.print(f"wrote {json_out}")


def _grids_label(grids) -> str:
    """'e2m1~±5 | e1m2~±0.25' for grids that come in +/- recycled pairs."""
    names = [g.name for g in grids]
    out = []
    for n in names:
        if "~-" in n and n.replace("~-", "~") in names:
            continue
        out.append(n.replace("~", "~±") if n.replace("~", "~-") in names else n)
    return " | ".join(out)


def _fail(e: Exception) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)  # one line; file names are not markup
    raise typer.Exit(2)


def _load(model: str):
    import elastiq

    try:
        with console.status(f"loading {model} ..."):
            return elastiq.load(model)
    except (ValueError, FileNotFoundError, ImportError) as e:
        _fail(e)


def _text(text: str) -> str:
    from elastiq.data import load_text

    try:
        return load_text(text)
    except (ValueError, FileNotFoundError, ImportError) as e:
        _fail(e)


MODEL_HELP = "a built-in name (smollm2-135m), a Hugging Face directory, a .gguf file, or a saved packed model"
TEXT_HELP = "a built-in text (wiki-eval) or a UTF-8 text file"
EMBEDDING_HELP = "also pack the token embedding (and an output head tied to it) in this format; 'same': the --format"


@app.command()
def quantize(
    model: str = typer.Argument("smollm2-135m", help=MODEL_HELP),
    fmt: str = typer.Option(..., "--format", "-f", help="a format name or 'key=value,...' string"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the packed model to"),
    act_format: Optional[str] = typer.Option(None, help="also round each linear layer's input onto this format"),
    embedding: Optional[str] = typer.Option(None, help=EMBEDDING_HELP),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
) -> None:
    """Pack MODEL's linear layers (and optionally its embedding) in a format and save it."""
    import elastiq
    from elastiq.cache import check_output

    try:
        check_output(out, overwrite, owner="elastiq.json")  # before the model loads
    except (ValueError, FileExistsError) as e:
        _fail(e)
    m, tok = _load(model)
    try:
        elastiq.quantize(m, fmt, act_format=act_format, embedding=embedding)
        elastiq.save(m, out, tokenizer=tok, overwrite=overwrite)
    except (ValueError, FileExistsError) as e:
        _fail(e)
    report = m.elastiq_report
    console.print(f"{report.summary()}; kept in float: {', '.join(sorted(report.kept)) or 'nothing'}")
    console.print(f"wrote {out} ({elastiq.weight_bytes(m) / 2**20:.1f} MiB of weights)")


@app.command("eval")
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
        _fail(e)
    m, tok = _load(model)
    try:
        ev = evaluate(m, tok, _text(text), max_tokens=max_tokens, context=context)
    except ValueError as e:
        _fail(e)
    console.print(f"perplexity {ev.perplexity:.4f} over {ev.tokens} tokens (context {context}), "
                  f"weights {elastiq.weight_bytes(m) / 2**20:.1f} MiB, {ev.seconds:.1f} s")


@app.command()
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
    from elastiq import formats as F
    from elastiq.compare import compare as run_compare
    from elastiq.compare import format_names, plot_quality

    try:
        names = format_names(fmts)
        for n in [embedding] if embedding not in (None, "same") else []:
            F.get(n)
    except ValueError as e:
        _fail(e)
    m, tok = _load(model)
    emb = f", embedding {embedding}" if embedding else ", embedding kept float"
    table = Table(title=f"{model}: {max_tokens or 'all'} tokens of {text}, context {context}{emb}")
    for col in ["format", "bits/weight", "weight MiB", "perplexity", "Δ perplexity", "KL (nats)"]:
        table.add_column(col, justify="left" if col == "format" else "right")
    try:
        results = run_compare(m, tok, _text(text), names, max_tokens=max_tokens or None, context=context, embedding=embedding,
                              on_result=lambda r: console.print(f"  {r.format}: perplexity {r.perplexity:.3f}"))
    except ValueError as e:
        _fail(e)
    for r in results:
        table.add_row(r.format, f"{r.bits_per_weight:.3f}", f"{r.weight_bytes / 2**20:.1f}", f"{r.perplexity:.3f}",
                      f"{r.delta_perplexity:+.3f}", f"{r.kl:.4f}")
    console.print(table)
    plot_quality(results, plot, f"{model}, {results[0].tokens} tokens of {text}")
    console.print(f"wrote {plot}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps([r.as_dict() for r in results], indent=2))
        console.print(f"wrote {json_out}")


@app.command()
def correct(
    model: str = typer.Argument("smollm2-135m", help=MODEL_HELP),
    fmt: str = typer.Option(..., "--format", "-f", help="the format to pack the linear layers in"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the packed model and its adapters"),
    rank: int = typer.Option(16, help="LoRA rank of each adapter"),
    steps: int = typer.Option(200, help="optimizer steps"),
    init: str = typer.Option("svd", help="svd (from the quantization error, LoftQ-style) or zero (standard LoRA)"),
    lr: float = typer.Option(1e-3, help="peak learning rate (warm-up, then cosine to 10%)"),
    context: int = typer.Option(256, help="tokens per training window"),
    calib: str = typer.Option("wiki-calib", help="calibration text (never the evaluation text)"),
    calib_tokens: int = typer.Option(16384, help="calibration tokens the teacher scores"),
    lm_weight: float = typer.Option(0.0, help="weight of the next-token loss added to the KL"),
    embedding: Optional[str] = typer.Option(None, help=EMBEDDING_HELP),
    adapter_dtype: str = typer.Option("float32", help="adapter weights: float32, or bfloat16 (half the bytes)"),
    optimizer_state: str = typer.Option("float32", help="AdamW moments: float32 or bfloat16"),
    eval_tokens: int = typer.Option(4096, help="wiki-eval tokens for perplexity before and after (0: skip)"),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
) -> None:
    """Pack MODEL and train LoRA adapters that pull it back toward the float model (LREC).
    Interrupted runs resume from OUT.checkpoint."""
    import shutil

    import elastiq
    from elastiq import formats as F
    from elastiq.cache import check_output
    from elastiq.evaluate import evaluate
    from elastiq.lrec import correct as run_correct, effective_bits, save_adapters
    from elastiq.lrec.io import unwrapped
    from elastiq.lrec.train import release_freed_memory

    if init not in ("svd", "zero"):
        _fail(ValueError(f"--init must be svd or zero, got {init!r}"))
    try:
        check_output(out, overwrite, owner="elastiq.json")
    except (ValueError, FileExistsError) as e:
        _fail(e)
    if calib == "wiki-eval":
        _fail(ValueError("calibrating on the evaluation text would score the model on what it was trained on: "
                         "use wiki-calib or your own file"))
    try:
        F.get(fmt)
    except ValueError as e:
        _fail(e)
    release_freed_memory()  # before anything loads, so that memory freed later goes back
    try:
        q, tok, targets = _correction_setup(model, fmt, _text(calib), rank, init, adapter_dtype, embedding, context,
                                            calib_tokens)
    except (ValueError, FileNotFoundError, ImportError) as e:
        _fail(e)
    ev_text = _text("wiki-eval") if eval_tokens else None
    before = evaluate(q, tok, ev_text, max_tokens=eval_tokens, context=1024).perplexity if ev_text else None
    ck = out.with_name(out.name + ".checkpoint")
    try:
        log = run_correct(q, targets, steps, lr=lr, lm_weight=lm_weight, checkpoint_dir=ck, optimizer_state=optimizer_state)
    except ValueError as e:
        _fail(e)
    if log.resumed_from:
        console.print(f"resumed from step {log.resumed_from} ({ck})")
    after = evaluate(q, tok, ev_text, max_tokens=eval_tokens, context=1024).perplexity if ev_text else None
    with unwrapped(q):
        elastiq.save(q, out, tokenizer=tok, overwrite=overwrite)
    save_adapters(q, out / "adapters")
    shutil.rmtree(ck, ignore_errors=True)
    bits = effective_bits(q)
    if log.losses:
        console.print(f"KL loss {log.losses[0]:.4f} -> {log.losses[-1]:.4f} over {len(log.losses)} steps "
                      f"({sum(log.seconds) / len(log.seconds):.2f} s/step)")
    if before is not None:
        console.print(f"perplexity on {eval_tokens} tokens of wiki-eval: {before:.3f} before, {after:.3f} after")
    console.print(f"bits per weight {bits['bits_per_weight']:.3f} -> {bits['bits_per_weight_with_adapters']:.3f} with "
                  f"adapters (+{bits['adapter_bytes'] / 2**20:.2f} MiB); wrote {out}")


def _correction_setup(model: str, fmt: str, text: str, rank: int, init: str, adapter_dtype: str, embedding, context: int,
                      calib_tokens: int):
    """(packed model with adapters, tokenizer, teacher targets): one decoder layer at a time
    (elastiq.lrec.stream), or, for a model that cannot be read that way, from the whole
    float model in memory."""
    from elastiq.lrec.stream import StreamUnsupported, in_memory_setup, stream_setup
    from elastiq.models import float_checkpoint_dir
    from elastiq.models.hf import auto_tokenizer

    with console.status(f"finding the float weights of {model} ..."):
        source = float_checkpoint_dir(model)
    tok = auto_tokenizer(source)
    options = dict(init=init, dtype=adapter_dtype, embedding=embedding, context=context, max_tokens=calib_tokens)
    try:
        q, targets = stream_setup(source, fmt, tok, text, rank, **options)
        return q, tok, targets
    except StreamUnsupported as e:
        console.print(f"[yellow]{e}: setting up with the whole float model in memory instead")
    fp, tok = _load(model)
    q, targets = in_memory_setup(fp, fmt, tok, text, rank, **options)
    return q, tok, targets


def _print_values(fmt) -> None:
    for g in fmt.grids:
        if g.bits > 8:
            console.print(f"{g.name}: {1 << g.bits} codes, too many to list")
            continue
        t = Table(title=f"{fmt.name}: grid {g.name} ({g.bits} bits, max {g.max_value:g})")
        t.add_column("code", justify="right")
        t.add_column("bits", justify="right")
        t.add_column("value", justify="right")
        for code, v in enumerate(g.values().tolist()):
            t.add_row(str(code), format(code, f"0{g.bits}b"), f"{v:g}")
        console.print(t)


from elastiq.planning.commands import carbon, perf  # noqa: E402  (planning: deployment performance and carbon)

from elastiq.analysis.commands_lab import deviation as _deviation, faults as _faults  # noqa: E402
from elastiq.analysis.profiling.commands import profile as _profile_command  # noqa: E402

app.command("perf")(perf)
app.command("carbon")(carbon)
app.command("profile")(_profile_command)
app.command("deviation")(_deviation)
app.command("faults")(_faults)

from elastiq.elastic.commands import build as _build, host as _host, prune as _prune  # noqa: E402  (elastic hosting)

app.command("build")(_build)
app.command("prune")(_prune)
app.command("host")(_host)

from elastiq.lrec.commands import correct_option as _correct_option  # noqa: E402  (LREC on an elastic option)

app.command("correct-option")(_correct_option)

if __name__ == "__main__":
    app()
