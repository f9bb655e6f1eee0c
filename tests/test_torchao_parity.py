"""Bit-exact agreement with torchao's MX and NVFP4 casts (codes, scales, decoded values)."""
import math
import warnings

import pytest
import torch

from elastiq import formats as F

warnings.filterwarnings("ignore")
mx_tensor = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
nvfp4_tensor = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
from torchao.prototype.mx_formats.config import ScaleCalculationMode  # noqa: E402

ELEM = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e3m2": "fp6_e3m2",
    "mxfp6_e2m3": "fp6_e2m3",
    "mxfp4": torch.float4_e2m1fn_x2,
}


def heavy_tailed(n_rows=1024, n_cols=1024, seed=0):
    """A million values: Student-t(2) elements (outliers) times a log-normal row scale."""
    g = torch.Generator().manual_seed(seed)
    t = torch.distributions.StudentT(2.0)
    torch.manual_seed(seed)
    x = t.sample((n_rows, n_cols)) * torch.exp(torch.randn(n_rows, 1, generator=g) * 3)
    return x


def corner_cases(elem_max: float) -> torch.Tensor:
    """Rows of 32 built to hit torchao's edge cases: zero blocks, exact powers of two,
    the FLOOR clip range, element ties, the largest finite value, -0, and a lone outlier."""
    rows = [torch.zeros(32), -torch.zeros(32)]
    p2 = 2.0 ** torch.arange(-20, 12, dtype=torch.float32)
    rows += [p2, -p2, p2 * 1.5, p2 * (1 + 2.0**-20)]
    clip = torch.linspace(elem_max, 2 ** (math.floor(math.log2(elem_max)) + 1), 32)
    rows += [clip, -clip, clip * 2.0**-40, clip * 2.0**40]
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.125, 0.375, 0.0625] * 3 + [6.0, -6.0])
    rows += [ties, -ties, ties * 1024]
    lone = torch.full((32,), 1e-3)
    lone[7] = 3e4
    rows += [lone, torch.full((32,), 3.0e38), torch.full((32,), 1.0e-30)]
    return torch.stack(rows)


def _torchao_mx(x, name, mode):
    e = ELEM[name]
    scale, data = mx_tensor.to_mx(x, e, 32, ScaleCalculationMode(mode))
    ref = mx_tensor.to_dtype(data, scale, e, 32, torch.float32)
    # torchao lets an element times its scale overflow to Inf (3e38 under rceil, and Inf
    # input); elastiq saturates at float32's largest finite value: the same codes and
    # scales, the overflow clamped (issue 16, docs/formats.md)
    ref = ref.clamp(-torch.finfo(torch.float32).max, torch.finfo(torch.float32).max)
    if name.startswith("mxfp6"):
        codes = F.pack_bits(data.reshape(-1), 6)
    else:
        codes = data.view(torch.uint8).reshape(-1)
    return scale.view(torch.uint8).reshape(-1), codes, ref


def _assert_same(p, ours_fake, scales, codes, ref):
    assert torch.equal(p.scales, scales), f"{int((p.scales != scales).sum())} scale codes differ"
    assert torch.equal(p.codes, codes), f"{int((p.codes != codes).sum())} code bytes differ"
    deq = F.dequantize(p)
    for got in (deq, ours_fake):
        same = (got == ref) | (torch.isnan(got) & torch.isnan(ref))
        assert same.all(), f"{int((~same).sum())} values differ, e.g. {got[~same][:4].tolist()} vs {ref[~same][:4].tolist()}"


@pytest.mark.parametrize("mode", ["floor", "rceil", "ceil", "even"])
@pytest.mark.parametrize("name", list(ELEM))
def test_mx_bit_exact_on_a_million_heavy_tailed_values(name, mode):
    x = heavy_tailed()
    fmt = F.get(f"{name},round={mode}")
    scales, codes, ref = _torchao_mx(x, name, mode)
    _assert_same(F.quantize(x, fmt), F.fake_quantize(x, fmt), scales, codes, ref)


@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("name", list(ELEM))
def test_mx_bit_exact_on_corner_cases(name, mode):
    fmt = F.get(f"{name},round={mode}")
    x = corner_cases(fmt.grid.max_value)
    scales, codes, ref = _torchao_mx(x, name, mode)
    _assert_same(F.quantize(x, fmt), F.fake_quantize(x, fmt), scales, codes, ref)


