"""The performance model: iteration time, exposed communication, MFU and memory per device.

Inputs are a :class:`~elastiq.labs.planning.transformer.Transformer`, a
:class:`~elastiq.labs.planning.systems.System` and a :class:`Parallel` strategy. Each transformer
layer becomes a list of kernels (GEMMs, element-wise kernels, collectives); each kernel costs
the larger of its FLOPs over the effective FLOP rate and its bytes over the effective memory
bandwidth (a roofline), collectives follow the ring models in :mod:`.collectives`, and one
pipeline stage's micro-batch runs through the two-stream :mod:`.schedule`. The 1F1B pipeline
adds (p-1)/v micro-batch times of bubble.

    r = train("gpt3-175b", "a100-80gb", Parallel(tp=8, pp=8, interleave=3, recompute="full"),
              batch=64, micro_batch=1, dtype="fp16", flash=False)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import systems as _systems
from . import transformer as _transformer
from .collectives import Links, collective_time
from .schedule import COMM, COMPUTE, Schedule

RECOMPUTE = ("none", "selective", "full")
GiB = 2 ** 30

# Mixed-precision Adam state per parameter (Megatron-LM): fp32 main gradient 4 B, fp32 master
# weight 4 B, Adam m and v 4 B each. The 16-bit working weights come on top.
GRAD_BYTES, OPTIMIZER_BYTES = 4, 12
# Adam step traffic per parameter: read grad, master, m, v (16 B), write master, m, v (12 B),
# write the 16-bit copy (2 B), one more read of the grads for the norm (4 B).
OPTIMIZER_STEP_BYTES = 34


class DoesNotFit(ValueError):
    """The configuration needs more memory per device than the system has."""


@dataclass(frozen=True)
class Parallel:
    dp: int = 1
    tp: int = 1
    pp: int = 1
    sp: bool = False             # sequence parallel: shard norms/dropout and replace all-reduce by RS+AG
    fsdp: bool = False           # fully sharded data parallel (ZeRO-3) over the dp group
    shard_optimizer: bool = False  # ZeRO-1 / distributed optimizer over the dp group
    recompute: str = "none"      # none | selective (attention core) | full (whole layer)
    interleave: int = 1          # virtual pipeline stages per device
    dp_overlap: bool = True      # gradient reduction overlaps backward

    def __post_init__(self):
        for k in ("dp", "tp", "pp", "interleave"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"parallelism {k} must be a positive integer, got {v!r}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if self.fsdp and self.dp == 1:
            raise ValueError("fsdp needs dp > 1 (it shards over the data-parallel group)")
        if self.interleave > 1 and self.pp == 1:
            raise ValueError("interleave > 1 needs pipeline parallelism (pp > 1)")

    @property
    def devices(self) -> int:
        return self.dp * self.tp * self.pp

    def label(self) -> str:
        s = f"dp{self.dp}{'(fsdp)' if self.fsdp else '(zero1)' if self.shard_optimizer and self.dp > 1 else ''} tp{self.tp}{'+sp' if self.sp and self.tp > 1 else ''} pp{self.pp}"
        s += f"x{self.interleave}" if self.interleave > 1 else ""
        return s + f" rc={self.recompute}"


@dataclass
class Memory:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    kv_cache: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache

    @property
    def total_gib(self) -> float:
        return self.total / GiB

    def as_gib(self) -> dict:
        return {k: v / GiB for k, v in asdict(self).items()} | {"total": self.total_gib}


@dataclass
class TrainResult:
    model: str
    system: str
    parallel: Parallel
    batch: int
    micro_batch: int
    seq: int
    iteration_s: float
    compute_s: float         # busy compute stream, all micro-batches (optimizer included)
    exposed_comm_s: float    # compute stream idle, waiting on collectives or point-to-point
    bubble_s: float          # pipeline fill and drain
    comm_s: float            # all communication, hidden or not
    model_flops: float       # per iteration, without recompute
    hardware_flops: float    # per iteration, with recompute
    memory: Memory
    capacity: float
    devices: int
    peak_flops: float
    breakdown: dict = field(default_factory=dict)

    @property
    def exposed_comm_fraction(self) -> float:
        return self.exposed_comm_s / self.iteration_s

    @property
    def mfu(self) -> float:
        return self.model_flops / (self.iteration_s * self.devices * self.peak_flops)

    @property
    def hfu(self) -> float:
        return self.hardware_flops / (self.iteration_s * self.devices * self.peak_flops)

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.seq / self.iteration_s

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.capacity

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("memory", "parallel")}
        d.update(parallel=self.parallel.label(), memory_gib=self.memory.as_gib(), fits=self.fits,
                 mfu=self.mfu, hfu=self.hfu, exposed_comm_fraction=self.exposed_comm_fraction,
                 tokens_per_s=self.tokens_per_s)
        return d


# ---- placement: which groups cross node boundaries ----------------------------------
def _groups(par: Parallel, per_node: int) -> dict:
    """(devices per node, nodes) of each group, ranks laid out tp innermost, then dp, then pp."""
    def split(size, stride):
        inside = max(1, min(size, per_node // stride)) if stride < per_node else 1
        return inside, size // inside
    return {"tp": split(par.tp, 1), "dp": split(par.dp, par.tp), "pp_cross_node": par.tp * par.dp >= per_node}


# ---- kernels of one layer ------------------------------------------------------------
def _layer_kernels(m, b: int, s: int, t: int, sp: bool, e: float, training: bool, w_bytes: float, flash: bool = False):
    """Forward kernels of one layer on one device: (name, kind, flops, bytes, part).

    kind is "gemm", "vec" or a collective; part is "attn_core" for the recomputable attention core.
    With ``flash`` the attention core is one fused kernel that reads Q, K, V and writes O only."""
    T, h, a, d = b * s, m.hidden, m.heads, m.head_dim
    qkv_out = h + 2 * m.kv * d
    f_in = m.ffn * (2 if m.gated_mlp else 1)
    div = t if sp else 1
    drop = 1 if training else 0       # dropout: mask bytes written/read, none at inference
    score = b * (a / t) * s * s       # attention score elements per device
    ks = []
    tp_in = "all_gather" if sp else None
    tp_out = "reduce_scatter" if sp else "all_reduce"
    ks.append(("ln1", "vec", 5 * T * h / div, 2 * T * h * e / div, None))
    if t > 1 and tp_in:
        ks.append(("ag_attn", tp_in, 0, T * h * e, None))
    ks.append(("qkv", "gemm", 2 * T * h * qkv_out / t, h * qkv_out / t * w_bytes + T * (h + qkv_out / t) * e, None))
    if flash:
        ks.append(("flash_attn", "gemm", 4 * b * s * s * h / t, T * (2 * h + 2 * m.kv * d) / t * e, "attn_core"))
    else:
        ks.append(("scores", "gemm", 2 * b * s * s * h / t, 2 * T * h / t * e + score * e, "attn_core"))
        ks.append(("softmax", "vec", 5 * score, 2 * score * e, "attn_core"))
        if drop:
            ks.append(("attn_dropout", "vec", score, score * (2 * e + 1), "attn_core"))
        ks.append(("attn_v", "gemm", 2 * b * s * s * h / t, score * e + 2 * T * h / t * e, "attn_core"))
    ks.append(("proj", "gemm", 2 * T * h * h / t, h * h / t * w_bytes + 2 * T * h / t * e, None))
    if t > 1:
        ks.append(("tp_attn", tp_out, 0, T * h * e, None))
    ks.append(("residual1", "vec", 2 * T * h / div, T * h * (3 * e + drop) / div, None))
    ks.append(("ln2", "vec", 5 * T * h / div, 2 * T * h * e / div, None))
    if t > 1 and tp_in:
        ks.append(("ag_mlp", tp_in, 0, T * h * e, None))
    ks.append(("fc1", "gemm", 2 * T * h * f_in / t, h * f_in / t * w_bytes + T * (h + f_in / t) * e, None))
    ks.append(("act", "vec", 8 * T * m.ffn / t, T * (f_in + m.ffn) / t * e, None))
    ks.append(("fc2", "gemm", 2 * T * m.ffn * h / t, m.ffn * h / t * w_bytes + T * (m.ffn / t + h) * e, None))
    if t > 1:
        ks.append(("tp_mlp", tp_out, 0, T * h * e, None))
    ks.append(("residual2", "vec", 2 * T * h / div, T * h * (3 * e + drop) / div, None))
    return ks


def _backward(kernels):
    """Backward kernels: reverse order; GEMMs do dgrad and wgrad (2x FLOPs and bytes); element-wise
    kernels read the saved input and the output gradient and write the input gradient (1.5x bytes);
    each collective becomes its conjugate (all-reduce <-> identity pairs keep the count,
    all-gather <-> reduce-scatter)."""
    conj = {"all_gather": "reduce_scatter", "reduce_scatter": "all_gather", "all_reduce": "all_reduce"}
    out = []
    for name, kind, fl, by, part in reversed(kernels):
        if name == "flash_attn":   # the fused backward recomputes Q.K^T and P: 2.5x the forward FLOPs
            out.append((name + "_bwd", kind, 2.5 * fl, 2 * by, part))
        elif kind == "gemm":
            out.append((name + "_bwd", kind, 2 * fl, 2 * by, part))
        elif kind == "vec":
            out.append((name + "_bwd", kind, 1.5 * fl, 1.5 * by, part))
        else:
            out.append((name + "_bwd", conj[kind], 0, by, part))
    return out


class _Coster:
    def __init__(self, system, dtype, groups, links):
        self.F = system.flops(dtype)
        self.BW = system.eff_mem_bw
        self.k = system.kernel_overhead_s
        self.g = groups
        self.links = links

    def compute(self, kind, flops, nbytes):
        if kind == "gemm":
            return max(flops / self.F, nbytes / self.BW) + self.k
        return nbytes / self.BW + self.k

    def tp(self, kind, nbytes):
        n_in, n_out = self.g["tp"]
        return collective_time(kind, nbytes, n_in, n_out, self.links)

    def dp(self, kind, nbytes):
        n_in, n_out = self.g["dp"]
        return collective_time(kind, nbytes, n_in, n_out, self.links)


def _chain_cost(coster, kernels):
    """(compute seconds, blocking collective seconds) of a chain of kernels. Inside one layer every
    kernel waits for the one before it (Megatron's tensor-parallel collectives are blocking), so a
    chain keeps its total and its communication stays exposed however it is ordered."""
    comp = comm = 0.0
    for _, kind, fl, by, _ in kernels:
        if kind in ("gemm", "vec"):
            comp += coster.compute(kind, fl, by)
        else:
            comm += coster.tp(kind, by)
    return comp, comm


def _emit(sched, cost, prev, prefix):
    """Put a chain (compute then its blocking collectives) on the two streams. Returns the last op."""
    comp, comm = cost
    prev = sched.add(prefix + "compute", COMPUTE, comp, () if prev is None else (prev,))
    if comm:
        prev = sched.add(prefix + "tp_comm", COMM, comm, (prev,))
    return prev


def _check_train(m, par, batch, micro_batch, devices):
    if devices is not None and par.devices != devices:
        raise ValueError(f"dp x tp x pp = {par.dp} x {par.tp} x {par.pp} = {par.devices} does not match the {devices} devices; "
                         "choose degrees whose product is the device count")
    for k, v in (("batch", batch), ("micro_batch", micro_batch)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    if m.heads % par.tp:
        raise ValueError(f"tensor parallel {par.tp} does not divide the {m.heads} attention heads of {m.name}")
    if m.layers % (par.pp * par.interleave):
        raise ValueError(f"pp {par.pp} x interleave {par.interleave} does not divide the {m.layers} layers of {m.name}")
    if batch % (micro_batch * par.dp):
        raise ValueError(f"global batch {batch} is not a multiple of micro_batch {micro_batch} x dp {par.dp}")


def activation_bytes_per_layer(m, b, s, t, sp, recompute, e=2.0, flash=False) -> float:
    """Stored activations of one layer for one micro-batch (Korthikanti et al. 2022, section 4,
    generalised to grouped-query attention and gated MLPs): 16-bit tensors, 1-byte dropout masks."""
    h, a = m.hidden, m.heads
    div = t if sp else 1
    if recompute == "full":
        return s * b * h * e / div                       # only the layer input is kept
    f_in = m.ffn * (2 if m.gated_mlp else 1)
    replicated = s * b * h * (2 * e + 2 * e + 2)  # 2 norm inputs, QKV and fc1 inputs, 2 dropout masks
    split = s * b * (h * e * (1 + m.kv / a) + h * e * m.kv / a + h * e + f_in * e + m.ffn * e)  # Q,K / V / proj in / fc1 out / act out
    # softmax out, dropout mask, dropout out; a fused (flash) kernel keeps only O and the row statistics
    core = 0.0 if recompute == "selective" else (b * s * h * e + b * a * s * 4 if flash else b * a * s * s * (2 * e + 1))
    return replicated / div + (split + core) / t


def training_memory(m, par: Parallel, micro_batch: int, seq: int, n_micro: int, w_bytes=2.0, flash=False) -> Memory:
    """Memory of the most loaded pipeline stage (the first: embedding plus the most in-flight micro-batches)."""
    t, p, v = par.tp, par.pp, par.interleave
    stage_params = m.layers // p * m.layer_params + m.vocab * m.hidden   # first stage holds the embedding
    local = stage_params / t
    shard = par.dp if par.fsdp else 1
    opt_shard = par.dp if (par.fsdp or par.shard_optimizer) else 1
    weights = local * w_bytes / shard
    if par.fsdp:   # two gathered layers (current and prefetched) live unsharded
        weights += 2 * m.layer_params / t * w_bytes
    act_layer = activation_bytes_per_layer(m, micro_batch, seq, t, par.sp, par.recompute, flash=flash)
    in_flight = min(p, n_micro)
    factor = 1 + (p - 1) / (p * v) if v > 1 else 1.0
    acts = act_layer * (m.layers // p) * in_flight * factor
    if par.recompute == "full":   # the layer being recomputed holds its full activations once
        acts += activation_bytes_per_layer(m, micro_batch, seq, t, par.sp, "none", flash=flash)
    return Memory(weights, local * GRAD_BYTES / shard, local * OPTIMIZER_BYTES / opt_shard, acts)


def train(model, system, par: Parallel, batch: int, micro_batch: int = 1, seq: int | None = None,
          dtype: str = "bf16", devices: int | None = None, check_fit: bool = True, flash: bool = True) -> TrainResult:
    """One training iteration (forward, backward, optimizer step) of ``batch`` sequences.

    ``flash``: fused attention (FlashAttention, today's default); ``flash=False`` models
    Megatron-2022's unfused softmax path (the validation runs). The steps: cost one
    decoder layer's kernels (``_StagePlan``), schedule a micro-batch on the first and the
    last pipeline stage (``_StagePlan.stage``), then add up the iteration (``_iteration``)."""
    m, sy = get_model(model), get_system(system)
    s = seq or m.seq
    if not isinstance(s, int) or s < 1:
        raise ValueError(f"seq must be a positive integer, got {s!r}")
    _check_train(m, par, batch, micro_batch, devices)
    n_micro = batch // (micro_batch * par.dp)
    mem = training_memory(m, par, micro_batch, s, n_micro, flash=flash)
    plan = _StagePlan.of(m, sy, par, micro_batch, s, dtype, flash)
    iteration, compute, exposed, bubble, comm = _iteration(plan, n_micro)
    tokens = batch * s
    mflops = m.training_flops(tokens, s)
    recompute_flops = {"none": 0.0, "full": m.layers * m.layer_flops_per_token(s) * tokens,
                       "selective": m.layers * 4 * s * m.hidden * tokens}[par.recompute]
    r = TrainResult(m.name, sy.name, par, batch, micro_batch, s, iteration, compute, exposed, bubble, comm,
                    mflops, mflops + recompute_flops, mem, sy.mem_bytes, par.devices, sy.peak_flops[_dtype_key(dtype)],
                    breakdown={"compute": compute, "exposed communication": exposed, "pipeline bubble": bubble})
    if check_fit and not r.fits:
        raise DoesNotFit(_fit_message(m, sy, par, mem))
    return r


@dataclass
class _StagePlan:
    """One pipeline stage's work per micro-batch, costed once: the layer's forward, backward
    and attention-core kernel chains, and the sizes the stage's communication moves."""

    m: object
    par: Parallel
    coster: _Coster
    groups: dict
    c_fwd: object
    c_bwd: object
    c_core: object
    per_stage: int
    layer_grad: float
    grad_sync: str
    tokens: int  # micro_batch x seq
    e: float = 2.0  # bytes per activation and gradient element (16-bit)

    @classmethod
    def of(cls, m, sy, par: Parallel, micro_batch: int, s: int, dtype: str, flash: bool) -> "_StagePlan":
        e = 2.0
        groups = _groups(par, sy.devices_per_node)
        coster = _Coster(sy, dtype, groups, Links.of(sy))
        fwd = _layer_kernels(m, micro_batch, s, par.tp, par.sp, e, True, e, flash)
        core = [k for k in fwd if k[4] == "attn_core"]
        # a sharded optimizer only needs each rank's shard of the summed gradient; the updated
        # weights are all-gathered after the step (together the volume of one all-reduce)
        return cls(m, par, coster, groups, _chain_cost(coster, fwd), _chain_cost(coster, _backward(fwd)),
                   _chain_cost(coster, core), m.layers // par.pp, m.layer_params / par.tp * e,  # gradients in 16 bits
                   "reduce_scatter" if par.shard_optimizer else "all_reduce", micro_batch * s, e)

    def p2p(self, nbytes):
        cross = self.groups["pp_cross_node"]
        return collective_time("p2p", nbytes, 1 if cross else 2, 2 if cross else 1, self.coster.links)

    def stage(self, last_micro: bool, head: bool, tail: bool):
        """The schedule of one micro-batch on a stage (``head``: it holds the embedding,
        ``tail``: the output head and loss; ``last_micro``: the gradient reduction follows)."""
        m, par, coster, T, e = self.m, self.par, self.coster, self.tokens, self.e
        t, p, v = par.tp, par.pp, par.interleave
        sc = Schedule()
        prev = None
        if p > 1:   # receive this micro-batch's activations from the previous stage (scatter-gather: 1/t each)
            for _ in range(v):
                prev = sc.add("p2p_recv_act", COMM, self.p2p(T * m.hidden * e / (t if t > 1 else 1)), ())
        if head:
            prev = sc.add("embedding", COMPUTE, coster.compute("vec", 0, 2 * T * m.hidden * e), () if prev is None else (prev,))
            if t > 1:
                prev = sc.add("tp_embedding", COMM, coster.tp("all_reduce", T * m.hidden * e), (prev,))
        gathers = []
        for i in range(self.per_stage):
            if par.fsdp:
                dep = (gathers[-2],) if len(gathers) >= 2 else ()
                g = sc.add(f"L{i}.fsdp_gather", COMM, coster.dp("all_gather", m.layer_params / t * e), dep)
                gathers.append(g)
                prev = sc.add(f"L{i}.wait", COMPUTE, 0.0, (g,) if prev is None else (prev, g))
            prev = _emit(sc, self.c_fwd, prev, f"L{i}.")
        if tail:
            prev = sc.add("logits", COMPUTE, coster.compute("gemm", 2 * T * m.hidden * m.vocab / t,
                                                            m.hidden * m.vocab / t * e + T * m.vocab / t * 4), (prev,))
            prev = sc.add("cross_entropy", COMPUTE, coster.compute("vec", 0, 3 * T * m.vocab / t * 4), (prev,))
            prev = sc.add("logits_bwd", COMPUTE, coster.compute("gemm", 4 * T * m.hidden * m.vocab / t,
                                                                2 * (m.hidden * m.vocab / t * e + T * m.vocab / t * 4)), (prev,))
        if p > 1:   # send activations on, receive their gradient back
            for _ in range(v):
                prev = sc.add("p2p_act_grad", COMM, self.p2p(T * m.hidden * e / (t if t > 1 else 1)), (prev,))
        for i in reversed(range(self.per_stage)):
            if par.fsdp:
                g = sc.add(f"L{i}.fsdp_gather_bwd", COMM, coster.dp("all_gather", m.layer_params / t * e), ())
                prev = sc.add(f"L{i}.wait_bwd", COMPUTE, 0.0, (prev, g))
            if par.recompute == "full":
                prev = _emit(sc, self.c_fwd, prev, f"L{i}.re.")
            elif par.recompute == "selective":
                prev = _emit(sc, self.c_core, prev, f"L{i}.re.")
            prev = _emit(sc, self.c_bwd, prev, f"L{i}.bwd.")
            if par.fsdp:
                sc.add(f"L{i}.fsdp_reduce_scatter", COMM, coster.dp("reduce_scatter", self.layer_grad), (prev,))
            elif par.dp > 1 and last_micro and par.dp_overlap:
                sc.add(f"L{i}.dp_grad_sync", COMM, coster.dp(self.grad_sync, self.layer_grad), (prev,))
        if par.dp > 1 and last_micro and not par.fsdp and not par.dp_overlap:
            sc.add("dp_grad_sync", COMM, coster.dp(self.grad_sync, self.layer_grad * self.per_stage), (prev,))
        return sc.run()


def _iteration(plan: _StagePlan, n_micro: int):
    """(iteration, compute, exposed communication, pipeline bubble, communication) seconds:
    ``n_micro`` micro-batches on the slower of the first and last stage, the bubble, the
    optimizer step and (with a sharded optimizer) the all-gather of the updated weights."""
    m, par, coster, e = plan.m, plan.par, plan.coster, plan.e
    p, v, t = par.pp, par.interleave, par.tp
    first = plan.stage(False, True, p == 1)
    last = plan.stage(False, p == 1, True) if p > 1 else first
    same = par.dp == 1 or par.fsdp       # the last micro-batch differs only by the dp gradient reduction
    first_end = first if same else plan.stage(True, True, p == 1)
    last_end = (last if same else plan.stage(True, p == 1, True)) if p > 1 else first_end
    slow, slow_end = (last, last_end) if last.total_s >= first.total_s else (first, first_end)
    mean_mb = (first.total_s + last.total_s) / 2
    bubble = (p - 1) / v * mean_mb
    local_params = (plan.per_stage * m.layer_params + m.vocab * m.hidden) / t
    opt_share = par.dp if (par.fsdp or par.shard_optimizer) else 1
    optimizer = coster.compute("vec", 0, local_params * OPTIMIZER_STEP_BYTES / opt_share)
    gather = 0.0
    if par.shard_optimizer and not par.fsdp and par.dp > 1:   # all-gather the updated weight shards
        gather = coster.dp("all_gather", local_params * e)
    iteration = (n_micro - 1) * slow.total_s + slow_end.total_s + bubble + optimizer + gather
    compute = (n_micro - 1) * slow.compute_s + slow_end.compute_s + optimizer
    exposed = (n_micro - 1) * slow.exposed_comm_s + slow_end.exposed_comm_s + gather
    comm = (n_micro - 1) * slow.comm_s + slow_end.comm_s + gather
    return iteration, compute, exposed, bubble, comm


def _dtype_key(dtype):
    return {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}.get(dtype, dtype)


def _fit_message(m, sy, par, mem: Memory) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in mem.as_gib().items() if v and k != "total")
    return (f"{m.name} with {par.label()} needs {mem.total_gib:.1f} GiB per device but {sy.name} has "
            f"{sy.mem_bytes / GiB:.1f} GiB ({parts} GiB). Use more tensor/pipeline parallelism, fsdp, "
            "activation recompute or a smaller micro-batch (or `elastiq perf --search`).")


# ---- inference ---------------------------------------------------------------------------
def weight_bits(fmt: str, row_length: int) -> float:
    """Storage bits per weight of a format: 16/32-bit floats by name, else the elastiq catalog."""
    plain = {"fp32": 32.0, "float32": 32.0, "fp16": 16.0, "bf16": 16.0, "float16": 16.0, "bfloat16": 16.0,
             "fp8": 8.0}
    key = str(fmt).strip().lower()
    if key in plain:
        return plain[key]
    from elastiq import formats as F
    return F.bits_per_element(fmt, row_length)


@dataclass
class InferResult:
    model: str
    system: str
    parallel: Parallel
    batch: int
    prompt: int
    new_tokens: int
    weights: str
    bits_per_weight: float
    prefill_s: float
    decode_step_s: float      # one new token for every sequence in the batch, mid-generation
    decode_compute_s: float
    decode_comm_s: float
    bytes_per_step: float     # memory traffic of one decode step per device
    memory: Memory
    capacity: float
    devices: int

    @property
    def decode_s(self) -> float:
        return self.decode_step_s * self.new_tokens

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.decode_step_s

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.capacity

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("memory", "parallel")}
        d.update(parallel=self.parallel.label(), memory_gib=self.memory.as_gib(), fits=self.fits,
                 decode_s=self.decode_s, total_s=self.total_s, tokens_per_s=self.tokens_per_s)
        return d


