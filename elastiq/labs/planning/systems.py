"""Accelerator systems: peak rates, memory, links and the efficiency factors that turn peaks into rates.

Every preset names its sources. The efficiency factors are ONE documented set (see EFFICIENCY
below), shared by every data-centre preset: they are not tuned per model or per case.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class System:
    name: str
    peak_flops: dict            # dtype -> dense FLOP/s per device ("fp16", "bf16", "fp32", "fp8", "int8")
    mem_bw: float               # bytes/s per device (HBM or unified memory)
    mem_bytes: float            # capacity per device
    devices_per_node: int
    intra_bw: float             # bytes/s per device per direction inside a node (NVLink)
    inter_bw: float             # bytes/s per device per direction between nodes (InfiniBand / RoCE NIC share)
    matmul_eff: float = 0.80    # achieved / peak for large GEMMs
    vector_eff: float = 0.80    # achieved / peak memory bandwidth for element-wise kernels
    intra_eff: float = 0.70     # achieved / nominal link bandwidth for collectives inside a node
    inter_eff: float = 0.80     # ... between nodes
    # per ring step: 1 us over NVLink, 2 us over InfiniBand, as in Calculon's A100 system file
    # (a small all-reduce over 8 NVLink GPUs then takes 14 us, the order nccl-tests reports)
    intra_latency_s: float = 1e-6
    inter_latency_s: float = 2e-6
    kernel_overhead_s: float = 4e-6  # launch + tail per kernel; matters for decode and small ops
    power_w: float = 0.0        # board power at full load (TDP), for operational carbon
    idle_w: float = 0.0
    sources: tuple = field(default=())

    def __post_init__(self):
        for k in ("mem_bw", "mem_bytes", "intra_bw", "inter_bw"):
            _positive(f"system {self.name}: {k}", getattr(self, k))
        if not self.peak_flops:
            raise ValueError(f"system {self.name}: peak_flops is empty; give at least one dtype's FLOP/s")
        for d, v in self.peak_flops.items():
            _positive(f"system {self.name}: peak_flops[{d}]", v)
        if int(self.devices_per_node) != self.devices_per_node or self.devices_per_node < 1:
            raise ValueError(f"system {self.name}: devices_per_node must be a positive integer, got {self.devices_per_node}")
        for k in ("matmul_eff", "vector_eff", "intra_eff", "inter_eff"):
            v = getattr(self, k)
            if not (0 < v <= 1):
                raise ValueError(f"system {self.name}: {k} must be in (0, 1], got {v}")
        for k in ("intra_latency_s", "inter_latency_s", "kernel_overhead_s", "power_w", "idle_w"):
            if getattr(self, k) < 0:
                raise ValueError(f"system {self.name}: {k} must not be negative, got {getattr(self, k)}")

    def flops(self, dtype: str) -> float:
        """Effective matmul FLOP/s for ``dtype``."""
        key = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}.get(dtype, dtype)
        if key not in self.peak_flops:
            raise ValueError(f"system {self.name} has no peak rate for dtype {dtype!r}; it knows {sorted(self.peak_flops)}")
        return self.peak_flops[key] * self.matmul_eff

    @property
    def eff_mem_bw(self) -> float:
        return self.mem_bw * self.vector_eff

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = list(self.sources)
        return d

    def with_(self, **kw) -> "System":
        return replace(self, **kw)


def _positive(what, v):
    if v is None:
        raise ValueError(f"{what} is missing")
    if not isinstance(v, (int, float)) or v != v or v <= 0:
        raise ValueError(f"{what} must be a positive number, got {v!r}")


# One set of efficiency factors for data-centre GPUs, and why:
#  matmul 0.80: large fp16/bf16 cuBLAS GEMMs reach 75-85% of the dense tensor peak (NVIDIA's
#    published A100 GEMM curves; an 8192^3 bf16 GEMM ran at ~790 of 989 TFLOP/s on an H200, see
#    the analysis reference, section 3.3). Smaller GEMMs lose more; we do not model that.
#  vector 0.80: element-wise kernels stream at ~80% of the HBM peak (STREAM-like kernels on A100/H100).
#  NVLink 0.70, InfiniBand 0.80: nccl-tests bus bandwidth on DGX A100 reaches ~230 of 300 GB/s
#    per direction inside a node and ~20 of 25 GB/s per NIC across nodes.
EFFICIENCY = dict(matmul_eff=0.80, vector_eff=0.80, intra_eff=0.70, inter_eff=0.80)

GB = 1e9
PRESETS: dict[str, System] = {}


def _add(s: System):
    PRESETS[s.name] = s


_add(System(
    "a100-80gb", {"fp16": 312e12, "bf16": 312e12, "fp32": 19.5e12, "tf32": 156e12, "int8": 624e12},
    mem_bw=2039 * GB, mem_bytes=80 * GB, devices_per_node=8, intra_bw=300 * GB, inter_bw=25 * GB,
    power_w=400, idle_w=60, **EFFICIENCY,
    sources=("NVIDIA A100 datasheet (SXM4 80GB): 312 TFLOP/s dense FP16/BF16, 2039 GB/s HBM2e, 400 W, NVLink 600 GB/s total",
             "DGX A100 / Selene: 8 GPUs per node, 8x HDR 200 Gb/s InfiniBand (25 GB/s per GPU per direction)")))
_add(System(
    "a100-40gb", {"fp16": 312e12, "bf16": 312e12, "fp32": 19.5e12, "tf32": 156e12, "int8": 624e12},
    mem_bw=1555 * GB, mem_bytes=40 * GB, devices_per_node=8, intra_bw=300 * GB, inter_bw=25 * GB,
    power_w=400, idle_w=55, **EFFICIENCY,
    sources=("NVIDIA A100 datasheet (SXM4 40GB): 312 TFLOP/s dense FP16, 1555 GB/s HBM2, 400 W",
             "DGX A100: 8 GPUs per node, 8x HDR 200 Gb/s InfiniBand")))
_add(System(
    "h100-80gb", {"fp16": 989.4e12, "bf16": 989.4e12, "fp8": 1978.9e12, "int8": 1978.9e12, "fp32": 66.9e12, "tf32": 494.7e12},
    mem_bw=3350 * GB, mem_bytes=80 * GB, devices_per_node=8, intra_bw=450 * GB, inter_bw=50 * GB,
    power_w=700, idle_w=70, **EFFICIENCY,
    sources=("NVIDIA H100 datasheet (SXM5): 989 TFLOP/s dense BF16, 1979 FP8, 3.35 TB/s HBM3, 700 W, NVLink 900 GB/s total",
             "DGX H100: 8 GPUs per node, 8x NDR 400 Gb/s InfiniBand (50 GB/s per GPU per direction)")))
_add(System(
    "h200-141gb", {"fp16": 989.4e12, "bf16": 989.4e12, "fp8": 1978.9e12, "int8": 1978.9e12, "fp32": 66.9e12, "tf32": 494.7e12},
    mem_bw=4800 * GB, mem_bytes=141 * GB, devices_per_node=8, intra_bw=450 * GB, inter_bw=50 * GB,
    power_w=700, idle_w=70, **EFFICIENCY,
    sources=("NVIDIA H200 datasheet (SXM): H100 compute, 141 GB HBM3e at 4.8 TB/s, up to 700 W",
             "HGX H200: 8 GPUs per node, NVLink 900 GB/s total, 400 Gb/s NIC per GPU")))
_add(System(
    "laptop-m2", {"fp16": 3.6e12, "bf16": 3.6e12, "fp32": 3.6e12},
    mem_bw=100 * GB, mem_bytes=24 * GB, devices_per_node=1, intra_bw=1 * GB, inter_bw=1 * GB,
    matmul_eff=0.60, vector_eff=0.70, intra_eff=0.5, inter_eff=0.5, kernel_overhead_s=10e-6,
    power_w=22, idle_w=3,
    sources=("Apple M2 (MacBook Air 2022): 10-core GPU 3.6 TFLOP/s FP32, 100 GB/s unified LPDDR5, up to 24 GB",
             "laptop class: efficiency factors 0.6 (GEMM) and 0.7 (memory) are our estimate for Metal kernels, not measured",
             "power: ~22 W package under GPU load (Apple M2 reviews); a single device, no interconnect")))


def names() -> list[str]:
    return list(PRESETS)


def get(name) -> System:
    """A preset by name, a System, or a JSON file with System fields."""
    if isinstance(name, System):
        return name
    key = str(name).strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    p = Path(str(name))
    if p.suffix == ".json" and p.is_file():
        return from_dict(json.loads(p.read_text()))
    raise ValueError(f"unknown system {name!r}; presets: {', '.join(PRESETS)} (or a .json file with System fields)")


def from_dict(d: dict) -> System:
    known = set(System.__dataclass_fields__)
    extra = set(d) - known
    if extra:
        raise ValueError(f"unknown system fields {sorted(extra)}; known: {sorted(known)}")
    missing = {"name", "peak_flops", "mem_bw", "mem_bytes", "devices_per_node", "intra_bw", "inter_bw"} - set(d)
    if missing:
        raise ValueError(f"system description is missing {sorted(missing)}")
    d = dict(d)
    d["sources"] = tuple(d.get("sources", ()))
    return System(**d)
