"""LREC: train the adapters so the packed model matches the float one.

The float model's next-token distributions over the calibration text are computed once
(``teacher_targets``: its top-k log-probabilities per position, float16) and the float
model can then be dropped: training holds the packed model, its adapters, their optimizer
state and the activations of one window (recomputed layer by layer: activation
checkpointing). The loss is KL(teacher || student) over the teacher's top-k tokens,
optionally plus the ordinary next-token loss. The output head and the loss run together
over blocks of the vocabulary (``headloss``), so the logits over the whole vocabulary and
their gradient never exist at once.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as Fn
from torch import nn
from torch.utils.checkpoint import checkpoint
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

from elastiq.cache import atomic_dir, check_replaceable
from elastiq.data import tokenize, windows
from elastiq.memory import pin_mmap_threshold
from elastiq.options import HEAD_MODES, LrecOptions
from elastiq.progress import progress_bar
from elastiq.quant import QuantLinear

from .adapter import adapters_of, packed_linear
from .headloss import head_kl
from .optim import AdapterAdamW

CHECKPOINT_STATE = "state.pt"


@dataclass
class TeacherTargets:
    """Per window: its token ids, and the float model's top-k log-probs (and their token
    ids) for the next token at every position but the last."""

    ids: list[torch.Tensor]
    logp: list[torch.Tensor]  # (len - 1, k) float16
    top: list[torch.Tensor]  # (len - 1, k) int32
    k: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> int:
        return sum(len(t) - 1 for t in self.ids)

    @property
    def mass(self) -> float:
        """Mean probability mass the teacher puts on its top-k tokens (what the loss sees)."""
        return float(torch.cat([lp.float().exp().sum(-1) for lp in self.logp]).mean())


@torch.no_grad()
def teacher_targets(float_model, tokenizer, text: str, context: int = 256, max_tokens: int | None = 16384,
                    top_k: int = 64, progress: bool = True) -> TeacherTargets:
    """The float model's top-k next-token log-probs on non-overlapping windows of ``text``."""
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    wins = [w for w, _ in windows(tokenize(tokenizer, text, max_tokens), context=context, max_tokens=max_tokens)]
    if not wins:
        raise ValueError("the calibration text is too short for a single window")
    float_model.eval()
    out = TeacherTargets([], [], [], top_k)
    with progress_bar(TextColumn("teacher"), BarColumn(), TimeRemainingColumn(), enabled=progress) as prog:
        task = prog.add_task("", total=len(wins))
        for w in wins:
            logp, top = top_k_targets(float_model(w[None]).logits[0, :-1], top_k)
            out.ids.append(w.clone())
            out.logp.append(logp)
            out.top.append(top)
            prog.advance(task)
    return out


