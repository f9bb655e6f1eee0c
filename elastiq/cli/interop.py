"""The ``elastiq export`` commands: hand a model to another tool (``export gguf``: a GGUF
file for llama.cpp). Heavy modules load inside the functions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import console, fail, mib, write_json

export_app = typer.Typer(no_args_is_help=True, help="Write a model for another tool (llama.cpp's GGUF).")

SOURCE_HELP = ("a saved packed model, an elastic artifact (with --option), a Hugging Face directory, a .gguf file "
               "or a built-in name")


@export_app.command("gguf")
def gguf(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="the .gguf file to write"),
    option: Optional[int] = typer.Option(None, help="the artifact's option to export (default: its largest)"),
    fallback: Optional[str] = typer.Option(None, help="convert tensors no GGUF type holds exactly to q8_0 or f16 "
                                                      "(the report gives the KL it costs) instead of refusing"),
    tokenizer_pre: Optional[str] = typer.Option(None, help="llama.cpp's name of the pre-tokenizer (e.g. smollm, "
                                                           "llama-bpe, qwen2); default: 'default'"),
    kl_text: Optional[str] = typer.Option(None, help="text to measure a fallback's KL on (default: wiki-eval)"),
    kl_tokens: int = typer.Option(2048, help="tokens to measure a fallback's KL on"),
    report: Optional[Path] = typer.Option(None, help="also write the report as JSON here"),
    overwrite: bool = typer.Option(False, help="replace an existing file"),
) -> None:
    """Write SOURCE as one GGUF file: each packed tensor in the GGUF type that holds it
    exactly (int4 Q4_0, int5 Q5_0, int8 Q8_0, mxfp4 MXFP4), floats as they are."""
    from .common import load_text

    if fallback is not None and fallback not in ("q8_0", "f16"):
        fail(ValueError(f"--fallback must be q8_0 or f16, got {fallback!r}"))
    if out.exists() and not overwrite:
        fail(FileExistsError(f"{out} already exists (pass --overwrite to replace it)"))
    text = load_text(kl_text) if kl_text else None
    from elastiq.interop import export_gguf

    try:
        with console.status(f"exporting {source} ..."):
            r = export_gguf(source, out, option=option, fallback=fallback, tokenizer_pre=tokenizer_pre,
                            kl_text=text, kl_tokens=kl_tokens, overwrite=overwrite)
    except (ValueError, FileExistsError, FileNotFoundError, ImportError) as e:
        fail(e)
    types = ", ".join(f"{n} {k}" for k, n in sorted(r["types"].items()))
    where = f" (option {r['option']}, {mib(r['option_bytes'])} MiB of weights)" if "option" in r else ""
    console.print(f"wrote {out}{where}: {mib(r['bytes'])} MiB, {r['tensors']} tensors ({types}), "
                  f"tokenizer pre {r['tokenizer_pre']}")
    if r["changed"]:
        table = Table(title=f"converted by --fallback {fallback}: KL {r['kl']:.5f} nats/token over {r['tokens']} tokens")
        for col in ("tensor", "format", "written as"):
            table.add_column(col)
        for c in r["changed"]:
            table.add_row(c["tensor"], c["format"], c["type"])
        console.print(table)
    write_json(report, r)


def lm_eval(ctx: typer.Context) -> None:
    """lm-evaluation-harness's command line (lm-eval 0.4) with the ``elastiq`` model registered:
    elastiq lm-eval run --model elastiq --model_args pretrained=MODEL,format=nxfp4 --tasks ..."""
    import sys

    try:
        import elastiq.interop.lm_eval_model  # noqa: F401  registers the model
        from lm_eval.__main__ import cli_evaluate
    except ImportError as e:
        fail(ImportError(f"elastiq lm-eval needs lm-evaluation-harness: pip install lm-eval==0.4.13 ({e})"))
    sys.argv = ["lm-eval", *ctx.args]
    cli_evaluate()