def infer(model, system, par: Parallel | None = None, batch: int = 1, prompt: int = 512, new_tokens: int = 128,
          weights: str = "bf16", kv_bits: float = 16, dtype: str = "bf16", devices: int | None = None,
          check_fit: bool = True, flash: bool = True) -> InferResult:
    """Prefill ``prompt`` tokens and decode ``new_tokens`` for ``batch`` sequences.

    Weights are read at their format's storage bits (elastiq catalog); embeddings and the
    output head stay 16-bit. Pipeline stages run one after another (no decode pipelining)."""
    m, sy = get_model(model), get_system(system)
    par = par or Parallel()
    if par.dp != 1 or par.fsdp:
        raise ValueError("inference here models one replica: use tp and pp (run replicas for more throughput)")
    if devices is not None and par.devices != devices:
        raise ValueError(f"tp x pp = {par.devices} does not match the {devices} devices")
    for k, val in (("batch", batch), ("prompt", prompt), ("new_tokens", new_tokens)):
        if not isinstance(val, int) or val < (0 if k == "new_tokens" else 1):
            raise ValueError(f"{k} must be a {'non-negative' if k == 'new_tokens' else 'positive'} integer, got {val!r}")
    if kv_bits <= 0:
        raise ValueError(f"kv_bits must be positive, got {kv_bits}")
    if m.heads % par.tp:
        raise ValueError(f"tensor parallel {par.tp} does not divide the {m.heads} attention heads of {m.name}")
    if m.layers % par.pp:
        raise ValueError(f"pp {par.pp} does not divide the {m.layers} layers of {m.name}")
    bits = weight_bits(weights, m.hidden)
    wb, e, t, p = bits / 8, 2.0, par.tp, par.pp
    groups = _groups(par, sy.devices_per_node)
    coster = _Coster(sy, dtype, groups, Links.of(sy))
    kvb = kv_bits / 8
    per_stage = m.layers // p

    # prefill: the forward kernels over the whole prompt
    fwd = _layer_kernels(m, batch, prompt, t, False, e, False, wb, flash)
    comp, comm = _chain_cost(coster, fwd)
    prefill = m.layers * (comp + comm) + coster.compute("gemm", 2 * batch * m.hidden * m.vocab / t, m.hidden * m.vocab / t * e)

    # decode: one token per sequence at the mean context of the generation
    ctx = prompt + max(new_tokens, 1) / 2
    dense = m.attn_params + m.mlp_params
    layer_w = dense / t * wb + 4 * m.hidden * e
    kv_read = batch * ctx * 2 * m.kv * m.head_dim / t * kvb
    flops = 2 * batch * dense / t + 4 * batch * ctx * m.hidden / t
    n_kernels = 9
    layer_compute = max(flops / coster.F, (layer_w + kv_read) / coster.BW) + n_kernels * coster.k
    layer_comm = 2 * coster.tp("all_reduce", batch * m.hidden * e) if t > 1 else 0.0
    head = coster.compute("gemm", 2 * batch * m.hidden * m.vocab / t, m.hidden * m.vocab / t * e)
    p2p = (p - 1) * collective_time("p2p", batch * m.hidden * e, 1 if groups["pp_cross_node"] else 2,
                                    2 if groups["pp_cross_node"] else 1, coster.links)
    step = m.layers * (layer_compute + layer_comm) + head + p2p
    bytes_step = per_stage * (layer_w + kv_read) + m.hidden * m.vocab / t * e

    stage_w = (per_stage * dense / t * wb + per_stage * 4 * m.hidden * e + m.embedding_params / t * e)
    kv = batch * (prompt + new_tokens) * m.kv_bytes_per_token(kvb) / (t * p)
    f_in = m.ffn * (2 if m.gated_mlp else 1)
    work = batch * prompt * (4 * m.hidden + 2 * f_in / t) * e + batch * m.vocab / t * 4   # prefill workspace
    mem = Memory(stage_w, 0.0, 0.0, work, kv)
    r = InferResult(m.name, sy.name, par, batch, prompt, new_tokens, str(weights), bits, prefill, step,
                    m.layers * layer_compute + head, m.layers * layer_comm + p2p, bytes_step, mem, sy.mem_bytes,
                    par.devices)
    if check_fit and not r.fits:
        raise DoesNotFit(_fit_message(m, sy, par, mem))
    return r


get_model = _transformer.get
get_system = _systems.get
