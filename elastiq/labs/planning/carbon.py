"""Carbon accounting: embodied (ACT-style), operational (energy x PUE x grid), and LLM lifecycle
(LLMCarbon-style), tied to elastiq's weight formats.

Embodied carbon of a component, following ACT (Gupta et al., ISCA 2022):

    logic          area * CPA,  CPA = (CI_fab * EPA + GPA + MPA) / yield      (g/cm2)
    memory/storage capacity * CPS / yield                                      (g/GB)
    packaging      150 g per IC package

Operational carbon: energy (kWh) * PUE * grid intensity (g/kWh). A run of duration T on hardware
with lifetime LT also carries T/LT of the hardware's embodied carbon.

Every number comes from a table in ``elastiq/labs/planning/data`` that names its source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

SECONDS_PER_YEAR = 365 * 24 * 3600


@lru_cache(maxsize=None)
def table(name: str) -> dict:
    """A data table shipped with elastiq (``act_logic``, ``act_memory``, ``grid_intensity``, ``devices``,
    ``llmcarbon_hardware``, ``llmcarbon_validation``)."""
    try:
        text = resources.files("elastiq.labs.planning").joinpath("data", f"{name}.json").read_text()
    except FileNotFoundError:
        raise ValueError(f"no carbon data table {name!r}") from None
    return json.loads(text)


def _num(what: str, v, allow_zero: bool = True) -> float:
    if v is None:
        raise ValueError(f"{what} is missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise ValueError(f"{what} must be a number, got {v!r}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'non-negative' if allow_zero else 'positive'}, got {v}")
    return float(v)


# ---- grid intensity ----------------------------------------------------------------
def regions(year: str | None = None) -> list[str]:
    g = table("grid_intensity")
    return list(g["locations"][year or g["default_year"]]["values"]) + list(g["sources"]["values"])


def grid_intensity(region, year: str | None = None) -> float:
    """g CO2e per kWh for a location ('usa', 'europe', ...), a generation source ('coal', 'wind', ...)
    or a number given directly."""
    if isinstance(region, (int, float)) and not isinstance(region, bool):
        return _num("grid intensity (g/kWh)", region)
    g = table("grid_intensity")
    year = str(year or g["default_year"])
    if year not in g["locations"]:
        raise ValueError(f"no grid-intensity table for year {year!r}; have {', '.join(g['locations'])}")
    key = str(region).strip().lower()
    for src in (g["locations"][year]["values"], g["sources"]["values"]):
        if key in src:
            return float(src[key])
    try:
        return _num("grid intensity (g/kWh)", float(key))
    except ValueError as e:
        if "must be" in str(e):
            raise
    raise ValueError(f"unknown region {region!r}; known: {', '.join(regions(year))} (or a number in g CO2e/kWh)")


# ---- ACT embodied ------------------------------------------------------------------
def logic_cpa(node: str, fab_ci="taiwan", gpa: str = "97", fab_yield: float = 0.875) -> float:
    """Carbon per area of a logic die, g CO2e/cm2: (CI_fab * EPA + GPA + MPA) / yield."""
    nodes = table("act_logic")["nodes"]
    key = str(node).strip().lower()
    if key not in nodes:
        raise ValueError(f"unknown process node {node!r}; ACT's table has {', '.join(nodes)}")
    n = nodes[key]
    gpa = str(gpa)
    if gpa not in ("95", "99", "97"):
        raise ValueError(f"gpa must be '95', '99' or '97' (their mean), got {gpa!r}")
    g = (n["gpa95"] + n["gpa99"]) / 2 if gpa == "97" else n[f"gpa{gpa}"]
    y = _num("fab yield", fab_yield, allow_zero=False)
    if y > 1:
        raise ValueError(f"fab yield must be at most 1, got {y}")
    ci_kwh = grid_intensity(fab_ci)
    return (ci_kwh * n["epa"] + g + n["mpa"]) / y


def memory_cps(kind: str, type_: str, fab_yield: float = 0.875) -> float:
    """Carbon per GB of DRAM, SSD or HDD, g CO2e/GB, divided by the fab yield as ACT does."""
    mem = table("act_memory")
    if kind not in ("dram", "ssd", "hdd"):
        raise ValueError(f"memory kind must be dram, ssd or hdd, got {kind!r}")
    vals = mem[kind]["values"]
    key = str(type_).strip().lower()
    if key not in vals:
        raise ValueError(f"unknown {kind} type {type_!r}; ACT's table has {', '.join(vals)}")
    y = _num("fab yield", fab_yield, allow_zero=False)
    if y > 1:
        raise ValueError(f"fab yield must be at most 1, got {y}")
    return vals[key] / y


@dataclass(frozen=True)
class Component:
    name: str
    kind: str                    # logic | dram | ssd | hdd
    count: int = 1
    packages: int = 1            # IC packages per unit
    area_cm2: float = 0.0        # logic
    node: str = ""               # logic
    capacity_gb: float = 0.0     # memory and storage
    type: str = ""               # memory and storage
    fab_ci: object = "taiwan"
    gpa: str = "97"
    fab_yield: float = 0.875
    group: str = ""

    def __post_init__(self):
        if self.kind not in ("logic", "dram", "ssd", "hdd"):
            raise ValueError(f"component {self.name}: kind must be logic, dram, ssd or hdd, got {self.kind!r}")
        if not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"component {self.name}: count must be a non-negative integer, got {self.count!r}")
        if not isinstance(self.packages, int) or self.packages < 0:
            raise ValueError(f"component {self.name}: packages must be a non-negative integer, got {self.packages!r}")
        if self.kind == "logic":
            _num(f"component {self.name}: area_cm2", self.area_cm2, allow_zero=False)
        else:
            _num(f"component {self.name}: capacity_gb", self.capacity_gb, allow_zero=False)

    def die_g(self) -> float:
        """Fab carbon of one unit without packaging, g CO2e."""
        if self.kind == "logic":
            return self.area_cm2 * logic_cpa(self.node, self.fab_ci, self.gpa, self.fab_yield)
        return self.capacity_gb * memory_cps(self.kind, self.type, self.fab_yield)

    def kg(self) -> float:
        pkg = table("act_logic")["defaults"]["packaging_g_per_ic"]
        return self.count * (self.die_g() + self.packages * pkg) / 1000


@dataclass
class Embodied:
    device: str
    components: list
    lifetime_years: float
    accelerators: int = 1
    source: str = ""

    @property
    def total_kg(self) -> float:
        return sum(c.kg() for c in self.components)

    def by_group(self) -> dict:
        out: dict = {}
        for c in self.components:
            k = c.group or c.name
            out[k] = out.get(k, 0.0) + c.kg()
        return out

    def amortized_kg(self, seconds: float, share: float = 1.0) -> float:
        """The embodied carbon a use of ``seconds`` carries: T / lifetime of ``share`` of the device."""
        _num("duration (s)", seconds)
        return self.total_kg * share * seconds / (self.lifetime_years * SECONDS_PER_YEAR)


def devices() -> list[str]:
    return list(table("devices")["devices"])


def device(name, lifetime_years: float | None = None) -> Embodied:
    """A device preset ('dell-r740', 'fairphone-3', 'laptop', 'gpu-server-h100', ...), a perf system
    preset (mapped to its server), or a dict with ``components`` (and ``lifetime_years``)."""
    d = table("devices")
    if isinstance(name, dict):
        spec, label = name, name.get("name", "custom")
    else:
        key = str(name).strip().lower()
        key = d["system_to_device"].get(key, key)
        if key not in d["devices"]:
            raise ValueError(f"unknown device {name!r}; presets: {', '.join(d['devices'])} "
                             f"(or a perf system: {', '.join(d['system_to_device'])})")
        spec, label = d["devices"][key], key
    if "components" not in spec or not spec["components"]:
        raise ValueError(f"device {label}: no components listed")
    comps = [Component(**c) for c in spec["components"]]
    lt = _num("lifetime (years)", lifetime_years if lifetime_years is not None else spec.get("lifetime_years", 4),
              allow_zero=False)
    return Embodied(label, comps, lt, int(spec.get("accelerators", 1)), spec.get("source", ""))


def device_embodied(name) -> dict:
    """kg CO2e by component group, and the total."""
    e = device(name)
    return e.by_group() | {"total": e.total_kg}


# ---- operational ---------------------------------------------------------------------
def operational_kg(energy_kwh: float, region="world", pue: float = 1.0, year: str | None = None) -> float:
    """kg CO2e of ``energy_kwh`` at the IT equipment, times PUE, at the region's grid intensity."""
    _num("energy (kWh)", energy_kwh)
    p = _num("PUE", pue, allow_zero=False)
    if p < 1:
        raise ValueError(f"PUE is at least 1 (facility energy over IT energy), got {p}")
    return energy_kwh * p * grid_intensity(region, year) / 1000


