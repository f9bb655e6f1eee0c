"""Bit flips in each format, the injector, and campaigns: known values, reproducibility, refusals."""
import pytest
import torch
from torch import nn

from elastiq import formats as F
from elastiq.labs.analysis.bitflip import flip_all, flip_packed, flip_scalar, site_sizes
from elastiq.labs.analysis.inject import Fault, Injector, profile_ranges, store_weights
from elastiq.labs.analysis.resilience import CampaignSpec, classifier_campaign, lm_campaign, summarize
from elastiq.labs.analysis.training import wasserstein
from elastiq.quant import quantize_model

from conftest import make_tiny_llama


@pytest.mark.parametrize("dtype,bit,value", [
    (torch.float32, 31, -1.0), (torch.float32, 30, float("inf")), (torch.float32, 23, 0.5), (torch.float32, 22, 1.5),
    (torch.float16, 15, -1.0), (torch.float16, 14, float("inf")), (torch.float16, 10, 0.5), (torch.float16, 9, 1.5),
    (torch.bfloat16, 15, -1.0), (torch.bfloat16, 7, 0.5), (torch.bfloat16, 6, 1.5),
    (torch.float64, 63, -1.0), (torch.float64, 52, 0.5),
])
def test_float_flip_of_one(dtype, bit, value):
    assert flip_scalar(1.0, bit, dtype) == value
    assert float(flip_all(torch.tensor([1.0], dtype=dtype), bit)[0]) == value


def test_mxfp4_element_and_shared_scale():
    x = torch.zeros(1, 64)
    x[0, 0], x[0, 1], x[0, 32] = 6.0, 1.0, 6.0  # two blocks, scale 2^0 (E8M0 code 127) in both
    p = F.quantize(x, "mxfp4")
    assert site_sizes(p) == {"codes": (64, 4), "scales": (2, 8)}
    y = F.dequantize(flip_packed(p, "codes", 1, 2))  # 1.0 = E2M1 0010 -> 0110 = 4.0
    assert y[0, 1] == 4.0 and torch.equal(y[0, 2:], x[0, 2:])
    y = F.dequantize(flip_packed(p, "codes", 1, 3))  # sign bit
    assert y[0, 1] == -1.0
    y = F.dequantize(flip_packed(p, "scales", 0, 0))  # E8M0 127 -> 126: the whole first block halves
    assert torch.equal(y[0, :32], x[0, :32] / 2) and torch.equal(y[0, 32:], x[0, 32:])
    y = F.dequantize(flip_packed(p, "scales", 1, 7))  # 127 -> 255 = NaN: the block is lost
    assert torch.isnan(y[0, 32:]).all() and torch.equal(y[0, :32], x[0, :32])


def test_int4_element_and_fp16_scale():
    x = torch.zeros(1, 128)
    x[0, 0], x[0, 1] = 7.0, 3.0  # scale 7/7 = 1.0 (fp16 0x3C00)
    p = F.quantize(x, "int4")
    assert site_sizes(p) == {"codes": (128, 4), "scales": (1, 16)}
    assert F.dequantize(flip_packed(p, "codes", 1, 3))[0, 1] == -5.0  # 0011 -> 1011 (two's complement)
    assert F.dequantize(flip_packed(p, "codes", 1, 2))[0, 1] == 7.0  # 0011 -> 0111
    y = F.dequantize(flip_packed(p, "scales", 0, 10))  # fp16 exponent bit: scale 1.0 -> 0.5
    assert torch.equal(y, x / 2)


