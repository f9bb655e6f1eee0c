"""The ``elastiq correct-option`` command (registered at the end of elastiq/cli.py): LREC
adapters trained on one option of an elastic artifact and stored there as one more
option. Heavy modules load inside the function."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def correct_option(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`"),
    option: Optional[int] = typer.Option(None, help="the chain option to correct (default: the family's smallest)"),
    model: Optional[str] = typer.Option(None, help="the float model (default: the one the artifact was built from)"),
    rank: int = typer.Option(16, help="LoRA rank of each adapter"),
    steps: int = typer.Option(40, help="optimizer steps"),
    init: str = typer.Option("svd", help="svd (from the quantization error) or zero"),
    lr: float = typer.Option(1e-3, help="peak learning rate"),
    calib_tokens: int = typer.Option(16384, help="calibration tokens the teacher scores"),
    adapter_dtype: str = typer.Option("bfloat16", help="adapter weights: bfloat16 or float32"),
    name: Optional[str] = typer.Option(None, help="the new option's name (default lrec-r<rank>)"),
) -> None:
    """Train LREC adapters on one option of ARTIFACT and add them to it as one more option."""
    from elastiq import cli
    from elastiq.elastic import Artifact, ArtifactError

    from .elastic import correct_option as run
    from .train import release_freed_memory

    try:
        a = Artifact(artifact)
        k = a.family.options[-1] if option is None else option
        source = model or a.manifest["info"].get("source")
        if not source:
            raise ValueError(f"{artifact} does not say which float model it was built from: give --model")
    except (ArtifactError, ValueError) as e:
        cli._fail(e)
    release_freed_memory()  # before the float model loads, so that memory freed later goes back
    fp, tok = cli._load(source)
    try:
        entry = run(artifact, k, fp, tok, rank=rank, steps=steps, init=init, name=name, lr=lr,
                    calib_tokens=calib_tokens, adapter_dtype=adapter_dtype)
    except (ArtifactError, ValueError) as e:
        cli._fail(e)
    before = a.manifest["quality"]["estimated"][k]
    cli.console.print(f"option {k}+{entry['name']}: {(a.option_bytes[k] + entry['bytes']) / 2**20:.2f} MiB "
                      f"(+{entry['bytes'] / 2**20:.2f} MiB of adapters); KL from float {before:.4f} -> {entry['kl']:.4f}")
