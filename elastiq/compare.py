"""Compare formats on one model: pack a copy per format, measure size, perplexity and KL
from the float model on the same tokens. Used by ``elastiq compare`` and bench/quality.py."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

from elastiq import formats as F
from elastiq.errors import InputError
from elastiq.evaluate import evaluate
from elastiq.quant import QuantEmbedding, QuantLinear, quantize_model, tied_heads, weight_bytes, with_embedding


@dataclass
class FormatResult:
    format: str
    bits_per_weight: float  # over the packed weights (linear layers, and the embedding if packed), scales included
    weight_bytes: int  # every parameter and buffer of the model, as held in memory
    perplexity: float
    delta_perplexity: float
    kl: float | None
    tokens: int
    quantize_seconds: float
    eval_seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def packed_bits_per_weight(model) -> float:
    """Stored bits per packed weight; a head tied to a packed embedding is that embedding."""
    tied = tied_heads(model)
    bits = n = 0
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)) and name not in tied:
            bits += 8 * m.packed().nbytes
            n += m.packed().numel
    return bits / n if n else 32.0


def format_names(text: str) -> list[str]:
    """The formats of a comma-separated list, each checked; refuses an empty list."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names:
        raise InputError(f"no formats to compare in {text!r}: give e.g. int8,int4,nxfp4")
    for n in names:
        F.get(n)
    return names


def compare(model, tokenizer, text: str, formats: list[str], max_tokens: int | None = None, context: int = 1024,
            progress: bool = True, on_result=None, embedding: str | None = None) -> list[FormatResult]:
    """The float model first (format "float"), then one packed copy per format. With
    ``embedding`` (a format, or "same") the token embedding is packed too."""
    if not formats:
        raise InputError("no formats to compare: give at least one")
    for name in formats:
        F.get(name)  # refuse a bad name before any slow work
        with_embedding(model, name, embedding)
    base = evaluate(model, tokenizer, text, max_tokens=max_tokens, context=context, progress=progress)
    results = [FormatResult("float", 32.0, weight_bytes(model), base.perplexity, 0.0, 0.0, base.tokens, 0.0, base.seconds)]
    if on_result:
        on_result(results[-1])
    for name in formats:
        q = copy.deepcopy(model)
        t0 = time.perf_counter()
        quantize_model(q, with_embedding(q, name, embedding), progress=progress)
        tq = time.perf_counter() - t0
        ev = evaluate(q, tokenizer, text, reference=model, max_tokens=max_tokens, context=context, progress=progress)
        results.append(FormatResult(name, packed_bits_per_weight(q), weight_bytes(q), ev.perplexity,
                                    ev.perplexity - base.perplexity, ev.kl, ev.tokens, tq, ev.seconds))
        if on_result:
            on_result(results[-1])
        del q
    return results


def _family(name: str) -> str:
    if name.startswith("nxfp") or name.startswith("mxfp4_"):
        return "NxFP and its parts"
    if name.startswith(("mx", "nv")):
        return "OCP MX, NVFP4"
    return "integer, NF4"


def plot_quality(results: list[FormatResult], path, title: str) -> None:
    """Perplexity against bits per weight, one labelled point per format. Points far above
    the float model (over 2.5x its perplexity) sit on the top edge, their value in the label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    pts = sorted((r for r in results if r.format != "float"), key=lambda r: (r.bits_per_weight, r.perplexity))
    ref = next((r for r in results if r.format == "float"), None)
    top = min(max((r.perplexity for r in pts), default=1), 2.5 * ref.perplexity) * 1.05 if ref else None
    for fam, color in (("integer, NF4", "tab:gray"), ("OCP MX, NVFP4", "tab:blue"), ("NxFP and its parts", "tab:red")):
        mine = [r for r in pts if _family(r.format) == fam]
        if mine:
            ax.scatter([r.bits_per_weight for r in mine], [min(r.perplexity, top or r.perplexity) for r in mine],
                       c=color, label=fam, marker="o")
    for r in pts:
        clipped = top is not None and r.perplexity > top
        label = f"{r.format} ({r.perplexity:.0f}, off scale)" if clipped else r.format
        ax.annotate(label, (r.bits_per_weight, min(r.perplexity, top or r.perplexity)), textcoords="offset points",
                    xytext=(6, 0), va="center", fontsize=7.5)
    if ref:
        ax.axhline(ref.perplexity, ls="--", c="black", lw=0.8, label=f"float: {ref.perplexity:.2f}")
        ax.set_ylim(ref.perplexity * 0.97, top)
    ax.legend(loc="upper right")
    ax.set_xlabel("bits per weight (scales included)")
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
