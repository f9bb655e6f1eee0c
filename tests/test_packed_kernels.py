"""Native packed-weight kernels, packed embeddings and tied heads, against the torch path."""
import json
import warnings

import pytest
import torch
from torch import nn

from elastiq import formats as F
from elastiq.quant import (QuantEmbedding, QuantLinear, fake_quantize_model, quantize_model, set_kernel_path, tied_heads,
                           weight_bytes)
from elastiq.quant import kernels
from elastiq.runtime.build import AVX2_FLAGS, PORTABLE_FLAGS
from elastiq.quant.io import MANIFEST, load, save

from conftest import make_tiny_llama
from tolerance import assert_close, linear_scale

needs_kernels = pytest.mark.skipif(kernels.library() is None, reason="no C compiler: the torch path is tested elsewhere")
KERNEL_FORMATS = ["nxfp4", "mxfp4", "nvfp4", "nf4", "int4", "int4-g64", "mxfp4_cr", "int8", "int8-channel", "mxint8",
                  "mxfp8_e4m3", "mxfp8_e5m2", "int3", "int2", "mxfp6_e2m3", "nxfp6", "nxfp5",
                  "int4x16", "int3x8", "int2x4-g64"]


@needs_kernels
@pytest.mark.parametrize("fmt", KERNEL_FORMATS)
def test_kernel_rows_equal_dequantize_bit_for_bit(fmt):
    torch.manual_seed(0)
    w = torch.randn(37, 200) * torch.exp(torch.randn(37, 1))  # 200 = a ragged last block for block 128
    w[3, :32] = 0.0
    p = F.quantize(w, fmt)
    k = kernels.kernel_for(p, None)
    assert k is not None
    ref = F.dequantize(p, torch.float32)
    assert torch.equal(k.rows(), ref)
    idx = torch.tensor([5, 0, 36, 5])
    assert torch.equal(k.rows(idx), ref[idx])


@needs_kernels
@pytest.mark.parametrize("fmt", KERNEL_FORMATS)
@pytest.mark.parametrize("m", [1, 3, 8])
@pytest.mark.parametrize("k", [200, 320])  # 320: rows of whole 16- or 32-code blocks (the AVX-512 4-bit path)
def test_kernel_product_matches_float64(fmt, m, k):
    torch.manual_seed(m)
    w, x = torch.randn(45, k), torch.randn(m, k)
    p = F.quantize(w, fmt)
    y = kernels.kernel_for(p, None).matmul_t(x)
    ref = x.double() @ F.dequantize(p, torch.float64).T
    assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_unsupported_shapes_and_formats_fall_back():
    assert kernels.supported(F.get("mxfp6_e2m3"), (8, 64)) and kernels.supported(F.get("int3"), (8, 64))
    assert not kernels.supported(F.get("int4"), (8, 63))  # odd rows of 4-bit codes are not byte aligned
    assert not kernels.supported(F.get("elem=e4m3,block=32,scale=e8m0,axis=0"), (8, 64))  # blocks across rows
    assert kernels.supported(F.get("nxfp4"), (8, 64))
    lin = nn.Linear(63, 5)
    q = QuantLinear.from_linear(lin, "int4")
    x = torch.randn(2, 63)
    assert torch.allclose(q(x), nn.functional.linear(x, q.weight(), lin.bias), atol=1e-6)


def test_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("ELASTIQ_KERNELS", "1")  # a build is tried, whichever way the suite runs
    kernels.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="building the packed-weight kernels failed|slower torch path"):
            assert kernels.library() is None
        assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-built left behind
    except FileNotFoundError:
        pytest.fail("a missing compiler must give a warning, not a traceback")
    finally:
        kernels.library.cache_clear()


@needs_kernels
def test_kernel_path_equals_torch_path_in_a_model():
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    plan = {"model.embed_tokens": "nxfp4", "*": "nxfp4"}
    model = make_tiny_llama()
    quantize_model(model, plan, progress=False)
    out = {}
    with torch.no_grad():
        for path in ("native", "torch"):
            assert set_kernel_path(model, path) == 2 * 7 + 2  # the linear layers, the embedding and its tied head
            out[path] = model(ids).logits, model(ids[:, :1]).logits  # one row: the matrix-vector kernel
    for fast, slow in zip(out["native"], out["torch"]):
        assert_close(fast, slow, tol=1e-5)  # against the largest logit


def test_training_through_a_packed_layer_uses_the_torch_path():
    lin = nn.Linear(64, 16)
    q = QuantLinear.from_linear(lin, "nxfp4")
    x = torch.randn(1, 64, requires_grad=True)
    q(x).sum().backward()
    assert torch.allclose(x.grad, q.weight().sum(0), atol=1e-6)


def test_quant_embedding_lookups_and_refusals():
    emb = nn.Embedding(50, 32)
    q = QuantEmbedding.from_embedding(emb, "nvfp4")
    ids = torch.tensor([[0, 49, 7], [7, 7, 1]])
    ref = F.fake_quantize(emb.weight.detach(), "nvfp4")[ids]
    assert torch.equal(q(ids), ref)
    assert q.nbytes == F.storage_bytes(F.get("nvfp4"), (50, 32))
    with pytest.raises(IndexError, match="vocabulary has 50"):
        q(torch.tensor([50]))
    with pytest.raises(TypeError, match="integer"):
        q(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="axis"):
        QuantEmbedding.from_embedding(emb, "elem=int4,block=32,scale=fp16,axis=0")


