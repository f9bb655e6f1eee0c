"""NativeModel: the ctypes face of the native runtime (engine.c), without torch.

The model is described by a spec (native.json: sizes, family switches, per-layer
attention windows, the formats in use) and its tables (native.safetensors: each format's
element values and scale decoding, the rotary frequencies), both written next to the
weights when elastiq saves a model or builds an artifact. Weights are numpy arrays of
packed bytes (or float rows) that this object keeps alive while the C structs point at
them; :meth:`NativeModel.set` swaps one module for another between two forward passes.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

import numpy as np

from elastiq.errors import InputError

from .build import library

SPEC_VERSION = 1
ACTS = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_tanh": 1, "gelu_new": 1, "gelu": 2}
KINDS = {"packed": 0, "F32": 1, "F16": 2, "BF16": 3}
LAYER_MATS = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o",
              "mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down"}
LAYER_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "post_attn_norm",
               "pre_feedforward_layernorm": "pre_ffn_norm", "post_feedforward_layernorm": "post_ffn_norm",
               "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm"}
P = ctypes.c_void_p


class NativeError(InputError):
    """Input the native runtime refuses: an unsupported model or format, a bad token, a full context."""


class QWeight(ctypes.Structure):  # mirrors lut_kernel.c's qweight
    _fields_ = [("N", ctypes.c_int64), ("K", ctypes.c_int64),
                ("bits", ctypes.c_int32), ("block", ctypes.c_int32), ("per_row", ctypes.c_int32),
                ("scale_bits", ctypes.c_int32), ("sel_bits", ctypes.c_int32), ("pad_", ctypes.c_int32),
                ("tensor_scale", ctypes.c_float), ("pad2_", ctypes.c_float),
                ("codes", P), ("scodes", P), ("scale_lut", P), ("sel", P), ("elem_lut", P),
                ("elem_i8", P), ("i8_mult", ctypes.c_float), ("pad3_", ctypes.c_float)]


class Mat(ctypes.Structure):  # eq_mat
    _fields_ = [("q", QWeight), ("kind", ctypes.c_int32), ("pad_", ctypes.c_int32), ("dense", P), ("bias", P),
                ("lr_a", P), ("lr_b", P), ("rank", ctypes.c_int64), ("lr_scaling", ctypes.c_float),
                ("pad2_", ctypes.c_float)]


class Layer(ctypes.Structure):  # eq_layer
    _fields_ = [*[(n, Mat) for n in ("q", "k", "v", "o", "gate", "up", "down")],
                *[(n, P) for n in ("attn_norm", "post_attn_norm", "pre_ffn_norm", "post_ffn_norm", "q_norm", "k_norm")],
                ("inv_freq", P), ("rope_scale", ctypes.c_float), ("window", ctypes.c_int32)]


class Model(ctypes.Structure):  # eq_model
    _fields_ = [*[(n, ctypes.c_int32) for n in ("n_layers", "dim", "n_heads", "n_kv", "head_dim", "ffn", "vocab",
                                                 "max_ctx", "act", "norm_offset", "sandwich", "pad_")],
                *[(n, ctypes.c_float) for n in ("eps", "embed_scale", "attn_scale", "attn_softcap", "final_softcap",
                                                "pad2_")],
                ("embed", Mat), ("head", Mat), ("final_norm", P), ("layers", ctypes.POINTER(Layer)),
                ("k_cache", P), ("v_cache", P), ("cap", ctypes.c_int64), ("nthreads", ctypes.c_int32),
                ("pad3_", ctypes.c_int32)]


def runtime():
    """The runtime library, its functions typed and its struct layout checked against ours."""
    lib = library()
    if not getattr(lib, "_eq_checked", False):
        sizes = (ctypes.c_int64 * 8)()
        lib.eq_struct_sizes(sizes)
        ours = [ctypes.sizeof(QWeight), ctypes.sizeof(Mat), ctypes.sizeof(Layer), ctypes.sizeof(Model),
                Mat.dense.offset, Layer.inv_freq.offset, Model.layers.offset, Model.cap.offset]
        if list(sizes) != ours:
            raise RuntimeError(f"the native runtime's struct layout {list(sizes)} differs from its ctypes mirror {ours}")
        lib.eq_forward.argtypes = [ctypes.POINTER(Model), P, ctypes.c_int64, ctypes.c_int64, P, ctypes.c_int]
        lib.eq_forward.restype = ctypes.c_int
        lib.eq_reserve.argtypes = [ctypes.POINTER(Model), ctypes.c_int64]
        lib.eq_reserve.restype = ctypes.c_int
        lib.eq_release.argtypes = [ctypes.POINTER(Model)]
        lib.eq_release.restype = None
        lib._eq_checked = True
    return lib


@dataclass
class FormatTables:
    """What the kernels need of one format: geometry and decoding tables."""
    bits: int
    block: int  # 0: one block per row
    scale_bits: int
    sel_bits: int
    tensor_scale: bool
    elements: np.ndarray  # float32, (grids x 2^bits)
    scales: np.ndarray  # float32, 2^scale_bits (unused for raw float32 scales)
    elem_i8: np.ndarray | None = field(init=False)
    i8_mult: float = field(init=False)

    def __post_init__(self):
        self.elements = np.ascontiguousarray(self.elements, dtype=np.float32)
        self.scales = np.ascontiguousarray(self.scales, dtype=np.float32)
        self.elem_i8, self.i8_mult = (_as_int8(self.elements) if self.bits == 4 else _int8_codes(self.elements))

    def check(self, shape, what: str) -> None:
        """Refuse a weight these kernels cannot serve, by name."""
        if not 1 <= self.bits <= 8 or self.scale_bits not in (8, 16, 32) or self.sel_bits not in (0, 1, 2, 4, 8):
            raise NativeError(f"{what}: a format of {self.bits}-bit elements, {self.scale_bits}-bit scales and "
                              f"{self.sel_bits}-bit selectors is not served by the native runtime; use --engine torch")
        if self.bits == 4 and (shape[1] % 2 or (self.block or shape[1]) % 2):
            raise NativeError(f"{what}: 4-bit codes need an even row length and block; use --engine torch")


def _as_int8(values: np.ndarray):
    """(values * 2^k as int8, 2^-k) for the smallest k making every value an integer in
    [-127, 127]; (None, 1.0) when none does (NF4). Mirrors elastiq.quant.kernels."""
    if not np.isfinite(values).all():
        return None, 1.0
    for k in range(8):
        v = values.astype(np.float64) * 2.0**k
        if (v == np.round(v)).all() and np.abs(v).max() <= 127:
            return v.astype(np.int8), 2.0**-k
    return None, 1.0


def _int8_codes(values: np.ndarray):
    """For 8-bit grids whose value is the code read as int8 times a step (INT8, MXINT8)."""
    as_int = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8)
    step = float(values[1]) if values.size == 256 else 0.0
    if step > 0 and np.array_equal(values, as_int.astype(np.float32) * np.float32(step)):
        return as_int.copy(), step
    return None, 1.0


@dataclass
class Matrix:
    """One weight matrix the runtime reads: packed parts in a format, or float rows."""
    shape: tuple[int, int]
    kind: str  # "packed", "F32", "F16" or "BF16"
    parts: dict[str, np.ndarray]  # packed: codes, scales, selectors (uint8), tensor_scale; float: weight
    fmt: FormatTables | None = None
    bias: np.ndarray | None = None
    low_rank: tuple[np.ndarray, np.ndarray, float] | None = None  # (A (r, K), B (N, r), scaling)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.bias is None else self.bias.nbytes
        if self.low_rank is not None:
            extra += self.low_rank[0].nbytes + self.low_rank[1].nbytes
        return sum(a.nbytes for a in self.parts.values()) + extra

    def with_low_rank(self, A: np.ndarray, B: np.ndarray, scaling: float) -> "Matrix":
        A, B = np.ascontiguousarray(A, dtype=np.float32), np.ascontiguousarray(B, dtype=np.float32)
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != self.shape[1] or B.shape[0] != self.shape[0] or A.shape[0] != B.shape[1]:
            raise NativeError(f"a low-rank correction of a {self.shape[0]}x{self.shape[1]} matrix needs A (r, "
                              f"{self.shape[1]}) and B ({self.shape[0]}, r); got {A.shape} and {B.shape}")
        return Matrix(self.shape, self.kind, self.parts, self.fmt, self.bias, (A, B, float(scaling)))

    def fill(self, m: Mat) -> None:
        N, K = self.shape
        ctypes.memset(ctypes.addressof(m), 0, ctypes.sizeof(Mat))
        m.q.N, m.q.K, m.kind = N, K, KINDS[self.kind]
        if self.kind == "packed":
            f = self.fmt
            block = f.block or K
            ts = self.parts.get("tensor_scale")
            m.q.bits, m.q.block, m.q.per_row = f.bits, block, -(-K // block)
            m.q.scale_bits, m.q.sel_bits = f.scale_bits, f.sel_bits
            m.q.tensor_scale = 1.0 if ts is None else float(ts.reshape(-1)[0])
            m.q.codes, m.q.scodes = self.parts["codes"].ctypes.data, self.parts["scales"].ctypes.data
            sel = self.parts.get("selectors")
            m.q.sel = sel.ctypes.data if sel is not None and sel.size else None
            m.q.scale_lut, m.q.elem_lut = f.scales.ctypes.data, f.elements.ctypes.data
            m.q.elem_i8 = None if f.elem_i8 is None else f.elem_i8.ctypes.data
            m.q.i8_mult = f.i8_mult
        else:
            m.dense = self.parts["weight"].ctypes.data
        if self.bias is not None:
            m.bias = self.bias.ctypes.data
        if self.low_rank is not None:
            A, B, s = self.low_rank
            m.lr_a, m.lr_b, m.rank, m.lr_scaling = A.ctypes.data, B.ctypes.data, A.shape[0], s


def packed_matrix(shape, fmt: FormatTables, codes, scales, selectors=None, tensor_scale=None, bias=None,
                  what: str = "a weight") -> Matrix:
    """A packed matrix, its buffers checked against the format's sizes (never read past them)."""
    N, K = (int(s) for s in shape)
    fmt.check((N, K), what)
    block = fmt.block or K
    blocks = N * -(-K // block)
    want = {"codes": (N * K * fmt.bits + 7) // 8, "scales": (blocks * fmt.scale_bits + 7) // 8,
            "selectors": (blocks * fmt.sel_bits + 7) // 8}
    parts = {"codes": codes, "scales": scales, "selectors": selectors if selectors is not None else np.zeros(0, np.uint8)}
    for k, n in want.items():
        a = parts[k]
        if a.dtype != np.uint8 or a.ndim != 1 or a.size != n:
            raise NativeError(f"{what}: packed {k} hold {a.size} {a.dtype} values, the format needs {n} bytes: "
                              "the model is corrupted")
    if fmt.tensor_scale:
        if tensor_scale is None or tensor_scale.size != 1:
            raise NativeError(f"{what}: the format has a tensor scale and none is stored: the model is corrupted")
        parts["tensor_scale"] = np.asarray(tensor_scale, dtype=np.float32).reshape(1)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        if bias.shape != (N,):
            raise NativeError(f"{what}: bias of shape {bias.shape}, expected ({N},)")
    return Matrix((N, K), "packed", parts, fmt, bias)


def dense_matrix(weight: np.ndarray, dtype: str, bias=None, what: str = "a weight") -> Matrix:
    """A float matrix (F32, F16, or BF16 given as its uint16 bits)."""
    if weight.ndim != 2 or dtype not in ("F32", "F16", "BF16"):
        raise NativeError(f"{what}: a float matrix is 2-D F32, F16 or BF16; got {dtype} of shape {weight.shape}")
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32)
    return Matrix(tuple(weight.shape), dtype, {"weight": np.ascontiguousarray(weight)}, None, bias)


class NativeModel:
    """A decoder held for the native runtime. Set every matrix and norm, then call forward."""

    def __init__(self, spec: dict, tables: dict[str, np.ndarray], nthreads: int | None = None):
        if spec.get("native") != SPEC_VERSION:
            raise NativeError(f"native spec version {spec.get('native')}; this elastiq reads version {SPEC_VERSION}")
        self.lib = runtime()
        self.spec = spec
        s = spec
        self.n_layers, self.dim, self.vocab = int(s["n_layers"]), int(s["dim"]), int(s["vocab"])
        self.max_ctx = int(s["max_ctx"])
        self.prefix = s["prefix"]
        self.formats = {f: FormatTables(tensor_scale=bool(info["tensor_scale"]), bits=int(info["bits"]),
                                        block=int(info["block"]), scale_bits=int(info["scale_bits"]),
                                        sel_bits=int(info["sel_bits"]),
                                        elements=tables[f"format.{i}.elements"], scales=tables[f"format.{i}.scales"])
                        for i, (f, info) in enumerate(s["formats"].items())}
        self._rope = {name: np.ascontiguousarray(tables[f"rope.{name}.inv_freq"], dtype=np.float32) for name in s["rope"]}
        m = self.c = Model()
        for k in ("n_layers", "dim", "n_heads", "n_kv", "head_dim", "ffn", "vocab", "max_ctx"):
            setattr(m, k, int(s[k]))
        if s["act"] not in ACTS:
            raise NativeError(f"activation {s['act']!r} is not served by the native runtime; use --engine torch")
        m.act, m.norm_offset, m.sandwich = ACTS[s["act"]], int(s["norm_offset"]), int(s["sandwich"])
        m.eps, m.embed_scale, m.attn_scale = s["eps"], s["embed_scale"], s["attn_scale"]
        m.attn_softcap, m.final_softcap = s["attn_softcap"] or 0.0, s["final_softcap"] or 0.0
        self._layers = (Layer * self.n_layers)()
        m.layers = self._layers
        for i, lay in enumerate(s["layers"]):
            L = self._layers[i]
            L.inv_freq = self._rope[lay["rope"]].ctypes.data
            L.rope_scale = float(s["rope"][lay["rope"]]["scale"])
            L.window = int(lay["window"])
        self._kc = (ctypes.c_void_p * self.n_layers)()
        self._vc = (ctypes.c_void_p * self.n_layers)()
        m.k_cache, m.v_cache = ctypes.addressof(self._kc), ctypes.addressof(self._vc)
        m.nthreads = nthreads or len(os.sched_getaffinity(0))
        self.matrices: dict[str, Matrix] = {}
        self._norms: dict[str, np.ndarray] = {}
        self.position = 0  # tokens in the KV cache

    # ---- weights ------------------------------------------------------------------------
    def _slot(self, name: str):
        """(struct, field) where module ``name`` lives."""
        p = self.prefix
        if name == self.spec["embed"]:
            return self.c, "embed"
        if name == self.spec["head"]:
            return self.c, "head"
        if name == self.spec["final_norm"]:
            return self.c, "final_norm"
        if name.startswith(p + "layers."):
            i, _, rest = name[len(p) + 7:].partition(".")
            if i.isdigit() and int(i) < self.n_layers:
                field = LAYER_MATS.get(rest) or LAYER_NORMS.get(rest)
                if field:
                    return self._layers[int(i)], field
        raise NativeError(f"{name} is not a part of a {self.spec['family']} model the native runtime knows")

    def set(self, name: str, matrix: Matrix) -> None:
        """Point module ``name`` at ``matrix`` (call between forward passes)."""
        target, fld = self._slot(name)
        want = self.expected_shape(name)
        if tuple(matrix.shape) != want:
            raise NativeError(f"{name}: shape {tuple(matrix.shape)}, the model needs {want}")
        matrix.fill(getattr(target, fld))
        self.matrices[name] = matrix

    def set_float_parts(self, tf, skip=(), aliases=None, used: set | None = None) -> None:
        """Every part still unset (and not in ``skip``) from ``tf``'s ``NAME.weight`` (or the
        key ``aliases`` maps it to): norms, and float matrices with their biases; a key
        serves every part that names it once. A tied head missing from the file shares the
        embedding, and the reverse. ``used`` collects the keys read."""
        from .tensors import as_float32

        spec, aliases, used = self.spec, aliases or {}, used if used is not None else set()
        loaded: dict[str, Matrix] = {}
        for name in self.required():
            if name in skip or name in self.matrices or name in self._norms:
                continue
            key = aliases.get(f"{name}.weight", f"{name}.weight")
            if key not in tf.entries:
                twin = {spec["head"]: spec["embed"], spec["embed"]: spec["head"]}.get(name) if spec["tied"] else None
                if twin in self.matrices:
                    self.set(name, self.matrices[twin])
                    continue
                if twin is None or f"{twin}.weight" not in tf.entries:
                    raise NativeError(f"{tf.path} has no {key}: the model is incomplete, and a model is never run "
                                      "with parts missing")
                key = f"{twin}.weight"
            used.add(key)
            w = tf.get(key)
            if w.ndim == 1:
                self.set_norm(name, as_float32(w, tf.dtype(key)))
                continue
            if key not in loaded:
                bkey = f"{name}.bias"
                bias = as_float32(tf.get(bkey), tf.dtype(bkey)) if bkey in tf.entries else None
                if bias is not None:
                    used.add(bkey)
                loaded[key] = dense_matrix(w, tf.dtype(key), bias, what=name)
            self.set(name, loaded[key])

    def set_norm(self, name: str, weight: np.ndarray) -> None:
        target, fld = self._slot(name)
        w = np.ascontiguousarray(weight, dtype=np.float32)
        n = self.spec["head_dim"] if fld in ("q_norm", "k_norm") else self.dim
        if w.shape != (n,):
            raise NativeError(f"{name}: shape {w.shape}, the model needs ({n},)")
        setattr(target, fld, w.ctypes.data)
        self._norms[name] = w

    def expected_shape(self, name: str) -> tuple[int, int]:
        s = self.spec
        D, hd, F = s["dim"], s["head_dim"], s["ffn"]
        _, fld = self._slot(name)
        return {"embed": (s["vocab"], D), "head": (s["vocab"], D), "q": (s["n_heads"] * hd, D),
                "k": (s["n_kv"] * hd, D), "v": (s["n_kv"] * hd, D), "o": (D, s["n_heads"] * hd),
                "gate": (F, D), "up": (F, D), "down": (D, F)}[fld]

    def required(self) -> list[str]:
        """Every module and norm name the model needs."""
        p, s = self.prefix, self.spec
        names = [s["embed"], s["head"], s["final_norm"]]
        norms = ["input_layernorm", "post_attention_layernorm"]
        if s["sandwich"]:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        if s["qk_norm"]:
            norms += ["self_attn.q_norm", "self_attn.k_norm"]
        for i in range(self.n_layers):
            names += [f"{p}layers.{i}.{r}" for r in [*LAYER_MATS, *norms]]
        return names

    def check_complete(self) -> None:
        have = set(self.matrices) | set(self._norms)
        missing = [n for n in self.required() if n not in have]
        if missing:
            raise NativeError(f"the model is incomplete: {len(missing)} parts missing ({', '.join(missing[:4])}): "
                              "a model is never run partly empty")

    @property
    def weight_bytes(self) -> int:
        seen, total = set(), 0
        for m in list(self.matrices.values()) + list(self._norms.values()):
            if id(m) not in seen:
                seen.add(id(m))
                total += m.nbytes
        return total

    # ---- running ------------------------------------------------------------------------
    def reserve(self, tokens: int) -> None:
        """Make the KV cache hold ``tokens`` tokens (at most the maximum context) before a run."""
        cap = min(self.max_ctx, int(tokens))
        if cap > self.c.cap and self.lib.eq_reserve(ctypes.byref(self.c), cap) != 0:
            raise MemoryError(f"cannot allocate a KV cache of {cap} tokens")

    def reset(self) -> None:
        """Forget the KV cache's contents (its memory stays for the next sequence)."""
        self.position = 0

    def release(self) -> None:
        """Hand the KV cache's memory back."""
        self.lib.eq_release(ctypes.byref(self.c))
        self.position = 0

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Run ``tokens`` after those already in the cache; the last token's logits (vocab,),
        or every token's (n, vocab) when ``all_logits``."""
        ids = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1)
        n = ids.size
        if n == 0:
            raise NativeError("no tokens to run")
        if ids.min() < 0 or ids.max() >= self.vocab:
            raise NativeError(f"token id out of range: the vocabulary has {self.vocab} entries, got "
                              f"{int(ids.min())}..{int(ids.max())}")
        end = self.position + n
        if end > self.max_ctx:
            raise NativeError(f"{end} tokens exceed the model's maximum context of {self.max_ctx}: shorten the "
                              "prompt or ask for fewer new tokens")
        if end > self.c.cap:
            self.reserve(max(end, 2 * self.c.cap, 256))
        ids32 = ids.astype(np.int32)
        out = np.empty((n if all_logits else 1, self.vocab), dtype=np.float32)
        rc = self.lib.eq_forward(ctypes.byref(self.c), ids32.ctypes.data, n, self.position, out.ctypes.data,
                                 int(all_logits))
        if rc != 0:
            raise MemoryError("the native forward pass could not allocate its buffers")
        self.position = end
        return out if all_logits else out[0]

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass

