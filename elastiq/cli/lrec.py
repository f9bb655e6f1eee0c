"""The ``elastiq correct`` and ``elastiq correct-option`` commands: LREC adapters trained on a
packed model, or on one option of an elastic artifact (stored there as one more option)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from elastiq.options import DTYPES, METHODS, LrecOptions

from .common import EMBEDDING_HELP, MODEL_HELP, check_format, console, fail, load_model, load_text


L = LrecOptions  # the defaults below are its defaults
RANK_HELP, STEPS_HELP, LR_HELP = "LoRA rank of each adapter", "optimizer steps", "peak learning rate (warm-up, then cosine to 10%)"
INIT_HELP = "svd (from the quantization error, LoftQ-style) or zero (standard LoRA)"
DTYPE_HELP = "adapter weights: float32, or bfloat16 (half the bytes)"


def _options(**fields) -> LrecOptions:
    try:
        return LrecOptions(**fields)
    except ValueError as e:
        fail(e)


def correct(
    model: str = typer.Argument("smollm2-135m", help=MODEL_HELP),
    fmt: str = typer.Option(..., "--format", "-f", help="the format to pack the linear layers in"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the packed model and its adapters"),
    rank: int = typer.Option(L.rank, help=RANK_HELP),
    steps: int = typer.Option(L.steps, help=STEPS_HELP),
    init: str = typer.Option(L.init, help=INIT_HELP),
    lr: float = typer.Option(L.lr, help=LR_HELP),
    context: int = typer.Option(L.context, help="tokens per training window"),
    calib: str = typer.Option("wiki-calib", help="calibration text (never the evaluation text)"),
    calib_tokens: int = typer.Option(L.calib_tokens, help="calibration tokens the teacher scores"),
    method: str = typer.Option(L.method, help=f"how to cast the base: {', '.join(METHODS)} (calibrated on the teacher's windows)"),
    lm_weight: float = typer.Option(L.lm_weight, help="weight of the next-token loss added to the KL"),
    embedding: Optional[str] = typer.Option(L.embedding, help=EMBEDDING_HELP),
    adapter_dtype: str = typer.Option(L.adapter_dtype, help=DTYPE_HELP),
    optimizer_state: str = typer.Option(L.optimizer_state, help=f"AdamW moments: {' or '.join(DTYPES)}"),
    eval_tokens: int = typer.Option(4096, help="wiki-eval tokens for perplexity before and after (0: skip)"),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
) -> None:
    """Pack MODEL and train LoRA adapters that pull it back toward the float model (LREC).
    Interrupted runs resume from OUT.checkpoint."""
    from elastiq.evaluate import evaluate
    from elastiq.lrec.train import release_freed_memory

    options = _options(rank=rank, steps=steps, init=init, lr=lr, context=context, calib_tokens=calib_tokens,
                       method=method, lm_weight=lm_weight, embedding=embedding, adapter_dtype=adapter_dtype,
                       optimizer_state=optimizer_state)
    _check_request(fmt, out, calib, overwrite)
    release_freed_memory()  # before anything loads, so that memory freed later goes back
    q, tok, targets = _set_up(model, fmt, load_text(calib), options)
    ev_text = load_text("wiki-eval") if eval_tokens else None
    before = evaluate(q, tok, ev_text, max_tokens=eval_tokens, context=1024).perplexity if ev_text else None
    log = _train(q, targets, options, out.with_name(out.name + ".checkpoint"))
    after = evaluate(q, tok, ev_text, max_tokens=eval_tokens, context=1024).perplexity if ev_text else None
    _save(q, tok, out, overwrite)
    _report(q, log, out, eval_tokens, before, after)


def _check_request(fmt: str, out: Path, calib: str, overwrite: bool) -> None:
    """Refuse what would fail late, before anything loads."""
    from elastiq.cache import check_output

    try:
        check_output(out, overwrite, owner="elastiq.json")
    except (ValueError, FileExistsError) as e:
        fail(e)
    if calib == "wiki-eval":
        fail(ValueError("calibrating on the evaluation text would score the model on what it was trained on: "
                        "use wiki-calib or your own file"))
    check_format(fmt)


def _set_up(model: str, fmt: str, text: str, options: LrecOptions):
    """(packed model with adapters, tokenizer, teacher targets): lrec.stream.setup, one decoder layer at a time where it can."""
    from elastiq.lrec.stream import setup
    from elastiq.models import float_checkpoint_dir

    try:
        with console.status(f"finding the float weights of {model} ..."):
            source = float_checkpoint_dir(model)
        return setup(model, fmt, text, options, source=source, on_fallback=lambda e: console.print(
            f"[yellow]{e}: setting up with the whole float model in memory instead"))
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(e)


def _train(q, targets, options: LrecOptions, checkpoint: Path):
    from elastiq.lrec import correct as run_correct

    try:
        log = run_correct(q, targets, options, checkpoint_dir=checkpoint)
    except ValueError as e:
        fail(e)
    if log.resumed_from:
        console.print(f"resumed from step {log.resumed_from} ({checkpoint})")
    return log


def _save(q, tok, out: Path, overwrite: bool) -> None:
    """The packed model without its adapters, then the adapters beside it; the checkpoint goes."""
    import elastiq
    from elastiq.lrec import save_adapters
    from elastiq.lrec.io import unwrapped

    with unwrapped(q):
        elastiq.save(q, out, tokenizer=tok, overwrite=overwrite)
    save_adapters(q, out / "adapters")
    shutil.rmtree(out.with_name(out.name + ".checkpoint"), ignore_errors=True)


def _report(q, log, out: Path, eval_tokens: int, before, after) -> None:
    from elastiq.lrec import effective_bits

    bits = effective_bits(q)
    if log.losses:
        console.print(f"KL loss {log.losses[0]:.4f} -> {log.losses[-1]:.4f} over {len(log.losses)} steps "
                      f"({sum(log.seconds) / len(log.seconds):.2f} s/step)")
    if before is not None:
        console.print(f"perplexity on {eval_tokens} tokens of wiki-eval: {before:.3f} before, {after:.3f} after")
    console.print(f"bits per weight {bits['bits_per_weight']:.3f} -> {bits['bits_per_weight_with_adapters']:.3f} with "
                  f"adapters (+{bits['adapter_bytes'] / 2**20:.2f} MiB); wrote {out}")


def correct_option(
    artifact: Path = typer.Argument(..., help="an artifact written by `elastiq build`"),
    option: Optional[int] = typer.Option(None, help="the chain option to correct (default: the family's smallest)"),
    model: Optional[str] = typer.Option(None, help="the float model (default: the one the artifact was built from)"),
    rank: int = typer.Option(L.rank, help=RANK_HELP),
    steps: int = typer.Option(L.steps, help=STEPS_HELP),
    init: str = typer.Option(L.init, help=INIT_HELP),
    lr: float = typer.Option(L.lr, help=LR_HELP),
    calib_tokens: int = typer.Option(L.calib_tokens, help="calibration tokens the teacher scores"),
    adapter_dtype: str = typer.Option(L.adapter_dtype, help=DTYPE_HELP),
    name: Optional[str] = typer.Option(None, help="the new option's name (default lrec-r<rank>)"),
) -> None:
    """Train LREC adapters on one option of ARTIFACT and add them to it as one more option."""
    from elastiq.elastic import Artifact, ArtifactError
    from elastiq.lrec.elastic import correct_option as run
    from elastiq.lrec.train import release_freed_memory

    options = _options(rank=rank, steps=steps, init=init, lr=lr, calib_tokens=calib_tokens, adapter_dtype=adapter_dtype)
    try:
        a = Artifact(artifact)
        k = a.family.options[-1] if option is None else option
        source = model or a.manifest["info"].get("source")
        if not source:
            raise ValueError(f"{artifact} does not say which float model it was built from: give --model")
    except (ArtifactError, ValueError) as e:
        fail(e)
    release_freed_memory()  # before the float model loads, so that memory freed later goes back
    fp, tok = load_model(source)
    try:
        entry = run(artifact, k, fp, tok, options, name=name)
    except (ArtifactError, ValueError) as e:
        fail(e)
    before = a.manifest["quality"]["estimated"][k]
    console.print(f"option {k}+{entry['name']}: {(a.option_bytes[k] + entry['bytes']) / 2**20:.2f} MiB "
                  f"(+{entry['bytes'] / 2**20:.2f} MiB of adapters); KL from float {before:.4f} -> {entry['kl']:.4f}")
