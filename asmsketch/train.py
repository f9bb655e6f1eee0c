"""Training the guess model on corpus pairs (both directions), with a progress bar."""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F

from .corpus import Pair
from .isa import ARM, RISCV
from .model import Config, Guesser, Seq2Seq
from .tokens import BOS, EOS, PAD, TO, Vocab, tokenize_text


def copy_pairs(n: int, seed: int = 0, lines: tuple[int, int] = (2, 6)) -> list[Pair]:
    """Pairs whose two sides are the same random AArch64-like lines: a model that learns to copy them
    conditions on its source (the check for the bug that made the guess ignore its input)."""
    rng = random.Random(seed)
    ops, regs = ("add", "sub", "mul", "and", "orr", "eor"), [f"x{i}" for i in range(10)]
    out = []
    for i in range(n):
        text = "".join(f"\t{rng.choice(ops)} {rng.choice(regs)}, {rng.choice(regs)}, #{rng.randrange(1000)}\n"
                       for _ in range(rng.randint(*lines)))
        out.append(Pair(f"copy{i}", i, 0, 0, "", text, text))
    return out


def examples(pairs, vocab: Vocab, max_len: int):
    """(source ids, target ids) for both directions of every pair that fits."""
    out = []
    for p in pairs:
        for src_isa, tgt_isa in ((ARM, RISCV), (RISCV, ARM)):
            s = vocab.encode([TO[tgt_isa]] + tokenize_text(p.text(src_isa)) + [EOS])
            t = vocab.encode([BOS] + tokenize_text(p.text(tgt_isa)) + [EOS])
            if len(s) <= max_len and len(t) <= max_len:
                out.append((s, t))
    return out


def batches(data, max_tokens: int, rng: random.Random):
    """Length-bucketed batches of about max_tokens (source + target) tokens."""
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]) + len(data[i][1]) + rng.random())
    out, cur, longest = [], [], 0
    for i in order:
        n = len(data[i][0]) + len(data[i][1])
        if cur and max(longest, n) * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def _pad(seqs, pad):
    n = max(len(s) for s in seqs)
    return torch.tensor([s + [pad] * (n - len(s)) for s in seqs])


def train(pairs, config: dict | None = None, seconds: float = 60.0, max_tokens: int = 6000, lr: float = 1e-3,
          seed: int = 0, progress=None, max_steps: int | None = None,
          max_example_tokens: int | None = None, warmup: int | None = None) -> tuple[Guesser, dict]:
    """Train for a wall-clock budget (or max_steps); returns the model and a log of losses.
    max_example_tokens: leave out longer examples (short ones teach the alignment fastest)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = Vocab.build([p.arm for p in pairs] + [p.riscv for p in pairs])
    cfg = Config(vocab=len(vocab), **(config or {}))
    model = Seq2Seq(cfg)
    data = examples(pairs, vocab, min(cfg.max_len, max_example_tokens or cfg.max_len))
    pad = vocab.stoi[PAD]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    t0, step, epoch, losses = time.time(), 0, 0, []
    warm = warmup or (100 if not max_steps else max(1, max_steps // 10))
    est_total = max_steps or 10 ** 9
    model.train()
    while True:
        epoch += 1
        for batch in batches(data, max_tokens, rng):
            elapsed = time.time() - t0
            frac = min(1.0, elapsed / seconds) if not max_steps else step / max_steps
            if frac >= 1.0:
                model.eval()
                return Guesser(model, vocab), {"steps": step, "epochs": epoch, "seconds": elapsed,
                                               "losses": losses, "params": sum(p.numel() for p in model.parameters()),
                                               "examples": len(data)}
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            src = _pad([data[i][0] for i in batch], pad)
            tgt = _pad([data[i][1] for i in batch], pad)
            logits = model(src, tgt[:, :-1], pad)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=pad)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            losses.append(round(loss.item(), 4))
            if progress:
                progress(frac, loss.item(), step)
            del est_total
            est_total = None
