"""The server's engine room. One worker thread runs the generations, one at a time and first
come first served (the model holds one KV cache); each token goes back to its request as an
event. A request whose client has gone is dropped from the queue, or stopped at its next
token. Budget changes swap options from other threads: the host's lock lets a swap in
between two tokens, never inside a forward pass, so each token comes from one whole option."""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from elastiq.runtime.generate import GREEDY, Sampling, generate

from .hosted import Hosted


class Cancelled(Exception):
    """The client went away: the generation stops at this token."""


@dataclass
class Job:
    prompt_ids: list[int]
    max_tokens: int  # 0: score the prompt only (with echo)
    emit: object  # emit(kind, payload), called from the worker thread
    sampling: Sampling = GREEDY
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # alternatives per token (0: the chosen token's only); None: no log-probabilities
    echo: bool = False  # also score the prompt's tokens
    cancelled: threading.Event = field(default_factory=threading.Event)


def token_logprobs(logits: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``token`` under ``logits`` and the ``top`` most likely tokens'."""
    z = logits.astype(np.float64)
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    best = []
    if top:
        idx = np.argpartition(-z, top - 1)[:top]
        best = [(int(i), float(z[i] - lse)) for i in idx[np.argsort(-z[idx], kind="stable")]]
    return float(z[token] - lse), best


class Engine:
    def __init__(self, hosted: Hosted, window_s: float = 10.0):
        self.hosted = hosted
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.active: Job | None = None
        self.counts = {"served": 0, "cancelled": 0, "failed": 0, "completion_tokens": 0, "prompt_tokens": 0}
        self.window_s = window_s
        self._token_times: deque[float] = deque()
        self._thread = threading.Thread(target=self._loop, name="elastiq-serve-worker", daemon=True)
        self._thread.start()

    # ---- the queue ------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def close(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=30)

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def tokens_per_s(self) -> float:
        """New tokens per second over the last ``window_s`` seconds."""
        now = time.monotonic()
        while self._token_times and self._token_times[0] < now - self.window_s:
            self._token_times.popleft()
        return len(self._token_times) / self.window_s

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            if job.cancelled.is_set():
                self.counts["cancelled"] += 1
                continue
            self.active = job
            try:
                job.emit("done", self._run(job))
                self.counts["served"] += 1
            except Cancelled:
                self.counts["cancelled"] += 1
            except Exception as e:  # the request fails; the server keeps serving
                self.counts["failed"] += 1
                job.emit("error", e)
            finally:
                self.active = None

    # ---- one generation -------------------------------------------------------------------
    def _run(self, job: Job) -> dict:
        h = self.hosted
        prompt_rows: list = []  # per prompt token: (logprob, top) given the tokens before it (echo)
        pending: list[dict] = []  # the new tokens whose text has not been sent yet
        new: list[dict] = []
        sent = [""]

        def scored_step(ids, all_logits=False):
            if job.echo and not prompt_rows and len(ids) == len(job.prompt_ids):
                rows = h.step(ids, all_logits=True)
                prompt_rows.append(None)
                for i in range(1, len(ids)):
                    prompt_rows.append(token_logprobs(rows[i - 1], ids[i], job.logprobs or 0))
                return rows[-1]
            return h.step(ids)

        def on_step(token, logits):
            info = {"token": token, "option": h.option()}
            if job.logprobs is not None:
                info["logprob"], info["top"] = token_logprobs(logits, token, job.logprobs)
            pending.append(info)
            new.append(info)
            self._token_times.append(time.monotonic())

        def on_token(text):
            if job.cancelled.is_set():
                raise Cancelled()
            shown = text.rstrip("\ufffd")  # a character whose bytes span tokens waits for its last byte
            delta = shown[len(sent[0]):] if shown.startswith(sent[0]) else ""
            if delta or pending:
                job.emit("token", {"text": delta, "tokens": list(pending), "option": h.option()})
                sent[0] += delta
                pending.clear()

        if job.max_tokens == 0:  # score the prompt only
            h.reset()
            scored_step(job.prompt_ids)
            return {"text": "", "new": [], "prompt_rows": prompt_rows, "prompt_tokens": len(job.prompt_ids),
                    "finish_reason": "length", "options": [h.option()]}
        g = generate(scored_step, h.tokenizer, job.prompt_ids, job.max_tokens, h.eos, job.sampling, job.stop,
                     on_token, h.reset, label=h.option, model=h.native, on_step=on_step)
        self.counts["completion_tokens"] += len(g.tokens)
        self.counts["prompt_tokens"] += g.prompt_tokens
        return {"text": g.text, "new": new, "prompt_rows": prompt_rows, "prompt_tokens": g.prompt_tokens,
                "finish_reason": g.finish_reason, "options": sorted(set(g.options), key=g.options.index) or [h.option()],
                "first_token_s": g.first_token_s, "seconds": g.seconds}
