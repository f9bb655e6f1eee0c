"""Element grids: every code's value, exhaustive round trips, ties, saturation, NaN/Inf."""
import math

import pytest
import torch

from elastiq.formats import decode, encode, grid
from elastiq.formats.catalog import BF16, E8M0, FP16, NF4

# OCP MX v1.0 tables of positive magnitudes, code 0 .. 2**(bits-1)-1.
OCP_E2M1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
OCP_E2M3 = [m / 8 for m in range(8)] + [2.0**e * (1 + m / 8) for e in range(0, 3) for m in range(8)]
OCP_E3M2 = [m / 16 for m in range(4)] + [2.0**e * (1 + m / 4) for e in range(-2, 5) for m in range(4)]

# Published bitsandbytes NF4 table (QLoRA), to 1e-7.
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
           0.7229568362236023, 1.0]

GRIDS = ["e2m1", "e2m3", "e3m2", "e4m3", "e5m2", "e1m2", "e3m0", "e2m2", "e3m1", "e4m2", "e3m4",
         "int2", "int3", "int4", "int8", "nf4", "e2m1~5", "e2m1~-8", "int4~-8", "e3m2~-30"]


def _signed(table):
    return torch.tensor(table + [-v for v in table], dtype=torch.float32)


@pytest.mark.parametrize("name,table", [("e2m1", OCP_E2M1), ("e2m3", OCP_E2M3), ("e3m2", OCP_E3M2)])
def test_ocp_small_float_tables(name, table):
    g = grid(name)
    assert g.values().tolist() == _signed(table).tolist()
    assert g.max_value == max(table)
    assert g.emax == {"e2m1": 2, "e2m3": 2, "e3m2": 4}[name]


@pytest.mark.parametrize("name,dtype,maxv", [("e4m3", torch.float8_e4m3fn, 448.0), ("e5m2", torch.float8_e5m2, 57344.0)])
def test_fp8_tables_match_torch_dtypes(name, dtype, maxv):
    g = grid(name)
    ref = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    ours = g.values()
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    ok = ~torch.isnan(ref)
    assert torch.equal(ours[ok], ref[ok])
    assert g.max_value == maxv
    if name == "e4m3":  # no Inf, NaN only at S.1111.111, min subnormal 2^-9
        assert torch.isnan(ours).sum() == 2 and not torch.isinf(ours).any()
        assert ours[1] == 2.0**-9
    else:
        assert torch.isinf(ours).sum() == 2 and torch.isnan(ours).sum() == 6 and ours[1] == 2.0**-16


def test_e8m0_scale_grid():
    v = E8M0.values()
    assert all(v[c] == 2.0 ** (c - 127) for c in range(255))
    assert math.isnan(v[255])


def test_int_grid_is_twos_complement():
    v = grid("int4").values().tolist()
    assert v == [0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1]
    assert grid("int4").max_value == 7  # symmetric: -8 is the redundant code


def test_nf4_matches_bitsandbytes_table():
    assert NF4.values().tolist() == pytest.approx(BNB_NF4, abs=1e-7)


def _redundant(g, code):
    v = g.values()[code]
    if math.isnan(v):
        return code != int(torch.nonzero(torch.isnan(g.values()))[0])  # first NaN code is canonical
    if g.kind == "float" and g.recycle is None and code == g.redundant_code:
        return False  # -0 encodes back to itself
    return g.redundant_code == code and g.recycle is None


@pytest.mark.parametrize("name", GRIDS)
def test_encode_decode_roundtrip_every_code(name):
    g = grid(name)
    codes = torch.arange(len(g.levels) if g.kind == "codebook" else 1 << g.bits)
    values = decode(codes, g)
    back = encode(values, g)
    for c in codes.tolist():
        if _redundant(g, c) or math.isinf(values[c]):
            continue
        if math.isnan(values[c]):
            assert math.isnan(decode(back[c : c + 1], g)[0])
            continue
        assert back[c] == c, f"{name}: code {c} (value {values[c].item()}) encoded to {back[c].item()}"