def run_kg(energy_kwh: float, seconds: float, device_name, region="world", pue: float = 1.0, share: float = 1.0) -> dict:
    """ACT's CF = OP + (T / LT) * E for one run: operational and amortized embodied, kg CO2e."""
    op = operational_kg(energy_kwh, region, pue)
    emb = device(device_name).amortized_kg(seconds, share)
    return {"operational": op, "embodied": emb, "total": op + emb}


# ---- LLM lifecycle (LLMCarbon) ------------------------------------------------------------
@dataclass
class Training:
    flops: float
    days: float
    energy_mwh: float
    operational_t: float
    embodied_t: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def total_t(self) -> float:
        return self.operational_t + self.embodied_t


def training_carbon(params: float, tokens: float, devices: int, peak_flops: float, efficiency: float,
                    power_w: float, ci_kg_per_kwh: float, pue: float = 1.0, hardware: dict | None = None) -> Training:
    """LLMCarbon's training estimate: FLOPs = 6 * params * tokens (active parameters for MoE);
    days = FLOPs / (devices * peak * efficiency); energy = power * devices * time * PUE;
    operational = energy * CI. ``hardware``: {llmcarbon hardware name or 'dram_gb'/'ssd_gb': count}
    adds the embodied share over the hardware's lifetime (LLMCarbon: 5 years)."""
    P = _num("params", params, allow_zero=False)
    D = _num("tokens", tokens, allow_zero=False)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    peak = _num("peak FLOP/s", peak_flops, allow_zero=False)
    eff = _num("hardware efficiency", efficiency, allow_zero=False)
    if eff > 1:
        raise ValueError(f"hardware efficiency must be at most 1, got {eff}")
    w = _num("power (W)", power_w)
    ci = _num("carbon intensity (kg/kWh)", ci_kg_per_kwh)
    p = _num("PUE", pue, allow_zero=False)
    flops = 6 * P * D
    seconds = flops / (devices * peak * eff)
    days = seconds / 86400
    mwh = w * devices * seconds / 3600 * p / 1e6
    emb = llmcarbon_embodied_t(hardware, days) if hardware else 0.0
    return Training(flops, days, mwh, mwh * ci, emb, {"seconds": seconds})