@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("name", list(ELEM))
def test_mx_nan_and_inf_blocks_match(name, mode):
    """A NaN makes its whole block NaN (scale 0xFF); Inf saturates. Codes inside NaN
    blocks are unspecified, so scales and decoded values are compared."""
    x = heavy_tailed(8, 64, seed=3)
    x[1, 5] = math.nan
    x[2, 40] = math.inf
    x[3, 0] = -math.inf
    fmt = F.get(f"{name},round={mode}")
    scales, _, ref = _torchao_mx(x, name, mode)
    p = F.quantize(x, fmt)
    assert torch.equal(p.scales, scales)
    deq = F.dequantize(p)
    same = (deq == ref) | (torch.isnan(deq) & torch.isnan(ref))
    assert same.all()
    assert torch.isnan(deq[1, :32]).all() and not torch.isnan(deq[1, 32:]).any()


@pytest.mark.parametrize("tensor_scale", [True, False])
def test_nvfp4_bit_exact(tensor_scale):
    x = torch.cat([heavy_tailed(), corner_cases(6.0).repeat(1, 32)[:, :1024]])
    pts = nvfp4_tensor.per_tensor_amax_to_scale(x.abs().amax()) if tensor_scale else None
    scales, data = nvfp4_tensor.nvfp4_quantize(x, 16, pts)
    ref = nvfp4_tensor.NVFP4Tensor(data, scales, 16, torch.float32, per_tensor_scale=pts).dequantize(torch.float32)
    fmt = F.get("nvfp4" if tensor_scale else "nvfp4,tscale=0")
    p = F.quantize(x, fmt)
    if tensor_scale:
        assert p.tensor_scale.item() == pts.item()
    _assert_same(p, F.fake_quantize(x, fmt), scales.view(torch.uint8).reshape(-1), data.reshape(-1), ref)


def test_bf16_input_matches_torchao():
    x = heavy_tailed(256, 256).to(torch.bfloat16)
    scales, codes, ref = _torchao_mx(x, "mxfp4", "floor")
    p = F.quantize(x, "mxfp4")
    assert torch.equal(p.scales, scales) and torch.equal(p.codes, codes)
    assert torch.equal(F.dequantize(p, torch.float32), ref)


def test_tiny_blocks_follow_the_spec_where_torchao_does_not():
    """For a block whose E8M0 scale is 2**-127, torchao divides by 2**-126 (its clamp to
    the smallest normal float32) but decodes with 2**-127, halving the block. elastiq
    keeps the spec's scale on both sides: the decoded block stays within one FP4 step."""
    x = torch.full((1, 32), 3.0 * 2.0**-127)
    x[0, 0] = 6.0 * 2.0**-127
    ours = F.fake_quantize(x, "mxfp4")
    assert torch.equal(ours, x)  # exactly representable: 6 and 3 times the scale
    _, _, ref = _torchao_mx(x, "mxfp4", "floor")
    assert torch.equal(ref, x / 2)


def test_rceil_rounds_up_exactly_where_torchao_cpu_rounds_the_log():
    """RCEIL is 'round amax/max up to a power of two' (cuBLAS, and torchao's Blackwell
    path through cvt.rp.satfinite.ue8m0). torchao's CPU fallback computes
    ceil(log2(d)) in float32, and log2 rounds d = 2**-10 * (1 + 2**-22) to exactly -10:
    it picks 2**-10 < d and clips the block max. elastiq takes the exact 2**-9."""
    amax = 2.0**-8 * (1.5 + 3 * 2.0**-23)  # amax / 6 == 2**-10 * (1 + 2**-22) in float32
    x = torch.full((1, 32), 1e-4)
    x[0, 0] = amax
    assert float(torch.tensor(amax) / 6) == 2.0**-10 * (1 + 2.0**-22)
    p = F.quantize(x, "mxfp4_rceil")
    assert int(p.scales[0]) - 127 == -9
    assert float(torch.tensor(amax) / 2.0**-9) <= 6.0  # no clipping at the exact scale
    scales, _, _ = _torchao_mx(x, "mxfp4", "rceil")
    assert int(scales[0]) - 127 == -10  # the documented difference