def top_k_targets(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top_k`` largest next-token log-probs (float16) of each row of ``logits``, and their token ids (int32)."""
    logp = Fn.log_softmax(logits.float(), -1)
    vals, idx = logp.topk(min(top_k, logp.shape[-1]), -1)
    return vals.half(), idx.int()


def distill_loss(student_logits: torch.Tensor, logp: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Mean over positions of sum_top p_t (log p_t - log p_s), p_s the student's full softmax."""
    s = Fn.log_softmax(student_logits.float(), -1).gather(-1, top.long())
    t = logp.float()
    return (t.exp() * (t - s)).sum(-1).mean()


def window_loss(model, ids: torch.Tensor, logp: torch.Tensor, top: torch.Tensor, lm_weight: float = 0.0,
                head: str = "fused", head_chunk: int = 64) -> torch.Tensor:
    """``distill_loss`` (plus ``lm_weight`` x next-token loss) of one window ``ids`` (1-D).
    ``head``: "fused" runs the frozen output head and the loss over blocks of the
    vocabulary (``headloss.head_kl``; a head that trains falls back to "chunked");
    "chunked" computes them ``head_chunk`` positions at a time under activation
    checkpointing; "whole" takes the model's own logits for the whole window."""
    if head not in HEAD_MODES:
        raise ValueError(f"head must be one of {', '.join(HEAD_MODES)}, got {head!r}")
    out = model.get_output_embeddings()
    if head == "fused" and isinstance(out, (nn.Linear, QuantLinear)) and not any(p.requires_grad for p in out.parameters()):
        hidden = model.base_model(ids[None], use_cache=False).last_hidden_state[0, :-1]
        return head_kl(out, hidden, logp, top, ids[1:], lm_weight) / hidden.shape[0]
    if head == "whole":
        logits = model(ids[None], use_cache=False).logits[0, :-1]
        loss = distill_loss(logits, logp, top)
        return loss + lm_weight * Fn.cross_entropy(logits.float(), ids[1:]) if lm_weight else loss
    if not isinstance(head_chunk, int) or head_chunk < 1:
        raise ValueError(f"head_chunk must be a positive integer, got {head_chunk!r}")
    hidden = model.base_model(ids[None], use_cache=False).last_hidden_state[0, :-1]
    part = functools.partial(_chunk_loss, out, lm_weight)
    n = hidden.shape[0]
    total = 0.0
    for a in range(0, n, head_chunk):
        args = (hidden[a:a + head_chunk], logp[a:a + head_chunk], top[a:a + head_chunk], ids[a + 1:a + 1 + head_chunk])
        if torch.is_grad_enabled():
            total = total + checkpoint(part, *args, use_reentrant=False)
        else:
            total = total + part(*args)
    return total / n


def _chunk_loss(head, lm_weight: float, h, logp, top, nxt) -> torch.Tensor:
    """Summed KL (and next-token loss) of a chunk of positions; ``h`` the final hidden states."""
    logits = packed_linear(head, h) if isinstance(head, QuantLinear) else head(h)
    s = Fn.log_softmax(logits.float(), -1)
    t = logp.float()
    loss = (t.exp() * (t - s.gather(-1, top.long()))).sum()
    return loss + lm_weight * Fn.nll_loss(s, nxt, reduction="sum") if lm_weight else loss


def release_freed_memory() -> None:
    """Pin glibc's mmap threshold at 64 KiB (elastiq.memory): in training the default kept
    hundreds of MiB of dead activations in the process (docs/lrec.md; in trial runs 256 KiB
    kept more than 64 KiB). Call it before the model loads: a hole that loading leaves in
    the heap is reused by later large blocks, and what is freed inside it stays resident
    (in trial runs LREC's peak was 172 MiB, or over 300 MiB when loading had left one)."""
    pin_mmap_threshold(1 << 16)


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    resumed_from: int = 0


def correct(model, targets: TeacherTargets, options: LrecOptions | None = None, checkpoint_dir=None,
            progress: bool = True, stop_after: int | None = None, release_memory: bool = True, **overrides) -> TrainLog:
    """Train ``model``'s adapters by the training fields of ``options``
    (:class:`elastiq.options.LrecOptions`: ``steps`` optimizer steps, each over
    ``accumulate`` windows, at peak rate ``lr``; ``optimizer_state`` the dtype of AdamW's
    moments; ``head``/``head_chunk`` how the output head and the loss run, see
    ``window_loss``); keyword ``overrides`` change single fields. With ``checkpoint_dir``
    the adapters and optimizer state are written there every ``save_every`` steps (whole or
    not at all) and a later call resumes from them. ``release_memory``: see
    ``release_freed_memory``. ``stop_after`` ends the run early after that many steps of
    this call (to test resuming)."""
    o = LrecOptions.of(options, **overrides)
    steps = o.steps
    loras = adapters_of(model)
    if not loras:
        raise ValueError("the model has no adapters: call elastiq.lrec.add_adapters first")
    if len(targets) == 0:
        raise ValueError("no teacher targets to train on")
    params = [p for lo in loras.values() for p in (lo.lora_A, lo.lora_B)]
    for p in params:
        p.requires_grad_(True)
    opt = AdapterAdamW(params, lr=o.lr, state_dtype=o.optimizer_state)
    if release_memory:
        release_freed_memory()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_shape(s, steps))
    log = TrainLog()
    start = _resume(checkpoint_dir, loras, opt, sched, steps) if checkpoint_dir else 0
    log.resumed_from = start
    if o.checkpointing:
        _checkpointing(model, True)
    model.train()
    cols = (TextColumn("LREC"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    try:
        with progress_bar(*cols, enabled=progress) as prog:
            task = prog.add_task("", total=steps, completed=start, loss=float("nan"))
            for step in range(start, steps):
                t0 = time.perf_counter()
                total = 0.0
                for micro in range(o.accumulate):
                    i = (step * o.accumulate + micro) % len(targets)
                    loss = window_loss(model, targets.ids[i], targets.logp[i], targets.top[i], o.lm_weight, o.head,
                                       o.head_chunk)
                    (loss / o.accumulate).backward()
                    total += float(loss.detach()) / o.accumulate
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                log.losses.append(total)
                log.seconds.append(time.perf_counter() - t0)
                prog.update(task, advance=1, loss=total)
                done = step + 1
                if checkpoint_dir and (done % o.save_every == 0 or done == steps):
                    _save_checkpoint(checkpoint_dir, loras, opt, sched, done, steps)
                if stop_after is not None and done - start >= stop_after:
                    break
    finally:
        model.eval()
        if o.checkpointing:
            _checkpointing(model, False)
        for p in params:
            p.requires_grad_(False)
    return log


def _checkpointing(model, on: bool) -> None:
    """Activation checkpointing per decoder layer (transformers' switch; its newer name first)."""
    kwargs = {"use_reentrant": False}  # the base is frozen: reentrant checkpoints would see no input needing grad
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif hasattr(model, "gradient_checkpointing_enable"):
        if on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_disable()


def _lr_shape(step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine down to 10%."""
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def _save_checkpoint(directory, loras, opt, sched, step: int, steps: int) -> None:
    state = {"step": step, "steps": steps, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "adapters": {n: {"A": lo.lora_A.detach().clone(), "B": lo.lora_B.detach().clone()} for n, lo in loras.items()}}
    with atomic_dir(Path(directory), overwrite=True, owner=CHECKPOINT_STATE) as tmp:  # never a folder we did not write
        torch.save(state, tmp / CHECKPOINT_STATE)


def _resume(directory, loras, opt, sched, steps: int) -> int:
    if Path(directory).exists() or Path(directory).is_symlink():
        check_replaceable(directory, CHECKPOINT_STATE)  # a folder of the user's is neither resumed nor replaced
    path = Path(directory) / CHECKPOINT_STATE
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001  a torn or foreign file: say which, do not guess
        raise ValueError(f"cannot resume from {path}: {e}. Delete {directory} to start over") from None
    if set(state["adapters"]) != set(loras) or state["steps"] != steps:
        raise ValueError(f"the checkpoint in {directory} belongs to another run (its adapters or step count differ): "
                         f"delete it to start over, or use the same settings")
    for n, lo in loras.items():
        a, b = state["adapters"][n]["A"], state["adapters"][n]["B"]
        if a.shape != lo.lora_A.shape or b.shape != lo.lora_B.shape:
            raise ValueError(f"the checkpoint in {directory} has rank {a.shape[0]} adapters, this run uses rank {lo.rank}")
        with torch.no_grad():
            lo.lora_A.copy_(a)
            lo.lora_B.copy_(b)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["step"])
