"""Carbon accounting: ACT components by hand, ACT's published examples, LLMCarbon's validation
table, energy measurement (RAPL arithmetic on a fake sysfs, the model fallback), refusals."""
import sys

import pytest

from elastiq.labs.planning import carbon as C
from elastiq.labs.planning import measure as M


# ---- ACT formulas by hand -----------------------------------------------------------------
def test_logic_cpa_by_hand():
    # (820 g/kWh * 0.90 kWh/cm2 + 175 + 500) / 0.875 = 1614.857 g/cm2 (ACT's Dell R740 CPU)
    assert C.logic_cpa("28nm", "coal", "95") == pytest.approx((820 * 0.90 + 175 + 500) / 0.875)
    # GPA 97 is the mean of 95 and 99; Taiwan 2022 grid 583 g/kWh
    assert C.logic_cpa("5nm") == pytest.approx((583 * 2.75 + (430 + 225) / 2 + 500) / 0.875)
    assert C.logic_cpa("7nm", 0, "99", fab_yield=1.0) == pytest.approx(200 + 500)


def test_memory_cps_divides_by_yield():
    assert C.memory_cps("dram", "ddr3_50nm") == pytest.approx(600 / 0.875)
    assert C.memory_cps("ssd", "nand_30nm", fab_yield=1) == 31
    assert C.memory_cps("hdd", "exos_x16", fab_yield=0.5) == pytest.approx(2.668)


def test_component_with_packaging_by_hand():
    c = C.Component("x", "logic", count=3, packages=2, area_cm2=2.0, node="7nm", fab_ci=100, gpa="99", fab_yield=1.0)
    # per unit: 2 cm2 * (100 * 2.15 + 200 + 500) g/cm2 + 2 * 150 g
    assert c.kg() == pytest.approx(3 * (2 * (215 + 700) + 300) / 1000)
    m = C.Component("m", "dram", count=2, packages=0, capacity_gb=10, type="lpddr4", fab_yield=1.0)
    assert m.kg() == pytest.approx(2 * 10 * 48 / 1000)


# ---- ACT's published examples (stated to 2-3 decimals) --------------------------------------
def test_act_dell_r740():
    e = C.device_embodied("dell-r740")
    assert round(e["CPU"], 2) == 23.14
    assert round(e["DRAM"], 2) == 330.43
    assert e["SSD main"] == pytest.approx(8 * (136.05 + 46.63 + 1.95), abs=0.1)   # ACT v1 script: 1477 kg


def test_act_fairphone_3():
    e = C.device_embodied("fairphone-3")
    assert round(e["RAM + flash"], 3) == 5.310
    assert round(e["CPU"], 3) == 0.899
    assert round(e["other ICs"], 3) == 5.692


def test_amortization_by_hand():
    e = C.device("fairphone-3")
    one_year = 365 * 24 * 3600
    assert e.amortized_kg(one_year) == pytest.approx(e.total_kg / 3)
    assert e.amortized_kg(one_year, share=0.5) == pytest.approx(e.total_kg / 6)


# ---- operational ----------------------------------------------------------------------------------
def test_operational_by_hand():
    assert C.operational_kg(10, "usa", pue=1.5) == pytest.approx(10 * 1.5 * 380 / 1000)
    assert C.operational_kg(1, "iceland", year="2023") == pytest.approx(0.0073)
    assert C.grid_intensity("wind") == 11
    assert C.grid_intensity(123.0) == 123.0
    r = C.run_kg(2.0, 3600, "laptop", "europe")
    assert r["operational"] == pytest.approx(2 * 0.295)
    assert r["embodied"] == pytest.approx(C.device("laptop").total_kg / (4 * 365 * 24))


# ---- LLMCarbon ----------------------------------------------------------------------------------
def test_llmcarbon_training_by_hand():
    t = C.training_carbon(1e9, 1e9, devices=2, peak_flops=1e12, efficiency=0.5, power_w=1000, ci_kg_per_kwh=0.5, pue=1.2)
    assert t.flops == 6e18
    secs = 6e18 / (2 * 1e12 * 0.5)
    assert t.days == pytest.approx(secs / 86400)
    assert t.energy_mwh == pytest.approx(1000 * 2 * secs / 3600 * 1.2 / 1e6)
    assert t.operational_t == pytest.approx(t.energy_mwh * 0.5)
    assert C.inference_flops(7e9, 1000) == 1.4e13


@pytest.mark.parametrize("row", C.table("llmcarbon_validation")["operational"], ids=lambda r: r["name"])
def test_llmcarbon_validation_within_10_percent(row):
    params = row.get("active_params_b", row["params_b"]) * 1e9
    t = C.training_carbon(params, row["tokens_b"] * 1e9, row["devices"], row["peak_tflops"] * 1e12,
                          row["hardware_efficiency"], row["system_power_w"], row["ci_kg_per_kwh"], row["pue"])
    assert abs(t.operational_t / row["published_tco2e"] - 1) < 0.10


