"""The ``elastiq serve`` command: an OpenAI-compatible server whose model follows a memory
budget, with a status page at /. The web stack loads inside the command."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, fail, mib
from . import elastic as E
from .elastic import budget_options


def serve(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`, or a model saved by "
                                              "`elastiq quantize --out`"),
    budget: Optional[str] = E.BUDGET,
    available: bool = E.AVAILABLE,
    cgroup: bool = E.CGROUP,
    trace: Optional[Path] = E.TRACE,
    reserve: str = E.RESERVE,
    speed: float = E.SPEED,
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)"),
    port: int = typer.Option(8000, help="port to listen on"),
    api_key: Optional[str] = typer.Option(None, envvar="ELASTIQ_API_KEY",
                                          help="require 'Authorization: Bearer KEY' on every endpoint but /health"),
    engine: str = E.ENGINE,
    threads: Optional[int] = E.THREADS,
) -> None:
    """Serve ARTIFACT over OpenAI's API (/v1/chat/completions, /v1/completions) with a live status page."""
    if not 0 <= port < 65536:
        fail(ValueError(f"--port must lie in 0..65535, got {port}"))
    source, events = budget_options(budget, available, cgroup, trace, reserve, speed, threads)
    import uvicorn

    from elastiq.serve import create_app, open_service

    try:
        with console.status(f"opening {artifact} ..."):
            service = open_service(artifact, engine, threads, source, events, speed,
                                   warn=lambda m: console.print(f"[yellow]{m}[/yellow]"))
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    s = service.status()
    console.print(f"{s['model']} on the {s['engine']} engine: option {s['option']}, {mib(s['weight_bytes'])} MiB of "
                  f"weights; budget: {s['budget_source']}. Status page: http://{host}:{port}/")
    try:
        uvicorn.run(create_app(service, api_key), host=host, port=port, log_level="warning")
    finally:
        service.close()
