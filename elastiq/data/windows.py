"""Tokenize a text once, and cut the tokens into sliding evaluation windows.

The window protocol is the Hugging Face perplexity guide's, made exact: every text token that has
context is scored exactly once.

Without a BOS: window k holds text tokens [k*step, k*step + context) (the last one shorter) and
scores those past the end of window k-1 (window 0: all but its first). So token 0 is never scored
(nothing precedes it), every other token is scored once, in the first window that holds it, and
each scored token sees at least context - step tokens before it in its window.

With a BOS: window k is [BOS] + text tokens [k*step, k*step + context - 1); the BOS is the context
of its first text token, so every text token, token 0 included, is scored once, in the first
window that holds it.

step = min(stride, context - 1): a window of ``context`` tokens can score at most context - 1 of
them (one position is context only: the first text token, or the BOS). So stride = context (the
default) means windows whose scored spans do not overlap: consecutive windows share one token
without a BOS, none with one.
"""
from __future__ import annotations

from numbers import Integral

import torch


PREFIX_CHARS_PER_TOKEN = 16  # a prefix this many characters per wanted token (plus PREFIX_SLACK) is tried first
PREFIX_SLACK = 4096
PREFIX_MARGIN = 64  # tokens past the wanted ones that must come out of the prefix, so the cut cannot reach them


def tokenize(tokenizer, text: str, max_tokens: int | None = None) -> torch.Tensor:
    """All of ``text`` (or, with ``max_tokens``, its first tokens) as one 1-D LongTensor of
    token ids, with no special tokens (no BOS, no EOS).

    With ``max_tokens`` only a prefix of the text is tokenized when it yields enough tokens
    with a margin to spare: tokenizers split at word boundaries, so the tokens before the
    cut are those of the whole text (tokenizing the 2 MB wiki-eval whole peaks at 310 MiB, docs/data.md).
    Works with any Hugging Face tokenizer; verbose=False silences the "sequence longer than the
    model's maximum length" warning, which does not apply: windows() cuts the ids to fit."""
    if not isinstance(text, str) or not text:
        raise ValueError("cannot tokenize an empty text: give a non-empty string")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 0):
        raise ValueError(f"max_tokens must be a non-negative integer or None, got {max_tokens!r}")
    ids = None
    if max_tokens is not None:
        cut = PREFIX_CHARS_PER_TOKEN * (max_tokens + PREFIX_MARGIN) + PREFIX_SLACK
        if cut < len(text):
            ids = tokenizer(text[:cut], add_special_tokens=False, verbose=False)["input_ids"]
            ids = ids if len(ids) >= max_tokens + PREFIX_MARGIN else None
    if ids is None:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) == 0:
        raise ValueError(f"the tokenizer produced no tokens for a text of {len(text)} characters")
    return torch.tensor(ids[:max_tokens] if max_tokens is not None else ids, dtype=torch.long)


def windows(ids, context: int = 1024, stride: int | None = None, max_tokens: int | None = None,
            bos_id: int | None = None) -> list[tuple[torch.Tensor, int]]:
    """Sliding windows over ``ids`` (1-D): a list of (window ids, n_scored).

    The targets of each window are its last ``n_scored`` tokens (scored from the logits of the
    positions just before them). ``max_tokens`` keeps only the first tokens of the text;
    ``stride`` (default ``context``) is the step between window starts, at most context - 1 (see
    the module docstring); ``bos_id`` is prepended to every window. Returns [] when no token can be
    scored. Windows without a BOS are views into ``ids``."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"ids must be a 1-D tensor of integer token ids, got {ids.dtype} of shape {tuple(ids.shape)}")
    ids = ids.long()
    with_bos = " with a BOS" if bos_id is not None else ""
    min_context = 2 if bos_id is None else 3  # one context token and one target; or the BOS and two text tokens
    if not _is_int(context) or context < min_context:
        raise ValueError(f"context must be an integer >= {min_context}{with_bos}, got {context!r}")
    stride = context if stride is None else stride
    if not _is_int(stride) or not 0 < stride <= context:
        raise ValueError(f"stride must be an integer with 0 < stride <= context ({context}), got {stride!r}")
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer or None, got {max_tokens!r}")
        ids = ids[:max_tokens]
    if bos_id is not None and (not _is_int(bos_id) or bos_id < 0):
        raise ValueError(f"bos_id must be a non-negative integer token id or None, got {bos_id!r}")

    n = len(ids)
    span = context if bos_id is None else context - 1  # text tokens a window holds
    step = min(stride, context - 1)
    # step <= context - 1 keeps next_target past each window's first text token (at it, with a BOS),
    # so every target has context inside its window
    next_target = 1 if bos_id is None else 0  # without a BOS, token 0 has no context: never scored
    bos = None if bos_id is None else torch.tensor([bos_id], dtype=torch.long)
    out: list[tuple[torch.Tensor, int]] = []
    for begin in range(0, n, step):
        end = min(begin + span, n)
        if end > next_target:
            text = ids[begin:end]
            out.append((text if bos is None else torch.cat([bos, text]), end - next_target))
        next_target = end
        if end == n:
            break
    return out


def _is_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)