@pytest.mark.parametrize("name", GRIDS)
def test_ties_go_to_even_code_and_between_is_nearest(name):
    g = grid(name)
    v = g.values()
    order = [c for c in torch.argsort(v).tolist() if math.isfinite(v[c]) and not _redundant(g, c)]
    order = [c for i, c in enumerate(order) if i == 0 or v[c] != v[order[i - 1]]]  # one code per value (-0)
    for lo, hi in zip(order, order[1:]):
        mid = (v[lo].double() + v[hi].double()) / 2
        got = int(encode(torch.tensor([mid], dtype=torch.float32), g)[0])
        if g.kind == "codebook" or g.recycle is not None:
            expect = {lo, hi}
        else:
            # among the two neighbours, the one with an even mantissa (even code) wins
            expect = {lo if (lo & 1) == 0 else hi}
        if g.recycle is not None and g.redundant_code in (lo, hi):
            expect = {lo if hi == g.redundant_code else hi}  # a tie with the extra level stays on the base grid
        assert float(v[got]) in {float(v[c]) for c in expect}, f"{name}: tie {mid} between codes {lo},{hi} went to {got}"
        for frac in (0.25, 0.75):  # off-tie points go to the nearer neighbour
            x = float(v[lo] + frac * (v[hi] - v[lo]))
            want = lo if frac < 0.5 else hi
            assert v[int(encode(torch.tensor([x]), g)[0])] == v[want]


@pytest.mark.parametrize("name", ["e2m1", "e3m2", "e4m3", "e5m2", "int4", "nf4"])
def test_saturation_inf_and_nan(name):
    g = grid(name)
    big = torch.tensor([g.max_value * 1.5, -g.max_value * 1.5, math.inf, -math.inf, 3e38])
    vals = decode(encode(big, g), g)
    hi_end = g.max_value
    lo_end = -hi_end if g.kind == "int" else float(g.values()[torch.isfinite(g.values())].min())  # int: symmetric
    assert vals.tolist() == [hi_end, lo_end, hi_end, lo_end, hi_end]
    if g.kind == "float" and g.special != "none":
        assert torch.isnan(decode(encode(torch.tensor([math.nan]), g), g)).all()


def test_negative_zero_and_sign_of_underflow():
    g = grid("e2m1")
    assert encode(torch.tensor([-0.0, -0.2, 0.2]), g).tolist() == [8, 8, 0]  # hardware keeps -0
    r = grid("e2m1~5")
    assert encode(torch.tensor([-0.0, -0.2]), r).tolist() == [0, 0]  # -0 is recycled: never produced


@pytest.mark.parametrize("name,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                        ("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_encoder_matches_torch_casts_on_random_values(name, dtype):
    """Our integer/adder rounding vs PyTorch's own casts, including subnormals and ties."""
    g = {"fp16": FP16, "bf16": BF16}.get(name) or grid(name)
    torch.manual_seed(1)
    mags = torch.exp2(torch.empty(400_000).uniform_(-30, math.log2(g.max_value)))
    x = mags * torch.where(torch.rand_like(mags) < 0.5, -1.0, 1.0)
    ties = g.values()[torch.isfinite(g.values())].double()
    ties = ties.sort().values
    x = torch.cat([x, ((ties[1:] + ties[:-1]) / 2).float()])
    x = x[x.abs() <= g.max_value]
    ours = decode(encode(x, g), g)
    ref = x.to(dtype).float()
    assert torch.equal(ours, ref)


def test_exhaustive_fp16_codes_roundtrip():
    codes = torch.arange(1 << 16)
    vals = decode(codes, FP16)
    finite = torch.isfinite(vals)
    assert torch.equal(encode(vals[finite], FP16), codes[finite].int())
    ok = ~torch.isnan(vals)
    assert torch.equal(vals[ok], codes.to(torch.int16).view(torch.float16).float()[ok])


def test_recycled_level_is_reachable():
    g = grid("e2m1~5")
    assert g.values()[8] == 5.0 and g.max_value == 6.0
    assert decode(encode(torch.tensor([4.6, 5.0, 5.4, 4.5, 5.5, -5.0]), g), g).tolist() == [5, 5, 5, 4, 6, -4]
    beyond = grid("e2m1~-8")
    assert decode(encode(torch.tensor([-7.5, -6.9, -100.0, 100.0]), beyond), beyond).tolist() == [-8, -6, -8, 6]
    with pytest.raises(ValueError, match="already a level"):
        encode(torch.tensor([1.0]), grid("e2m1~4"))
