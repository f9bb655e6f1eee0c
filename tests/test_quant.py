"""Packed models: QuantLinear, quantize_model plans, weight bytes, save/load and its refusals."""
import json
import shutil

import pytest
import torch
from torch import nn

from elastiq import formats as F
from elastiq.quant import KERNEL_PATHS, QuantLinear, fake_quantize_model, quantize_model, set_kernel_path, weight_bytes
from elastiq.quant import kernels
from elastiq.quant.io import MANIFEST, WEIGHTS, load, save

from conftest import make_tiny_llama as _tiny_llama
from tolerance import assert_close, linear_scale


def _ids():
    return torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(1))


def _path(path):
    if path == "native" and kernels.library() is None:
        pytest.skip("no native kernels here (ELASTIQ_KERNELS=0, or no C compiler)")
    return path


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("rows", [3, 20])  # the native path: from the codes up to 8 rows, decode + BLAS above
def test_quant_linear_matches_fake_quantized_linear(path, rows):
    torch.manual_seed(0)
    lin = nn.Linear(96, 40)
    q = QuantLinear.from_linear(lin, "nvfp4", kernel_path=_path(path))
    x = torch.randn(rows, 96)
    ref = nn.functional.linear(x, F.fake_quantize(lin.weight.detach(), "nvfp4"), lin.bias)
    assert_close(q(x), ref, linear_scale(x, q.weight(), lin.bias))  # each path sums in its own order
    assert q.codes.dtype == torch.uint8 and q.nbytes == F.storage_bytes("nvfp4", (40, 96)) + 40 * 4
    assert "format=nvfp4" in repr(q)


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_activation_format_is_applied(path):
    torch.manual_seed(0)
    lin = nn.Linear(64, 8)
    q = QuantLinear.from_linear(lin, "mxfp8_e4m3", act_format="mxfp4", kernel_path=_path(path))
    x = torch.randn(2, 64)
    ref = nn.functional.linear(F.fake_quantize(x, "mxfp4"), F.fake_quantize(lin.weight.detach(), "mxfp8_e4m3"), lin.bias)
    assert_close(q(x), ref, linear_scale(F.fake_quantize(x, "mxfp4"), q.weight(), lin.bias))


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_gradients_reach_the_input_on_every_path(path):
    torch.manual_seed(0)
    q = QuantLinear.from_linear(nn.Linear(64, 16), "nxfp4", kernel_path=_path(path))
    x = torch.randn(2, 64, requires_grad=True)
    q(x).sum().backward()
    assert_close(x.grad, q.weight().sum(0).expand(2, -1), linear_scale(torch.ones(1, 16), q.weight().T).expand(2, -1))


def test_kernel_path_is_checked_and_native_says_when_it_cannot_serve(monkeypatch):
    lin = nn.Linear(63, 5)  # odd rows of 4-bit codes: the kernels do not take them
    with pytest.raises(ValueError, match="kernel path must be one of auto, native, torch"):
        QuantLinear.from_linear(lin, "int4", kernel_path="fast")
    with pytest.raises(RuntimeError, match="cannot serve this int4 weight.*do not handle"):
        QuantLinear.from_linear(lin, "int4", kernel_path="native")(torch.randn(1, 63))
    q = QuantLinear.from_linear(nn.Linear(64, 5), "int4", kernel_path="torch")
    monkeypatch.setattr(kernels, "kernel_for", lambda *a: pytest.fail("the torch path reached the kernels"))
    assert "kernel_path=torch" in repr(q) and q(torch.randn(1, 64)).shape == (1, 5)


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_quantize_model_matches_fake_quantization_and_keeps_head_and_embeddings(path):
    model, ref = _tiny_llama(), _tiny_llama()
    report = quantize_model(model, "mxfp4", progress=False)
    assert set_kernel_path(model, _path(path)) == 2 * 7
    fake_quantize_model(ref, "mxfp4")
    assert len(report.quantized) == 2 * 7 and "lm_head" in report.kept and "model.embed_tokens" in report.kept
    assert isinstance(model.model.layers[0].mlp.down_proj, QuantLinear)
    with torch.no_grad():
        assert_close(model(_ids()).logits, ref(_ids()).logits, tol=1e-5)  # against the largest logit
        assert_close(model(_ids()[:, :1]).logits, ref(_ids()[:, :1]).logits, tol=1e-5)  # one row: the product from codes