def llmcarbon_embodied_t(hardware: dict, days: float) -> float:
    """Σ unit * carbon-per-unit * count * (days / lifetime), tonnes (LLMCarbon's embodied model)."""
    t = table("llmcarbon_hardware")
    hw = t["hardware"]
    total_kg = 0.0
    for name, count in hardware.items():
        _num(f"count of {name}", count)
        if name in ("dram_gb", "ssd_gb"):
            total_kg += count * hw[name[:-3]]["kg_per_gb"]
        elif name in hw and "area_cm2" in hw[name]:
            total_kg += count * hw[name]["area_cm2"] * hw[name]["kg_per_cm2"]
        else:
            raise ValueError(f"unknown LLMCarbon hardware {name!r}; known: {', '.join(k for k in hw if 'area_cm2' in hw[k])}, dram_gb, ssd_gb")
    return total_kg * _num("days", days) / (t["lifetime_years"] * 365) / 1000


def inference_flops(params: float, tokens: float) -> float:
    """LLMCarbon's inference FLOPs: 2 * params per token."""
    return 2 * _num("params", params, allow_zero=False) * _num("tokens", tokens)


# ---- the tie to elastiq: carbon per 1,000 generated tokens ----------------------------------
def per_1k_tokens(model, system, weights: str = "bf16", region="world", pue: float = 1.0, batch: int = 1,
                  prompt: int = 512, new_tokens: int = 512, tp: int = 1, host_w: float = 0.0,
                  lifetime_years: float | None = None, kv_bits: float = 16) -> dict:
    """kg CO2e per 1,000 generated tokens for ``model`` with ``weights`` on ``system``.

    Time per token comes from the performance model's decode step (memory-bound: bytes per token
    follow the format's bits per weight). Power: the accelerator's idle power plus its dynamic
    range times the busy fraction of the step (compute stream), plus ``host_w`` per accelerator.
    Embodied: the accelerator's share of its server (or the whole laptop) over its lifetime."""
    from . import perf

    r = perf.infer(model, system, perf.Parallel(tp=tp), batch=batch, prompt=prompt, new_tokens=new_tokens,
                   weights=weights, kv_bits=kv_bits)
    sy = perf.get_system(system)
    if sy.power_w <= 0:
        raise ValueError(f"system {sy.name} has no power figure (power_w); give it one to estimate energy")
    _num("host power (W)", host_w)
    busy = r.decode_compute_s / r.decode_step_s
    watts = tp * (sy.idle_w + (sy.power_w - sy.idle_w) * busy + host_w)
    seconds = 1000 / r.tokens_per_s
    kwh = watts * seconds / 3.6e6
    op = operational_kg(kwh, region, pue)
    dev = device(sy.name, lifetime_years)
    emb = dev.amortized_kg(seconds, share=tp / dev.accelerators)
    return {"model": r.model, "system": sy.name, "weights": weights, "bits_per_weight": r.bits_per_weight,
            "region": str(region), "pue": pue, "batch": batch, "seconds": seconds, "watts": watts, "energy_kwh": kwh,
            "operational_kg": op, "embodied_kg": emb, "total_kg": op + emb, "tokens_per_s": r.tokens_per_s,
            "weight_gib": r.memory.weights / 2 ** 30, "device": dev.device}