def test_tied_head_shares_the_packed_embedding():
    model, ref = make_tiny_llama(), make_tiny_llama()
    plan = {"model.embed_tokens": "int8", "*": "nxfp4"}
    report = quantize_model(model, plan, progress=False)
    fake_quantize_model(ref, plan)
    assert report.quantized["lm_head"] == "int8 (tied to model.embed_tokens)"
    assert tied_heads(model) == {"lm_head": "model.embed_tokens"}
    assert model.lm_head.codes.data_ptr() == model.model.embed_tokens.codes.data_ptr()
    norms = sum(p.numel() * 4 for n, p in model.named_parameters())
    rotary = sum(b.numel() * b.element_size() for b in model.model.rotary_emb.buffers())
    linears = sum(m.nbytes for m in model.modules() if isinstance(m, QuantLinear) and m is not model.lm_head)
    assert weight_bytes(model) == norms + rotary + linears + model.model.embed_tokens.nbytes  # the shared table counted once
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)


def test_head_named_in_the_plan_is_untied_and_packed_on_its_own():
    model, ref = make_tiny_llama(), make_tiny_llama()
    plan = {"model.embed_tokens": "int8", "lm_head": "mxfp4", "*": "nxfp4"}
    report = quantize_model(model, plan, progress=False)
    fake_quantize_model(ref, plan)
    assert report.quantized["lm_head"] == "mxfp4" and tied_heads(model) == {}
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)


def test_save_load_packed_embedding_and_tied_head(tmp_path):
    model = make_tiny_llama()
    quantize_model(model, {"model.embed_tokens": "nxfp4", "*": "int4"}, progress=False)
    save(model, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["modules"]["lm_head"]["tied_to"] == "model.embed_tokens"
    assert manifest["modules"]["model.embed_tokens"]["kind"] == "embedding"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "weights not initialized" noise either
        again, _ = load(tmp_path / "m")
    assert again.lm_head.codes.data_ptr() == again.model.embed_tokens.codes.data_ptr()
    assert not any(p.device.type == "meta" for p in again.parameters())
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert weight_bytes(again) == weight_bytes(model)


def test_int8_value_tables_where_the_grid_allows():
    def table(name):
        return torch.cat([F.value_table(g, "cpu") for g in F.get(name).grids])

    for name, mult in [("int4", 1.0), ("mxfp4", 0.5), ("nxfp4", 0.25)]:
        i8, m = kernels._as_int8(table(name))
        assert m == mult and torch.equal(i8.double() * m, table(name).double())
    assert kernels._as_int8(table("nf4")) == (None, 1.0)  # NF4's levels are not dyadic: the float table serves


@needs_kernels
@pytest.mark.parametrize("flags, probe", [(PORTABLE_FLAGS, "eq_has_avx2"), (AVX2_FLAGS, "eq_has_avx512")])
def test_the_builds_without_avx2_or_avx512_give_the_same_results(flags, probe):
    lib = kernels.library(flags)
    assert lib is not None and getattr(lib, probe)() == 0
    torch.manual_seed(5)
    for k in (200, 320):
        w, x = torch.randn(40, k), torch.randn(3, k)
        for fmt in ["nxfp4", "nvfp4", "nf4", "int4", "int8", "mxfp8_e4m3", "int3"]:
            p = F.quantize(w, fmt)
            plain, fast = kernels.KernelWeight(p, lib), kernels.KernelWeight(p)
            assert torch.equal(plain.rows(), F.dequantize(p, torch.float32))
            for m in (1, 3):
                dense = F.dequantize(p, torch.float32)
                assert_close(plain.matmul_t(x[:m]), fast.matmul_t(x[:m]), linear_scale(x[:m], dense), what=fmt)


@needs_kernels
def test_the_kernels_variable_chooses_off_native_or_portable(monkeypatch):
    kernels.library.cache_clear()
    try:
        monkeypatch.setenv("ELASTIQ_KERNELS", "0")
        assert kernels.library() is None
        kernels.library.cache_clear()
        monkeypatch.setenv("ELASTIQ_KERNELS", "portable")  # what CI runs the suite with, on top of the native build
        assert kernels.library().eq_has_avx2() == 0
        kernels.library.cache_clear()
        monkeypatch.setenv("ELASTIQ_KERNELS", "fast")
        with pytest.warns(UserWarning, match="not one of 0, 1, portable"):
            assert kernels.library() is not None
    finally:
        kernels.library.cache_clear()


@needs_kernels
def test_a_struct_that_does_not_match_its_mirror_is_refused_at_load(monkeypatch):
    import ctypes

    assert kernels._layout_problem(kernels.library()) is None  # the real pair agrees, field by field

    class Shifted(ctypes.Structure):  # K as a 32-bit int: every later field moves
        _fields_ = [(n, ctypes.c_int32 if n == "K" else t) for n, t in kernels._QWeight._fields_]

    assert "offset" in kernels._layout_problem(kernels.library(), Shifted)
    kernels.library.cache_clear()
    monkeypatch.setattr(kernels, "_QWeight", Shifted)
    try:
        with pytest.warns(UserWarning, match="does not match its ctypes mirror"):
            assert kernels.library() is None
    finally:
        kernels.library.cache_clear()
