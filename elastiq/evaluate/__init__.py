"""elastiq.evaluate: perplexity, and KL divergence from a reference model, over text windows.

Protocol: the text is tokenized once (no special tokens), cut into windows of
``context`` tokens starting every ``stride`` tokens (elastiq.data.windows), and each
token from the second on is scored exactly once, with as much preceding context as its
window holds. Perplexity = exp(mean negative log-likelihood of the scored tokens).
KL = mean over scored positions of KL(reference || model) of the next-token
distributions. Models whose family needs it (Gemma) get a BOS token per window; ``bos_id``
puts a given token before every window instead (then every text token is scored, the first
from that token: lm-eval's convention for a document, see docs/interop.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as Fn
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

from elastiq.data import tokenize, windows
from elastiq.errors import InputError
from elastiq.progress import progress_bar


ROWS = 128  # positions whose log-probabilities exist at once (128 x a 49,152-word vocabulary: 24 MiB)


@dataclass
class Evaluation:
    perplexity: float
    kl: float | None  # None without a reference model
    tokens: int  # scored tokens
    context: int
    seconds: float


def _needs_bos(model) -> bool:
    return str(getattr(getattr(model, "config", None), "model_type", "")).startswith("gemma")


def check_window_args(context: int, max_tokens: int | None = None) -> None:
    """Refuse window settings that cannot score a token, before any model is loaded."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise InputError(f"context must be a whole number of at least 2 tokens (one to read, one to score), got {context!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2):
        raise InputError(f"max_tokens must be a whole number of at least 2 (one token to read, one to score), got {max_tokens!r}")


@torch.no_grad()
def evaluate(model, tokenizer, text: str, reference=None, max_tokens: int | None = None, context: int = 1024,
             stride: int | None = None, progress: bool = True, bos_id: int | None = None) -> Evaluation:
    """Perplexity of ``model`` on ``text`` (and KL from ``reference`` on the same tokens)."""
    check_window_args(context, max_tokens)
    ids = tokenize(tokenizer, text, max_tokens)
    bos = bos_id if bos_id is not None else tokenizer.bos_token_id if _needs_bos(model) else None
    wins = windows(ids, context=context, stride=stride, max_tokens=max_tokens, bos_id=bos)
    if not wins:
        raise InputError(f"the text is too short to score a single token ({len(ids)} token(s)): give a longer text")
    model.eval()
    nll = kl = 0.0
    count = 0
    t0 = time.perf_counter()
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} windows"), TimeRemainingColumn())
    with progress_bar(*cols, enabled=progress) as prog:
        task = prog.add_task("evaluating", total=len(wins))
        for win, n_scored in wins:
            inp = win[None, :]
            logits = model(inp).logits[0, -n_scored - 1 : -1]
            ref_logits = reference(inp).logits[0, -n_scored - 1 : -1] if reference is not None else None
            target = win[-n_scored:]
            for a in range(0, n_scored, ROWS):  # a block of positions at a time: one more vocabulary-wide copy, not n_scored
                logp = Fn.log_softmax(logits[a:a + ROWS].float(), dim=-1)
                nll -= float(logp.gather(1, target[a:a + ROWS, None]).sum())
                if ref_logits is not None:
                    ref = Fn.log_softmax(ref_logits[a:a + ROWS].float(), dim=-1)
                    kl += float((ref.exp() * (ref - logp)).sum())
            del logits, ref_logits
            count += n_scored
            prog.advance(task)
    return Evaluation(math.exp(nll / count), kl / count if reference is not None else None, count, context,
                      time.perf_counter() - t0)


def perplexity(model, tokenizer, text: str, max_tokens: int | None = None, context: int = 1024, **kw) -> float:
    return evaluate(model, tokenizer, text, max_tokens=max_tokens, context=context, **kw).perplexity


def kl_divergence(model, reference, tokenizer, text: str, max_tokens: int | None = None, context: int = 1024, **kw) -> float:
    return evaluate(model, tokenizer, text, reference=reference, max_tokens=max_tokens, context=context, **kw).kl
