"""Enumerate the parallelization strategies that fit, rank them by throughput, and compare the
best with a default recipe (the MAD-Max question: how much does a better strategy buy?)."""
from __future__ import annotations

from dataclasses import dataclass

from .perf import DoesNotFit, Parallel, get_model, get_system, train


def _pow2_upto(n):
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return out


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def default_strategy(devices: int) -> Parallel:
    """The plain recipe many users start from: fully sharded data parallel over every device,
    full activation recompute (the one most likely to fit without thinking about tp/pp)."""
    return Parallel(dp=devices, fsdp=devices > 1, recompute="full")


@dataclass
class SearchResult:
    ranked: list           # TrainResults that fit, fastest first
    tried: int
    default: object        # TrainResult of the default strategy, or None when it does not fit
    default_problem: str   # why the default could not run, when it could not

    @property
    def best(self):
        return self.ranked[0] if self.ranked else None

    @property
    def speedup_over_default(self):
        if not self.ranked or self.default is None:
            return None
        return self.default.iteration_s / self.best.iteration_s


def candidates(m, sy, devices: int, batch: int, micro_batches=(1, 2, 4, 8), max_interleave: int = 1) -> list:
    """Every (Parallel, micro-batch) that divides ``devices`` and ``batch``, in a fixed order."""
    out = []
    for tp in _pow2_upto(min(devices, sy.devices_per_node)):
        if m.heads % tp or devices % tp:
            continue
        for pp in _divisors(devices // tp):
            if m.layers % pp:
                continue
            dp = devices // (tp * pp)
            for fsdp in ((False, True) if dp > 1 else (False,)):
                for rc in ("none", "selective", "full"):
                    for v in range(1, (max_interleave if pp > 1 else 1) + 1):
                        if m.layers % (pp * v):
                            continue
                        par = Parallel(dp=dp, tp=tp, pp=pp, sp=tp > 1, fsdp=fsdp, shard_optimizer=dp > 1 and not fsdp,
                                       recompute=rc, interleave=v)
                        out += [(par, mb) for mb in micro_batches if batch % (mb * dp) == 0]
    return out


def evaluate(m, sy, plans: list, batch: int, seq, dtype: str, flash: bool) -> list:
    """One job of the search: a batch of candidate plans, each a TrainResult or None (does not fit)."""
    out = []
    for par, mb in plans:
        try:
            out.append(train(m, sy, par, batch, mb, seq, dtype, flash=flash))
        except DoesNotFit:
            out.append(None)
    return out


def search(model, system, devices: int, batch: int, seq: int | None = None, dtype: str = "bf16",
           micro_batches=(1, 2, 4, 8), max_interleave: int = 1, flash: bool = True, progress=None,
           executor=None, plans_per_job: int = 64) -> SearchResult:
    """Every (dp, tp, pp, fsdp, sp, recompute, micro-batch) that divides ``devices`` and fits,
    evaluated in batches of ``plans_per_job`` wherever ``executor`` (elastiq.executors;
    default: this process) runs jobs. The ranking is the same whatever the executor:
    results are gathered in the candidates' order and sorted stably."""
    from elastiq.executors import Executor

    m, sy = get_model(model), get_system(system)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    plans = candidates(m, sy, devices, batch, micro_batches, max_interleave)
    ex = executor or Executor()
    jobs = [(m, sy, plans[i : i + plans_per_job], batch, seq, dtype, flash) for i in range(0, len(plans), plans_per_job)]
    tell = (lambda label, done, total: progress(min(done * plans_per_job, len(plans)))) if progress else None
    if tell:
        ex.listen(tell)
    try:
        fits = [r for part in ex.map(evaluate, jobs, label="strategies") for r in part if r is not None]
    finally:
        if tell:
            ex.unlisten(tell)
    fits.sort(key=lambda r: r.iteration_s)
    dflt, problem = None, ""
    d = default_strategy(devices)
    try:
        if batch % devices:
            raise ValueError(f"global batch {batch} is not a multiple of {devices} data-parallel devices")
        dflt = train(m, sy, d, batch, 1, seq, dtype, flash=flash)
    except ValueError as e:
        problem = str(e)
    return SearchResult(fits, len(plans), dflt, problem)


@dataclass
class InferChoice:
    replicas: int
    result: object          # InferResult of one replica
    tokens_per_s: float     # all replicas together

    def label(self) -> str:
        return f"{self.replicas} replica(s) x tp{self.result.parallel.tp} pp{self.result.parallel.pp}, batch {self.result.batch} each"


@dataclass
class InferSearchResult:
    ranked: list            # InferChoices that fit, highest throughput first
    tried: int
    default: object         # InferChoice of the default, or None
    default_problem: str

    @property
    def best(self):
        return self.ranked[0] if self.ranked else None

    @property
    def speedup_over_default(self):
        if not self.ranked or self.default is None:
            return None
        return self.best.tokens_per_s / self.default.tokens_per_s


def search_inference(model, system, devices: int, batch: int, prompt: int = 512, new_tokens: int = 128,
                     weights: str = "bf16", kv_bits: float = 16) -> InferSearchResult:
    """Split ``devices`` into replicas of tp x pp and ``batch`` concurrent sequences among them; rank by
    decode throughput. The default is the common recipe: one replica per node, tensor parallel over
    the node's devices. Pipeline stages decode one after another (no micro-batching), so pp > 1
    only helps where a replica would not fit otherwise."""
    from .perf import infer

    m, sy = get_model(model), get_system(system)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    fits, tried = [], 0

    def one(tp, pp):
        reps = devices // (tp * pp)
        r = infer(m, sy, Parallel(tp=tp, pp=pp), batch=batch // reps, prompt=prompt, new_tokens=new_tokens,
                  weights=weights, kv_bits=kv_bits)
        return InferChoice(reps, r, reps * r.tokens_per_s)

    for tp in _pow2_upto(min(devices, sy.devices_per_node)):
        if m.heads % tp or devices % tp:
            continue
        for pp in _divisors(devices // tp):
            if m.layers % pp or batch % (devices // (tp * pp)):
                continue
            tried += 1
            try:
                fits.append(one(tp, pp))
            except DoesNotFit:
                pass
    fits.sort(key=lambda c: -c.tokens_per_s)
    tp0 = max(t for t in _pow2_upto(min(devices, sy.devices_per_node)) if devices % t == 0 and m.heads % t == 0)
    dflt, problem = None, ""
    try:
        if batch % (devices // tp0):
            raise ValueError(f"batch {batch} does not split over {devices // tp0} replicas")
        dflt = one(tp0, 1)
    except ValueError as e:
        problem = str(e)
    return InferSearchResult(fits, tried, dflt, problem)
