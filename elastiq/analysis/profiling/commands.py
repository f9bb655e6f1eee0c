"""The ``elastiq profile`` command (registered in elastiq/cli.py). torch loads inside the function."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

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

    from elastiq.progress import progress_bar

    from elastiq.cli import _fail, console

    from . import ProfileError
    from . import profile as run_profile
    from .report import plot as plot_result
    from .report import table, write_json
    from .suite import build

    import torch

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
        _fail(e)
    console.print(table(r))
    out = plot or Path(f"profile-{model}.png")
    plot_result(r, out)
    console.print(f"wrote {out}")
    if json_out:
        write_json(r.as_dict(), json_out)
        console.print(f"wrote {json_out}")