def test_llmcarbon_embodied_xlm():
    e = C.table("llmcarbon_validation")["embodied"][0]
    t = C.llmcarbon_embodied_t(e["hardware"], e["days"])
    # by hand: (1.47*64 + 0.4*16384 + 0.018*2097152 + 8.15*1.2*512 + 111.6*1.2*64) kg * 20.4 / 1825
    assert t == pytest.approx((94.08 + 6553.6 + 37748.736 + 5007.36 + 8570.88) * 20.4 / 1825 / 1000)
    assert abs(t / e["published_tco2e"] - 1) < 0.10


# ---- the tie to formats ---------------------------------------------------------------------
def test_per_1k_tokens_shrinks_with_bits():
    bf = C.per_1k_tokens("llama-2-7b", "h100-80gb", weights="bf16", region="usa")
    fp4 = C.per_1k_tokens("llama-2-7b", "h100-80gb", weights="nvfp4", region="usa")
    assert fp4["bits_per_weight"] == 4.5
    assert fp4["total_kg"] < 0.6 * bf["total_kg"]
    assert bf["operational_kg"] == pytest.approx(bf["energy_kwh"] * 380 / 1000)
    assert bf["energy_kwh"] == pytest.approx(bf["watts"] * bf["seconds"] / 3.6e6)


# ---- measurement ----------------------------------------------------------------------------------
def _fake_rapl(tmp_path, uj, max_uj=1000000):
    d = tmp_path / "intel-rapl:0"
    d.mkdir(exist_ok=True)
    (d / "energy_uj").write_text(str(uj))
    (d / "max_energy_range_uj").write_text(str(max_uj))
    sub = tmp_path / "intel-rapl:0:0"      # a sub-domain (core): must not be counted again
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5")
    return d


def test_rapl_domains_and_wraparound(tmp_path):
    d = _fake_rapl(tmp_path, 900000)
    assert M.rapl_domains(tmp_path) == [d]
    assert M.rapl_delta_j({d: (900000, 1000000)}, {d: (100000, 1000000)}) == pytest.approx(0.2)
    assert M.rapl_delta_j({d: (100, 0)}, {d: (2100, 0)}) == pytest.approx(0.002)
    with pytest.raises(ValueError, match="went backwards"):
        M.rapl_delta_j({d: (100, 0)}, {d: (50, 0)})


def test_measure_reads_rapl_when_readable(tmp_path):
    _fake_rapl(tmp_path, 1000)
    bump = f"open({str(tmp_path / 'intel-rapl:0' / 'energy_uj')!r}, 'w').write('3001000')"
    m = M.measure([sys.executable, "-c", bump], root=tmp_path)
    assert m.measured and m.method == "rapl" and m.energy_j == pytest.approx(3.0)


def test_measure_falls_back_to_a_model_and_says_so(tmp_path):
    m = M.measure([sys.executable, "-c", "sum(range(10**6))"], root=tmp_path / "absent")
    if m.method == "model":       # where NVML exists the GPU counter is read instead
        assert not m.measured and "FELL BACK TO A MODEL" in m.notes[-1]
        assert m.energy_j == pytest.approx(m.cpu_seconds * 12 + m.peak_rss_gb * 0.3725 * m.seconds)
        assert m.energy_j > 0
    assert m.returncode == 0


def test_measure_refusals():
    with pytest.raises(ValueError, match="give a command"):
        M.measure([])
    with pytest.raises(ValueError, match="command not found"):
        M.measure(["no-such-command-elastiq"])


# ---- refusals --------------------------------------------------------------------------------
def test_carbon_refusals():
    with pytest.raises(ValueError, match="unknown region 'mars'.*usa"):
        C.grid_intensity("mars")
    with pytest.raises(ValueError, match="non-negative"):
        C.grid_intensity(-5)
    with pytest.raises(ValueError, match="unknown device 'toaster'"):
        C.device("toaster")
    with pytest.raises(ValueError, match="unknown process node '2nm'"):
        C.logic_cpa("2nm")
    with pytest.raises(ValueError, match="unknown dram type"):
        C.memory_cps("dram", "ddr9")
    with pytest.raises(ValueError, match="area_cm2 must be positive"):
        C.Component("x", "logic", area_cm2=-1, node="7nm")
    with pytest.raises(ValueError, match="capacity_gb is missing"):
        C.Component("x", "dram", capacity_gb=None, type="lpddr4")
    with pytest.raises(ValueError, match="PUE is at least 1"):
        C.operational_kg(1, "usa", pue=0.5)
    with pytest.raises(ValueError, match="energy \\(kWh\\) must be non-negative"):
        C.operational_kg(-1, "usa")
    with pytest.raises(ValueError, match="hardware efficiency must be at most 1"):
        C.training_carbon(1e9, 1e9, 1, 1e12, 1.5, 300, 0.4)
    with pytest.raises(ValueError, match="tokens is missing"):
        C.training_carbon(1e9, None, 1, 1e12, 0.5, 300, 0.4)
    with pytest.raises(ValueError, match="unknown LLMCarbon hardware"):
        C.llmcarbon_embodied_t({"a100": 8}, 1)
    with pytest.raises(ValueError, match="fab yield must be at most 1"):
        C.logic_cpa("7nm", fab_yield=2)
