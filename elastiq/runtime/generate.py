"""Generation on the native runtime: greedy or sampled (temperature, top-k, top-p, seed),
stopping at an end-of-sequence token, a stop string or the token limit, with the text
streamed to a callback as it grows. Python runs once per token, never per layer."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .native import NativeError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature is a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k is >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p lies in (0, 1], got {self.top_p}")


GREEDY = Sampling()


class Sampler:
    def __init__(self, sampling: Sampling):
        self.s = sampling
        self.rng = np.random.default_rng(sampling.seed)

    def __call__(self, logits: np.ndarray) -> int:
        s = self.s
        if s.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / s.temperature
        if s.top_k and s.top_k < z.size:
            kth = np.partition(z, -s.top_k)[-s.top_k]
            z = np.where(z >= kth, z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
        if s.top_p < 1:
            order = np.argsort(-p, kind="stable")
            keep = np.cumsum(p[order]) - p[order] < s.top_p  # the smallest set whose mass reaches top_p
            mask = np.zeros_like(p, dtype=bool)
            mask[order[keep]] = True
            p = np.where(mask, p, 0.0)
            p /= p.sum()
        return int(self.rng.choice(p.size, p=p))


@dataclass
class Generation:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    first_token_s: float  # from the call to the first new token
    seconds: float
    options: list = field(default_factory=list)  # per new token, the option that produced it (elastic hosting)


def generate(step, tokenizer, prompt_ids: list[int], max_new_tokens: int, eos_ids=(), sampling: Sampling = GREEDY,
             stop: tuple[str, ...] = (), on_token=None, reset=None, label=None, model=None, on_step=None) -> Generation:
    """Continue ``prompt_ids``. ``step(ids) -> logits`` runs new tokens after the cached ones;
    ``reset()`` empties the cache first; ``model`` (a NativeModel) gets its context checked
    and its cache sized before any work; ``on_token(text)`` gets the text so far after each
    token (a possible start of a stop string is held back); ``label()`` names the option
    that ran the last step, recorded per new token; ``on_step(token, logits)`` sees each new
    token with the logits it was drawn from (for log-probabilities)."""
    if max_new_tokens < 1:
        raise NativeError(f"max_new_tokens is at least 1, got {max_new_tokens}")
    if not prompt_ids:
        raise NativeError("the prompt is empty")
    if model is not None:
        need = len(prompt_ids) + max_new_tokens
        if len(prompt_ids) > model.max_ctx or need > model.max_ctx:
            raise NativeError(f"the prompt's {len(prompt_ids)} tokens plus {max_new_tokens} new tokens exceed the "
                              f"maximum context of {model.max_ctx}: shorten the prompt or ask for fewer new tokens")
        model.reserve(need)
    stop = tuple(s for s in stop if s)
    eos = set(int(e) for e in eos_ids)
    sampler = Sampler(sampling)
    if reset is not None:
        reset()
    t0 = time.perf_counter()
    logits = step(prompt_ids)
    out: list[int] = []
    options = []
    first, reason, text = None, "length", ""
    for _ in range(max_new_tokens):
        tok = sampler(logits)
        if tok in eos:
            reason = "stop"
            break
        out.append(tok)
        if on_step is not None:
            on_step(tok, logits)
        if label is not None:
            options.append(label())
        first = first or time.perf_counter() - t0
        text = tokenizer.decode(out)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
            break
        if on_token is not None:
            on_token(text[:len(text) - _held_back(text, stop)])
        if len(out) == max_new_tokens:
            break
        logits = step([tok])
    if on_token is not None:
        on_token(text)
    return Generation(text, out, len(prompt_ids), reason, first or time.perf_counter() - t0,
                      time.perf_counter() - t0, options)


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could begin a stop string."""
    held = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:n]):
                held = n
                break
    return held


def generate_prompt(model, tokenizer, where, prompt: str, max_new_tokens: int, chat: bool = True,
                    sampling: Sampling = GREEDY, stop: tuple[str, ...] = (), on_token=None, step=None,
                    label=None) -> Generation:
    """Continue a user prompt on ``model`` (a NativeModel; ``step`` runs its forward passes,
    ``model.forward`` by default): through the chat template when there is one and ``chat``,
    stopping at the model's or the tokenizer's end-of-sequence ids. ``where`` names the
    folder in the error when there is no tokenizer."""
    if tokenizer is None:
        raise NativeError(f"{where} has no tokenizer.json: the native runtime needs a fast tokenizer")
    return generate(step or model.forward, tokenizer, tokenizer.prompt_ids(prompt, chat), max_new_tokens,
                    end_ids(model.spec, tokenizer), sampling, stop, on_token, model.reset, label=label, model=model)


def end_ids(spec: dict, tokenizer) -> set[int]:
    """The token ids that end a generation: the model's and the tokenizer's end of sequence."""
    eos = set(spec.get("eos_token_ids") or ())
    return eos | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
