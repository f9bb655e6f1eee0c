"""Energy of a running command: Linux powercap (RAPL) counters and NVML where readable, else a model.

RAPL: /sys/class/powercap/intel-rapl:N/energy_uj (package domains only, so sub-domains such as
core or dram are not counted twice; AMD exposes the same interface). The counters wrap at
max_energy_range_uj. They count the whole package, not one process: on a shared machine the
reading includes other work. NVML (pynvml, if installed) gives each GPU's total energy.

Fallback model (Green Algorithms, Lannelongue et al. 2021): energy = CPU time * watts per core
+ peak resident memory (GB) * 0.3725 W/GB * wall time. Its result says it is a model.
"""
from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
WATTS_PER_CORE = 12.0      # Green Algorithms default TDP per core
WATTS_PER_GB = 0.3725      # Green Algorithms memory power


@dataclass
class Measurement:
    command: list
    returncode: int
    seconds: float
    energy_j: float
    method: str                 # "rapl", "rapl+nvml", "nvml" or "model"
    measured: bool
    notes: list = field(default_factory=list)
    cpu_seconds: float = 0.0
    peak_rss_gb: float = 0.0

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / 3.6e6


def rapl_domains(root: Path = POWERCAP) -> list[Path]:
    """Readable package-level RAPL domains (intel-rapl:N, not intel-rapl:N:M)."""
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:
            continue
        f = d / "energy_uj"
        try:
            int(f.read_text())
        except (OSError, ValueError):
            continue
        out.append(d)
    return out


def _read_uj(d: Path) -> tuple[int, int]:
    e = int((d / "energy_uj").read_text())
    try:
        m = int((d / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        m = 0
    return e, m


def rapl_delta_j(before: dict, after: dict) -> float:
    """Joules between two readings {domain: (energy_uj, max_range_uj)}, allowing one wrap per domain."""
    total = 0
    for d, (e0, m) in before.items():
        e1, _ = after[d]
        diff = e1 - e0
        if diff < 0:
            if m <= 0:
                raise ValueError(f"RAPL counter {d} went backwards and has no max_energy_range_uj")
            diff += m
        total += diff
    return total / 1e6


def _nvml():
    try:
        import pynvml  # optional: only where a GPU and its library exist
        pynvml.nvmlInit()
        hs = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in hs]   # mJ; raises where unsupported
        return pynvml, hs
    except Exception:  # noqa: BLE001 - any failure means "no NVML energy counter here"
        return None, []


def measure(command: list, root: Path = POWERCAP, watts_per_core: float = WATTS_PER_CORE) -> Measurement:
    """Run ``command`` and return its energy, measured where counters are readable, else modelled."""
    if not command:
        raise ValueError("give a command to measure, e.g. elastiq carbon --measure -- python -c 'print(1)'")
    domains = rapl_domains(root)
    nv, handles = _nvml()
    r0 = {d: _read_uj(d) for d in domains}
    g0 = [nv.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles] if nv else []
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command)
    except FileNotFoundError:
        raise ValueError(f"command not found: {command[0]!r}") from None
    secs = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    rss_gb = ru1.ru_maxrss * 1024 / 1e9      # ru_maxrss is in KiB on Linux
    notes, energy, methods = [], 0.0, []
    if domains:
        energy += rapl_delta_j(r0, {d: _read_uj(d) for d in domains})
        methods.append("rapl")
        notes.append(f"RAPL package counters ({', '.join(d.name for d in domains)}): whole packages, "
                     "including anything else running on them")
    if nv:
        g1 = [nv.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles]
        energy += sum(b - a for a, b in zip(g0, g1)) / 1e3
        methods.append("nvml")
        notes.append(f"NVML energy counters of {len(handles)} GPU(s): whole devices, not one process")
    if not methods:
        energy = cpu * watts_per_core + rss_gb * WATTS_PER_GB * secs
        why = "no readable RAPL counter under " + str(root) + (" (not present)" if not root.exists() else "")
        notes.append(f"{why} and no NVML energy counter: FELL BACK TO A MODEL (Green Algorithms: "
                     f"{cpu:.2f} CPU-s x {watts_per_core:g} W/core + {rss_gb:.2f} GB x {WATTS_PER_GB} W/GB x {secs:.2f} s)")
    return Measurement(list(command), proc.returncode, secs, energy, "+".join(methods) or "model", bool(methods),
                       notes, cpu, rss_gb)


def environment() -> str:
    """One line on what this machine allows."""
    d = rapl_domains()
    nv, hs = _nvml()
    parts = [f"RAPL: {len(d)} readable package domain(s)" if d else "RAPL: not readable",
             f"NVML: {len(hs)} GPU(s)" if nv else "NVML: not available"]
    return "; ".join(parts) + f"; {os.cpu_count()} CPUs"