def test_plan_patterns_first_match_wins_and_none_keeps_float():
    model = _tiny_llama()
    plan = {"*.mlp.down_proj": None, "*.mlp.*": "int4", "*.self_attn.*": "nxfp4", "lm_head": "mxfp8_e4m3"}
    report = quantize_model(model, plan, progress=False)
    assert report.kept["model.layers.0.mlp.down_proj"] == "plan keeps it in float"
    assert report.quantized["model.layers.1.mlp.up_proj"] == "int4"
    assert report.quantized["model.layers.0.self_attn.q_proj"] == "nxfp4"
    assert report.quantized["lm_head"] == "mxfp8_e4m3"  # named explicitly: quantized
    assert isinstance(model.model.layers[0].mlp.down_proj, nn.Linear)


def test_bad_plans():
    with pytest.raises(ValueError, match="unknown format"):
        quantize_model(_tiny_llama(), "mxfp5", progress=False)
    with pytest.raises(ValueError, match="plan is empty"):
        quantize_model(_tiny_llama(), {}, progress=False)
    with pytest.raises(TypeError, match="plan is a format"):
        quantize_model(_tiny_llama(), 4, progress=False)


def test_weight_bytes_counts_packed_codes_and_tied_storage_once():
    model = _tiny_llama()
    float_bytes = weight_bytes(model)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() already dedups tied weights
    n_buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert float_bytes == n_params * 4 + n_buffers
    before = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    quantize_model(model, "int4", progress=False)
    saved = sum(n * 4 - F.storage_bytes(F.get("int4"), (1, n)) for n in before.values())
    packed = sum(m.packed().nbytes for m in model.modules() if isinstance(m, QuantLinear))
    assert packed == sum(F.storage_bytes(F.get("int4"), m.packed().shape) for m in model.modules() if isinstance(m, QuantLinear))
    assert weight_bytes(model) < float_bytes - 0.8 * saved


def test_save_load_gives_identical_logits(tmp_path):
    model = _tiny_llama()
    quantize_model(model, {"*.mlp.*": "nxfp4", "*": "mxfp6_e2m3"}, progress=False)
    save(model, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["modules"]["model.layers.0.mlp.up_proj"]["format"] == "nxfp4"
    again, tok = load(tmp_path / "m")
    assert tok is None
    with torch.no_grad():
        assert torch.equal(model(_ids()).logits, again(_ids()).logits)
    assert weight_bytes(again) == weight_bytes(model)


def test_untied_and_custom_formats_roundtrip(tmp_path):
    model = _tiny_llama(tie=False)
    quantize_model(model, F.get("elem=e2m1|e1m2,block=16,scale=ue5m3,round=even,tscale=1"), progress=False)
    save(model, tmp_path / "m")
    again, _ = load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(model(_ids()).logits, again(_ids()).logits)


def test_corrupted_truncated_and_mismatched_files_are_refused(tmp_path):
    model = _tiny_llama()
    quantize_model(model, "int4", progress=False)
    good = save(model, tmp_path / "good")

    def copy(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = copy("trunc")
    w = d / WEIGHTS
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load(d)
    d = copy("flip")
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-5] ^= 0xFF
    (d / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        load(d)
    d = copy("missing")
    (d / "config.json").unlink()
    with pytest.raises(ValueError, match="missing"):
        load(d)
    d = copy("badjson")
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load(d)
    d = copy("shape")
    m = json.loads((d / MANIFEST).read_text())
    m["modules"]["model.layers.0.mlp.up_proj"]["shape"] = [7, 7]
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="shape"):
        load(d)
    with pytest.raises(FileNotFoundError, match="not a model saved by elastiq"):
        load(tmp_path)


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = _tiny_llama()
    quantize_model(model, "int4", progress=False)
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_model", boom)
    with pytest.raises(OSError, match="disk full"):
        save(model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    save(model, tmp_path / "m")
    with pytest.raises(FileExistsError):
        save(model, tmp_path / "m")
