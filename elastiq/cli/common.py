"""What every command shares: the console, the one-line error exit, loading a model or a
text, parsing sizes, writing JSON. Imports typer and rich only; the rest loads on use."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console

console = Console(width=None if Console().is_terminal else 150)

MODEL_HELP = "a built-in name (smollm2-135m), a Hugging Face directory, a .gguf file, or a saved packed model"
TEXT_HELP = "a built-in text (wiki-eval) or a UTF-8 text file"
EMBEDDING_HELP = "also pack the token embedding (and an output head tied to it) in this format; 'same': the --format"
# where independent jobs run (elastiq.executors): the same options on every command that has such jobs
EXECUTOR = typer.Option("serial", "--executor", help="where the independent jobs run: serial (this process), processes "
                                                     "(this machine's cores) or ray (a Ray cluster); same results")
WORKERS = typer.Option(None, "--workers", help="worker processes or Ray CPUs (default: this machine's cores; with "
                                               "--ray-address, the cluster's CPUs)")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="join this Ray cluster (ray.init(address=...)); default: start "
                                                       "a local one")


def fail(e: Exception) -> NoReturn:
    """Print one line naming the problem and exit with status 2."""
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)  # one line; file names are not markup
    raise typer.Exit(2)


def open_executor(kind: str, workers: Optional[int], address: Optional[str], threads: int = 1):
    """An elastiq.executors executor, or the one-line error."""
    from elastiq.executors import make_executor

    try:
        return make_executor(kind, workers, address, threads)
    except ValueError as e:
        fail(e)


def load_model(model: str):
    """(model, tokenizer) of a built-in name, a Hugging Face directory, a .gguf file or a saved packed model."""
    import elastiq

    try:
        with console.status(f"loading {model} ..."):
            return elastiq.load(model)
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(e)


def load_text(text: str) -> str:
    """A built-in text by name, or a UTF-8 file."""
    from elastiq.data import load_text as load

    try:
        return load(text)
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(e)


def check_format(*names: Optional[str]) -> None:
    """Refuse an unknown format before anything heavy loads (None is skipped)."""
    from elastiq import formats as F

    try:
        for n in names:
            if n is not None:
                F.get(n)
    except ValueError as e:
        fail(e)


def parse_size(text: str) -> int:
    """Bytes from '300MiB', '1.5 GB', '123456' (elastiq.elastic.budget.parse_bytes)."""
    from elastiq.elastic.budget import parse_bytes

    return parse_bytes(text)


def mib(x) -> str:
    return f"{x / 2**20:.2f}"


def write_json(path: Optional[Path], data) -> None:
    """Write ``data`` as JSON to ``path`` (atomically) and say so; nothing when ``path`` is None."""
    if path:
        from elastiq.cache import atomic_write_text

        atomic_write_text(path, json.dumps(data, indent=2, default=str))
        console.print(f"wrote {path}")
