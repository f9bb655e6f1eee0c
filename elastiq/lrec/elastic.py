"""LREC adapters as one more option of an elastic artifact.

``correct_option`` hosts one option of the chain (typically the smallest), trains LoRA
adapters on it against the float model, measures the corrected option's KL on the very
windows the artifact's other options were measured on, and stores the adapters in the
artifact as an extra option whose bytes are the option's plus the adapters'. A host then
picks it whenever it beats every option that fits the budget.
"""
from __future__ import annotations

from pathlib import Path

from elastiq.options import LrecOptions

from .adapter import add_adapters
from .train import correct, teacher_targets


def correct_option(artifact, option: int, float_model, tokenizer, options: LrecOptions | None = None,
                   name: str | None = None, calib_text: str | None = None, progress: bool = True, **overrides) -> dict:
    """Train adapters for ``option`` of ``artifact`` and store them there; returns the new
    extra option's manifest entry (its ``kl`` and ``bytes`` included). ``options``
    (:class:`elastiq.options.LrecOptions`) and keyword ``overrides`` as for ``correct``;
    ``embedding`` and ``head`` do not apply (the artifact's option is what is packed)."""
    o = LrecOptions.of(options, **overrides)
    from elastiq.data import load_text
    from elastiq.elastic import ElasticModel, add_low_rank_option
    from elastiq.elastic.builder import measure_windows
    from elastiq.elastic.jobs import kl_per_token, reference_logprobs

    host = ElasticModel(artifact)
    host.swap(option)
    model = host.model
    ids = measure_windows(host.artifact, tokenizer)
    if calib_text is None:  # train on the calibration text after the windows the build probed and measured on
        from elastiq.data import tokenize

        calib = tokenize(tokenizer, load_text(host.artifact.manifest["info"]["calib"]))
        calib_text = tokenizer.decode(calib[2 * ids.numel():])
    targets = teacher_targets(float_model, tokenizer, calib_text, context=o.context, max_tokens=o.calib_tokens,
                              top_k=o.top_k, progress=progress)
    loras = add_adapters(model, o.rank, o.alpha, init=o.init, float_model=float_model,
                         patterns=host.artifact.linear_modules(), dtype=o.adapter_dtype)
    correct(model, targets, o, progress=progress)
    kl = kl_per_token(model, ids, reference_logprobs(float_model, ids))
    deltas = {n: (lo.lora_A.detach(), lo.lora_B.detach(), lo.scaling) for n, lo in loras.items()}
    return add_low_rank_option(Path(artifact), option, deltas, name or f"lrec-r{o.rank}", kl)