def test_nvfp4_tensor_scale_and_nxfp4_selector():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    p = F.quantize(x, "nvfp4")
    y0, y = F.dequantize(p), F.dequantize(flip_packed(p, "tensor_scale", 0, 23))  # float32 exponent LSB
    ratio = (y[y0 != 0] / y0[y0 != 0]).unique()
    assert len(ratio) == 1 and float(ratio[0]) in (0.5, 2.0)
    p = F.quantize(x, "nxfp4")
    assert site_sizes(p)["selectors"] == (8, 2)
    y0 = F.dequantize(p)
    sel = int(F.unpack_bits(p.selectors, 2, 8)[3])
    y = F.dequantize(flip_packed(p, "selectors", 3, 0))  # block 3 decoded on the neighbouring grid
    codes = F.unpack_bits(p.codes, 4, 256).view(8, 32)[3].long()
    scale = (y0.view(8, 32)[3] / p.fmt.grids[sel].values()[codes]).nan_to_num(nan=0.0, posinf=0.0)
    s = scale[scale != 0][0]
    expect = p.fmt.grids[sel ^ 1].values()[codes] * s
    assert torch.allclose(y.view(8, 32)[3], expect) and torch.equal(y.view(8, 32)[:3], y0.view(8, 32)[:3])


@pytest.mark.parametrize("width", [1, 3, 4, 6, 8, 12, 16])
def test_byte_flip_equals_code_flip(width):
    codes = torch.randint(0, 1 << width, (37,), generator=torch.Generator().manual_seed(width))
    g = F.grid(f"int{width}") if width >= 2 else F.grid("ue1m0")
    fmt = F.Format("t", (g,), F.E8M0, block=None)
    p = F.Packed(fmt, (37,), torch.float32, F.pack_bits(codes, width), F.pack_bits(torch.tensor([127]), 8),
                 torch.zeros(0, dtype=torch.uint8), None)
    for idx, bit in [(0, 0), (5, width - 1), (36, width // 2)]:
        got = F.unpack_bits(flip_packed(p, "codes", idx, bit).codes, width, 37).long()
        want = codes.clone()
        want[idx] ^= 1 << bit
        assert torch.equal(got, want)


def test_flip_refusals():
    p = F.quantize(torch.randn(2, 32), "mxfp4")
    with pytest.raises(ValueError, match="bit 4 is outside"):
        flip_packed(p, "codes", 0, 4)
    with pytest.raises(ValueError, match="bit 8 is outside"):
        flip_packed(p, "scales", 0, 8)
    with pytest.raises(ValueError, match="stores no 'selectors'"):
        flip_packed(p, "selectors", 0, 0)
    with pytest.raises(ValueError, match="index 64 is outside"):
        flip_packed(p, "codes", 64, 0)
    with pytest.raises(ValueError, match="bit 16 is outside"):
        flip_scalar(1.0, 16, torch.float16)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def test_injection_restores_and_golden_is_stable():
    m = _mlp()
    x = torch.randn(64, 16)
    inj = Injector(m)
    before = m(x)
    f = [Fault("2", "weight", "value", 5, 30), Fault("4", "activation", "value", 3, 30)]
    with inj.inject(f):
        faulty = m(x)
    assert not torch.equal(faulty, before)
    assert torch.equal(m(x), before)  # every weight back, bit for bit
    with inj.inject((), {"2": "mxfp8_e4m3"}):
        g1 = m(x)
    with inj.inject((), {"2": "mxfp8_e4m3"}):
        g2 = m(x)
    assert torch.equal(g1, g2) and not torch.equal(g1, before)
    with inj.inject((), {"2": "fp32"}):
        assert torch.equal(m(x), before)


def test_packed_in_place_equals_decoded_and_fp16_storage():
    x = torch.randn(8, 16)
    a, b = _mlp(), _mlp()
    quantize_model(a, "mxfp4", progress=False)
    quantize_model(b, "mxfp4", progress=False)
    ia, ib = Injector(a), Injector(b, decoded=True)
    assert isinstance(b[2], nn.Linear) and torch.allclose(a(x), b(x), atol=1e-6)
    for f in (Fault("2", "weight", "scales", 3, 1), Fault("4", "weight", "codes", 17, 2)):
        with ia.inject([f]), ib.inject([f]):
            assert torch.allclose(a(x), b(x), atol=1e-6)
    c = _mlp()
    store_weights(c, "fp16")
    ic = Injector(c, weight_dtype="fp16")
    assert ic.weight_sites("0") == {"value": (512, 16)}
    w = c[0].weight.detach().clone()
    with ic.inject([Fault("0", "weight", "value", 0, 15)]):
        assert c[0].weight[0, 0] == -w[0, 0]


def test_campaigns_reproducible_by_seed():
    m = _mlp()
    x = torch.randn(50, 16)
    spec = CampaignSpec(kind="both", trials=6, seed=3)
    r1 = classifier_campaign(m, x, spec, progress=False)
    r2 = classifier_campaign(m, x, spec, progress=False)
    assert r1["records"] == r2["records"] and r1["overall"]["injections"] == 3 * 6 * 50
    r3 = classifier_campaign(m, x, CampaignSpec(kind="both", trials=6, seed=4), progress=False)
    assert r3["records"] != r1["records"]
    assert set(r1["per_layer"]) == {"0", "2", "4"} and 0 <= r1["overall"]["rate"] <= 1
    assert 0 < r1["golden_top2_margin"] < 1
    # a flip that cannot change the label (sign of an exact zero in a ReLU'd net is still zero) vs one that must
    spec_hi = CampaignSpec(layers=["4"], kind="activation", bits=[30], trials=10)
    hi = classifier_campaign(m, x, spec_hi, progress=False)
    ranges = profile_ranges(m, ["4"], [x])
    clamped = classifier_campaign(m, x, CampaignSpec(layers=["4"], kind="activation", bits=[30], trials=10,
                                                     range_detector=True), ranges=ranges, progress=False)
    assert hi["overall"]["rate"] > 0.3 and clamped["overall"]["rate"] < hi["overall"]["rate"]


def test_campaign_refusals():
    m = _mlp()
    x = torch.randn(4, 16)
    with pytest.raises(ValueError, match="no injectable layer named 'fc9'"):
        classifier_campaign(m, x, CampaignSpec(layers=["fc9"]), progress=False)
    with pytest.raises(ValueError, match="bit 40 is outside"):
        classifier_campaign(m, x, CampaignSpec(bits=[40]), progress=False)
    with pytest.raises(ValueError, match="no layer named"):
        with Injector(m).inject([Fault("nope", "activation", "value", 0, 1)]):
            pass
    with pytest.raises(ValueError, match="kind must be"):
        classifier_campaign(m, x, CampaignSpec(kind="cosmic"), progress=False)
    with pytest.raises(ValueError, match="range detector needs"):
        classifier_campaign(m, x, CampaignSpec(kind="activation", range_detector=True), progress=False)


def test_lm_campaign_on_packed_tiny_llama():
    model = make_tiny_llama()
    quantize_model(model, "nxfp4", progress=False)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    spec = CampaignSpec(layers=["*.mlp.*"], site="scales", trials=4, per_layer=False, seed=1)
    r = lm_campaign(model, ids, spec, progress=False)
    assert r["overall"]["runs"] == 4 and r["overall"]["injections"] == 4 * 48
    assert all(k.startswith("weight:scales:") for k in r["per_bit"])
    assert set(r["per_group"]) <= {"model.layers.*.mlp.gate_proj", "model.layers.*.mlp.up_proj", "model.layers.*.mlp.down_proj"}
    assert r["records"] == lm_campaign(model, ids, spec, progress=False)["records"]


def test_summarize_and_wasserstein_by_hand():
    recs = [{"layer": "a.1.x", "faults": [{"kind": "weight", "site": "codes", "bit": 2}], "mismatches": 3, "injections": 10},
            {"layer": "a.2.x", "faults": [{"kind": "weight", "site": "codes", "bit": 2}], "mismatches": 1, "injections": 10}]
    s = summarize(recs)
    assert s["overall"]["rate"] == 0.2 and s["per_group"]["a.*.x"]["rate"] == 0.2 and s["per_layer"]["a.1.x"]["rate"] == 0.3
    a = {"w": torch.tensor([0.0, 1.0, 2.0])}
    b = {"w": torch.tensor([1.0, 2.0, 3.0])}
    assert wasserstein(a, b) == {"wasserstein": 1.0, "max_abs": 1.0}
    assert wasserstein(a, {"w": torch.tensor([2.0, 0.0, 1.0])})["wasserstein"] == 0.0  # a distribution distance
