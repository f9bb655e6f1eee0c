"""Weight-level impact of attention numerics: train a tiny transformer LM several ways
and measure how far the runs' weights drift apart (Wasserstein distance) over training.

The protocol of "Is Flash Attention Stable?" at laptop scale: runs share the initial
weights and the order of the batches unless a run changes the seed; each run changes
one thing (the attention algorithm, the arithmetic precision, or the seed), and its
weights are compared with a reference run's every ``every`` steps. Tokens are the
bytes of the built-in calibration text (vocabulary 256, no tokenizer needed).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as Fn
from torch import nn

from .attention import AttentionPrecision, baseline_attention, flash_attention
from .precision import Precision, precision


@dataclass(frozen=True)
class RunConfig:
    """One training run. ``attention``: baseline or flash; ``attn_precision``: the
    precisions inside attention; ``model_precision``: inputs, weights and outputs of
    every linear layer (low-precision training); ``seed``: the initial weights."""

    name: str
    attention: str = "baseline"
    attn_precision: str = "fp32"
    model_precision: str = "fp32"
    seed: int = 0
    block: int = 16


@dataclass
class TrainSetup:
    steps: int = 300
    every: int = 25
    batch: int = 16
    seq_len: int = 64
    dim: int = 64
    layers: int = 2
    heads: int = 4
    lr: float = 3e-3
    data_seed: int = 0
    text_bytes: int = 400_000
    threads: int = 1  # tiny tensors: one thread is faster than two contended ones


class _Linear(nn.Linear):
    """A linear layer whose input, weight and output are rounded onto a precision
    (gradients pass straight through the rounding)."""

    def __init__(self, i, o, prec: Precision, bias=True):
        super().__init__(i, o, bias)
        self.prec = prec

    def forward(self, x):
        r = partial(self.prec.round, ste=True)
        b = None if self.bias is None else r(self.bias)
        return r(Fn.linear(r(x), r(self.weight), b))


class _Block(nn.Module):
    def __init__(self, dim, heads, prec, attend):
        super().__init__()
        self.heads, self.attend = heads, attend
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = _Linear(dim, 3 * dim, prec), _Linear(dim, dim, prec)
        self.up, self.down = _Linear(dim, 4 * dim, prec), _Linear(4 * dim, dim, prec)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = self.attend(q, k, v).to(x.dtype).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(a)
        return x + self.down(Fn.gelu(self.up(self.ln2(x))))


class TinyLM(nn.Module):
    """A GPT-style byte-level language model with a pluggable attention function."""

    def __init__(self, setup: TrainSetup, run: RunConfig):
        super().__init__()
        torch.manual_seed(run.seed)
        prec = precision(run.model_precision)
        ap = AttentionPrecision.of(run.attn_precision)
        if run.attention == "baseline":
            attend = partial(baseline_attention, prec=ap, causal=True, ste=True)
        elif run.attention == "flash":
            attend = partial(flash_attention, prec=ap, block_q=run.block, block_k=run.block, causal=True, ste=True)
        else:
            raise ValueError(f"unknown attention {run.attention!r}: use baseline or flash")
        self.tok = nn.Embedding(256, setup.dim)
        self.pos = nn.Embedding(setup.seq_len, setup.dim)
        self.blocks = nn.ModuleList(_Block(setup.dim, setup.heads, prec, attend) for _ in range(setup.layers))
        self.ln = nn.LayerNorm(setup.dim)
        self.head = _Linear(setup.dim, 256, prec, bias=False)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def text_bytes(n: int) -> torch.Tensor:
    from elastiq.data import load_text

    data = load_text("wiki-calib").encode("utf-8")[:n]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


@dataclass
class RunResult:
    name: str
    losses: list[float] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def train(setup: TrainSetup, run: RunConfig, data: torch.Tensor, on_step=None) -> RunResult:
    """Train one run; snapshot the weights at step 0 and every ``setup.every`` steps."""
    model = TinyLM(setup, run)
    opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(setup.data_seed)  # every run sees the same batches
    res = RunResult(run.name)
    res.snapshots[0] = _snapshot(model)
    for step in range(1, setup.steps + 1):
        starts = torch.randint(0, len(data) - setup.seq_len - 1, (setup.batch,), generator=g)
        batch = torch.stack([data[s:s + setup.seq_len + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = Fn.cross_entropy(logits.float().reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        res.losses.append(float(loss.detach()))
        if step % setup.every == 0 or step == setup.steps:
            res.snapshots[step] = _snapshot(model)
        if on_step:
            on_step()
    return res


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def wasserstein(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Mean over parameter tensors of the 1-D Wasserstein distance between their values
    (scipy.stats.wasserstein_distance), and the largest elementwise difference."""
    from scipy.stats import wasserstein_distance

    if a.keys() != b.keys():
        raise ValueError("the two runs have different parameters: compare runs of the same model")
    ws = [wasserstein_distance(a[n].double().ravel().numpy(), b[n].double().ravel().numpy()) for n in a]
    return {"wasserstein": statistics.fmean(ws), "max_abs": max(float((a[n] - b[n]).abs().max()) for n in a)}


DEFAULT_RUNS = (
    RunConfig("baseline"),
    RunConfig("flash", attention="flash"),
    RunConfig("baseline-bf16attn", attn_precision="bf16"),
    RunConfig("flash-bf16attn", attention="flash", attn_precision="bf16"),
    RunConfig("lowprec-bf16", attn_precision="bf16", model_precision="bf16"),
    RunConfig("seed-1", seed=1),
)
# (run, reference run): what each comparison isolates
DEFAULT_PAIRS = (
    ("flash", "baseline"),                       # the flash algorithm, float32 arithmetic
    ("flash-bf16attn", "baseline-bf16attn"),     # the flash algorithm, bf16 attention arithmetic
    ("lowprec-bf16", "baseline"),                # low-precision (bf16) training
    ("seed-1", "baseline"),                      # another initialization: the natural upper band
)


def weight_study(setup: TrainSetup | None = None, runs=DEFAULT_RUNS, pairs=DEFAULT_PAIRS, progress: bool = True) -> dict:
    """Train every run, then the Wasserstein distance of each pair at every snapshot."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from elastiq.progress import progress_bar

    setup = setup or TrainSetup()
    names = {r.name for r in runs}
    for a, b in pairs:
        if a not in names or b not in names:
            raise ValueError(f"pair ({a}, {b}) names a run that is not trained; runs: {', '.join(sorted(names))}")
    data = text_bytes(setup.text_bytes)
    results = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(setup.threads)
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"), TimeRemainingColumn())
    try:
        with progress_bar(*cols, enabled=progress) as prog:
            task = prog.add_task("training", total=setup.steps * len(runs))
            for run in runs:
                prog.update(task, description=f"training {run.name}")
                results[run.name] = train(setup, run, data, on_step=lambda: prog.advance(task))
    finally:
        torch.set_num_threads(threads)
    steps = sorted(results[runs[0].name].snapshots)
    curves = {}
    for a, b in pairs:
        curves[f"{a} vs {b}"] = [{"step": s, **wasserstein(results[a].snapshots[s], results[b].snapshots[s])} for s in steps]
    return {
        "setup": vars(setup), "runs": [vars(r) for r in runs],
        "final_loss": {n: statistics.fmean(r.losses[-20:]) for n, r in results.items()},
        "curves": curves,
    }
