"""The options of elastiq's long jobs, each with its one set of defaults: LREC set-up and
training (``LrecOptions``), the elastic build (``BuildOptions``) and calibrated
quantization (``CalibOptions``). The Python API, the
command line and the benches all take them from here, so a default cannot differ by route.

Plain data, no torch: the command line reads its defaults from these classes at start-up.

    opts = LrecOptions(rank=8, steps=50)           # everything else at its default
    opts = LrecOptions.of(opts, lr=5e-4)           # a copy with overrides (unknown names raise)
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

DTYPES = ("float32", "bfloat16")  # adapter weights and AdamW moments
INITS = ("svd", "zero")  # svd: from the quantization error (LoftQ-style); zero: standard LoRA
HEAD_MODES = ("fused", "chunked", "whole")  # how the output head and the loss run (lrec.train.window_loss)
UNITS = ("linear", "layer")  # what one step of the elastic chain moves
METHODS = ("rtn", "gptq", "search", "gptq+search")  # how a base is cast (elastiq.calib)
SINK_WEIGHT = 64.0  # a calibration window's first token in the Hessians (elastiq.calib.hessian says why)


class _Options:
    @classmethod
    def of(cls, options=None, **overrides):
        """``options`` (default: all defaults) with ``overrides`` applied."""
        base = cls() if options is None else options
        if not isinstance(base, cls):
            raise TypeError(f"options must be {cls.__name__}, got {type(base).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)} (it has {', '.join(sorted(known))})")
        return replace(base, **overrides) if overrides else base


def _positive(name: str, value, none_ok: bool = False) -> None:
    if none_ok and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class LrecOptions(_Options):
    """LREC: LoRA adapters on a packed model, trained against the float model's top-k."""

    # set-up: the adapters and the teacher's targets
    rank: int = 16  # LoRA rank of each adapter
    alpha: float | None = None  # LoRA scaling numerator (default: rank, a scaling of 1)
    init: str = "svd"  # see INITS
    adapter_dtype: str = "float32"  # adapter weights (bfloat16: half the bytes)
    embedding: str | None = None  # also pack the token embedding in this format ("same": the model's format)
    context: int = 256  # tokens per calibration window
    calib_tokens: int | None = 16384  # calibration tokens the teacher scores (None: the whole text)
    method: str = "rtn"  # how the base is cast, see METHODS (calibrated on the teacher's windows)
    top_k: int = 64  # teacher log-probabilities kept per position
    # training
    steps: int = 200  # optimizer steps
    lr: float = 1e-3  # peak learning rate (warm-up, then cosine to 10%)
    accumulate: int = 1  # windows per step
    lm_weight: float = 0.0  # weight of the next-token loss added to the KL
    optimizer_state: str = "float32"  # AdamW moments
    head: str = "fused"  # see HEAD_MODES
    head_chunk: int = 64  # positions per chunk when head == "chunked"
    checkpointing: bool = True  # recompute activations layer by layer in the backward pass
    save_every: int = 25  # steps between resumable checkpoints (with a checkpoint directory)

    def __post_init__(self):
        for name in ("rank", "context", "top_k", "steps", "accumulate", "head_chunk", "save_every"):
            _positive(name, getattr(self, name))
        _positive("calib_tokens", self.calib_tokens, none_ok=True)
        _one_of("init", self.init, INITS)
        _one_of("adapter dtype", self.adapter_dtype, DTYPES)
        _one_of("optimizer state dtype", self.optimizer_state, DTYPES)
        _one_of("head", self.head, HEAD_MODES)
        _one_of("method", self.method, METHODS)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")


@dataclass(frozen=True)
class BuildOptions(_Options):
    """The elastic build: a chain of hosting options from a few base formats."""

    formats: tuple[str, ...] = ("int8", "int6", "nxfp4", "int3")  # base formats, largest first
    unit: str = "linear"  # see UNITS
    embedding: bool = True  # make the token embedding (and a head tied to it) a unit too
    calib_tokens: int = 512  # tokens to probe sensitivity with (as many again measure KL)
    context: int = 256  # tokens per calibration window
    measure: int = 12  # options along the chain whose real KL is measured
    storage_limit: int | None = None  # prune the family to this many bytes
    max_kl: float | None = None  # leave out options whose KL from the float model exceeds this
    seed: int = 0
    method: str = "rtn"  # how the bases are cast, see METHODS (calibrated with CalibOptions' defaults)

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))
        if not self.formats:
            raise ValueError("give at least one base format")
        _one_of("unit", self.unit, UNITS)
        for name in ("calib_tokens", "context", "measure"):
            _positive(name, getattr(self, name))
        if self.storage_limit is not None and self.storage_limit <= 0:
            raise ValueError(f"storage limit must be positive, got {self.storage_limit}")
        _one_of("method", self.method, METHODS)


@dataclass(frozen=True)
class CalibOptions(_Options):
    """Calibrated quantization: GPTQ and scale search on the input Hessians of each linear layer."""

    method: str = "gptq"  # see METHODS
    tokens: int | None = 16384  # calibration tokens from the start of the text (None: all of it)
    context: int = 512  # tokens per calibration window
    damp: float = 0.01  # fraction of the Hessian's mean diagonal added to it
    act_order: bool = False  # GPTQ visits columns by decreasing Hessian diagonal
    batch: int = 128  # GPTQ columns per lazy update
    sequential: bool = True  # each layer's Hessians from the inputs the packed layers before it give (stream route)
    sink_weight: float = SINK_WEIGHT  # how many tokens each window's first token counts as in the Hessians

    def __post_init__(self):
        _one_of("method", self.method, METHODS)
        for name in ("context", "batch"):
            _positive(name, getattr(self, name))
        _positive("tokens", self.tokens, none_ok=True)
        if not 0 <= self.damp < 1:
            raise ValueError(f"damp must be in [0, 1), got {self.damp!r}")
        if not self.sink_weight >= 1:
            raise ValueError(f"sink_weight must be at least 1 (the first token counts once or more), got {self.sink_weight!r}")
