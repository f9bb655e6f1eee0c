"""Attention numerics: tiled vs baseline, precision knobs, golden comparisons, refusals."""
import math

import pytest
import torch

from elastiq.labs.analysis.attention import AttentionPrecision, baseline_attention, flash_attention, matmul, sdpa_attention
from elastiq.labs.analysis.numerics import attribution, deviation, inputs, metrics, sweep
from elastiq.labs.analysis.precision import precision

from tolerance import within_rounding

EPS = {name: torch.finfo(dt).eps for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def _naive64(q, k, v, causal=False):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        sq, sk = s.shape[-2:]
        s = s.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(sk - sq + 1), -math.inf)
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("sq,sk,bq,bk,causal", [(64, 64, 16, 16, False), (50, 70, 16, 24, False),
                                                (48, 48, 48, 5, True), (33, 40, 7, 40, True)])
def test_tiled_float64_equals_baseline(sq, sk, bq, bk, causal):
    g = torch.Generator().manual_seed(sq + sk)
    q = torch.randn(2, sq, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, sk, 16, generator=g, dtype=torch.float64) for _ in range(2))
    base = baseline_attention(q, k, v, "fp64", causal=causal)
    tiled = flash_attention(q, k, v, "fp64", bq, bk, causal=causal)
    assert base.dtype == tiled.dtype == torch.float64
    assert (base - tiled).abs().max() < 1e-12
    assert (base - _naive64(q, k, v, causal)).abs().max() < 1e-12  # and both are attention


def test_bf16_statistics_saturate_at_a_known_value():
    # 300 keys with equal scores, one key per tile: l counts 1 + 1 + ... In bf16 (8 significant
    # bits) 256 + 1 = 257 is a tie between 256 and 258 and rounds to even: l sticks at 256, while
    # the float64 output accumulator reaches 300. The output is 300/256 instead of 1.
    q = torch.zeros(1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 300, 8, dtype=torch.float64)
    v = torch.ones(1, 300, 8, dtype=torch.float64)
    exact = flash_attention(q, k, v, AttentionPrecision.of("fp64", stats="fp32"), 1, 1)
    low = flash_attention(q, k, v, AttentionPrecision.of("fp64", stats="bf16"), 1, 1)
    assert torch.equal(exact, torch.ones_like(exact))
    assert torch.equal(low, torch.full_like(low, 300 / 256))


def test_deviation_grows_as_statistics_precision_drops():
    q, k, v = inputs(128, 32, seed=3)
    golden = baseline_attention(q, k, v, "fp64")
    devs = [metrics(flash_attention(q, k, v, AttentionPrecision.of("fp64", stats=s), 16, 16), golden)["max_abs"]
            for s in ("fp64", "fp32", "bf16", "fp8_e4m3")]
    scale = float(golden.abs().max())
    assert devs[0] < 1e-13 and devs[0] < devs[1] < devs[2] < devs[3]
    # each precision's rounding shows, and stays within a few of its units of the output's magnitude
    assert within_rounding(devs[1], EPS["fp32"], scale, 1e-2, 8) and within_rounding(devs[2], EPS["bf16"], scale, 1e-2, 8)


def test_each_stage_is_rounded_where_it_should_be():
    q, k, v = inputs(64, 16, seed=1)
    golden = baseline_attention(q, k, v, "fp64")
    for stage in ("accumulate", "stats", "output"):
        d = metrics(flash_attention(q, k, v, AttentionPrecision.of("fp64", **{stage: "bf16"}), 16, 16), golden)
        assert d["max_abs"] > 1e-5, stage
    # the output accumulator does not exist in baseline attention: rounding it changes nothing
    assert torch.equal(baseline_attention(q, k, v, AttentionPrecision.of("fp64", output="bf16")), golden)


def test_matmul_accumulation_chunks():
    a = torch.full((1, 300), 1.0, dtype=torch.float64)
    b = torch.ones(300, 1, dtype=torch.float64)
    assert matmul(a, b, precision("bf16")).item() == 300  # summed exactly, 300 is a bf16 value
    assert matmul(a, b, precision("bf16"), chunk=1).item() == 256  # running sum in bf16 sticks at 256
    assert matmul(a, b, precision("bf16"), chunk=16).item() == 300


def test_formats_and_dtypes_as_precisions():
    assert precision("bf16").dtype == torch.bfloat16 and precision("mxfp8_e4m3").fmt.name == "mxfp8_e4m3"
    q, k, v = inputs(64, 32, seed=0)
    golden = baseline_attention(q, k, v, "fp64")
    mx = metrics(flash_attention(q, k, v, AttentionPrecision.of("fp32", stats="mxfp8_e4m3", output="mxfp8_e4m3"), 32, 32), golden)
    fp32 = metrics(flash_attention(q, k, v, "fp32", 32, 32), golden)
    assert math.isfinite(mx["max_abs"]) and mx["max_abs"] > 100 * fp32["max_abs"]


def test_sdpa_is_close_at_fp32_and_deviates_at_bf16():
    q, k, v = inputs(128, 64, seed=0)
    golden = baseline_attention(q, k, v, "fp64")
    scale = float(golden.abs().max())
    assert within_rounding(metrics(sdpa_attention(q, k, v, torch.float32), golden)["max_abs"], EPS["fp32"], scale, 0, 64)
    assert within_rounding(metrics(sdpa_attention(q, k, v, torch.bfloat16), golden)["max_abs"], EPS["bf16"], scale, 1e-2, 8)


def test_deviation_sweep_and_attribution_rows():
    d = deviation("flash", "bf16", seq_len=64, head_dim=16, block=16, seeds=2)
    assert 0 < d["mean_abs"] <= d["max_abs"] <= d["worst_max_abs"] and d["rel"] > 0
    assert d == deviation("flash", "bf16", seq_len=64, head_dim=16, block=16, seeds=2)  # seeded
    rows = sweep(["baseline", "flash", "sdpa"], ["bf16", "mxfp8_e4m3"], [32, 64], blocks=[16, 64], seeds=1, progress=False)
    # flash with a 64-tile is skipped at 32 tokens; sdpa takes no elastiq format
    assert len(rows) == 2 * 2 + 2 * 3 + 2 and {r["impl"] for r in rows} == {"baseline", "flash", "sdpa"}
    att = attribution(seq_len=64, head_dim=16, block=16, seeds=1)
    assert [r["config"] for r in att][:2] == ["all bf16", "all bf16"] and len(att) == 10


def test_refusals():
    q, k, v = inputs(32, 16, seed=0)
    with pytest.raises(ValueError, match="block_k=64 is larger than the key sequence"):
        flash_attention(q, k, v, "fp32", 16, 64)
    with pytest.raises(ValueError, match="block_q=40 is larger than the query sequence"):
        flash_attention(q, k, v, "fp32", 40, 16)
    with pytest.raises(ValueError, match="unknown precision 'fp7'"):
        flash_attention(q, k, v, "fp7")
    with pytest.raises(ValueError, match="unknown attention implementation"):
        deviation("flashy", "bf16", 32, 16, 16, 1)
    with pytest.raises(ValueError, match="takes a torch dtype"):
        deviation("sdpa", "mxfp4", 32, 16, 16, 1)
    with pytest.raises(ValueError, match="acc_chunk"):
        baseline_attention(q, k, v, "bf16", acc_chunk=0)
    with pytest.raises(ValueError, match="shapes do not fit"):
        baseline_attention(q, k[..., :8], v)
