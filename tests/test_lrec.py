"""LREC: adapters on packed layers, training without float copies, save/load, resume, refusals."""
import copy
import json

import pytest
import torch
from torch import nn

from elastiq.lrec import (LoRALinear, add_adapters, adapters_of, correct, distill_loss, effective_bits, load_adapters,
                          merged_weight, save_adapters, teacher_targets)
from elastiq.lrec.io import MANIFEST, TENSORS
from elastiq.quant import QuantLinear, quantize_model

from conftest import make_tiny_llama, save_tiny_llama

TEXT = ("The river rises in the hills and runs north past the old mill, then turns east towards the sea. "
        "Farmers along its banks grow barley and keep sheep; the town at its mouth trades wool and fish. ") * 6


@pytest.fixture(scope="module")
def prepared(byte_tokenizer):
    fp = make_tiny_llama(seed=3)
    q = copy.deepcopy(fp)
    quantize_model(q, "int4", progress=False)
    targets = teacher_targets(fp, byte_tokenizer, TEXT, context=48, max_tokens=480, top_k=16, progress=False)
    return fp, q, targets


@pytest.fixture
def setup(prepared):
    fp, q, targets = prepared
    return fp, copy.deepcopy(q), targets


def _ids():
    return torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(7))


def test_zero_init_adapters_reproduce_the_quantized_model(setup):
    fp, q, _ = setup
    with torch.no_grad():
        before = q(_ids()).logits
    add_adapters(q, rank=4)
    with torch.no_grad():
        assert torch.equal(q(_ids()).logits, before)
    assert len(adapters_of(q)) == 14
    assert all(p.requires_grad == ('lora_' in n) for n, p in q.named_parameters())  # only adapters train


def test_svd_init_captures_the_quantization_error(setup):
    fp, q, _ = setup
    add_adapters(q, rank=8, init="svd", float_model=fp)
    lora = q.model.layers[0].mlp.down_proj
    w = fp.model.layers[0].mlp.down_proj.weight.detach()
    err_before = (w - lora.base.weight()).norm()
    err_after = (w - merged_weight(lora)).norm()
    assert err_after < err_before
    # the best rank-8 approximation: the residual is the error's energy beyond rank 8
    s = torch.linalg.svdvals((w - lora.base.weight()).double())
    assert torch.isclose(err_after.double() ** 2, (s[8:] ** 2).sum(), rtol=1e-3)


@pytest.mark.slow  # seconds of training or the real model
def test_training_changes_only_adapters_keeps_codes_and_lowers_kl(setup):
    fp, q, targets = setup
    add_adapters(q, rank=4)
    codes = {n: m.codes.clone() for n, m in q.named_modules() if isinstance(m, QuantLinear)}
    frozen = {n: p.clone() for n, p in q.named_parameters() if "lora_" not in n}
    with torch.no_grad():
        kl0 = sum(float(distill_loss(q(t[None]).logits[0, :-1], lp, top)) for t, lp, top in
                  zip(targets.ids, targets.logp, targets.top))
    log = correct(q, targets, steps=12, lr=5e-3, progress=False)
    with torch.no_grad():
        kl1 = sum(float(distill_loss(q(t[None]).logits[0, :-1], lp, top)) for t, lp, top in
                  zip(targets.ids, targets.logp, targets.top))
    assert kl1 < 0.8 * kl0 and len(log.losses) == 12
    for n, m in q.named_modules():
        if isinstance(m, QuantLinear):
            assert torch.equal(m.codes, codes[n])
    for n, p in q.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen[n])


def test_backward_through_packed_layer_keeps_no_float_weight():
    lin = nn.Linear(64, 32)
    q = QuantLinear.from_linear(lin, "nxfp4")
    lo = LoRALinear(q, rank=4)
    x = torch.randn(3, 64, requires_grad=True)
    y = lo(x)
    saved = [t for t in _saved_tensors(y.grad_fn) if t.shape == (32, 64)]
    assert not saved  # autograd holds no decoded (32 x 64) weight
    y.sum().backward()
    w = q.weight() + lo.delta().detach()
    assert torch.allclose(x.grad, w.sum(0).expand(3, -1), atol=1e-5)
    assert lo.lora_A.grad is not None and lo.lora_B.grad is not None


def _saved_tensors(fn, seen=None):
    seen = set() if seen is None else seen
    if fn is None or id(fn) in seen:
        return []
    seen.add(id(fn))
    out = [getattr(fn, a) for a in dir(fn) if a.startswith("_saved_") and isinstance(getattr(fn, a, None), torch.Tensor)]
    for nxt, _ in fn.next_functions:
        out += _saved_tensors(nxt, seen)
    return out


@pytest.mark.slow  # seconds of training or the real model
def test_interrupted_training_resumes_to_the_same_adapters(setup, tmp_path):
    fp, q, targets = setup
    q2 = copy.deepcopy(q)
    add_adapters(q, rank=4)
    add_adapters(q2, rank=4)
    for a, b in zip(adapters_of(q).values(), adapters_of(q2).values()):
        b.lora_A.data.copy_(a.lora_A)
    correct(q, targets, steps=6, lr=5e-3, progress=False)
    ck = tmp_path / "ck"
    log1 = correct(q2, targets, steps=6, lr=5e-3, progress=False, checkpoint_dir=ck, save_every=2, stop_after=3)
    assert len(log1.losses) == 3 and (ck / "state.pt").is_file()
    log2 = correct(q2, targets, steps=6, lr=5e-3, progress=False, checkpoint_dir=ck, save_every=2)
    assert log2.resumed_from == 2  # the last whole checkpoint
    for a, b in zip(adapters_of(q).values(), adapters_of(q2).values()):
        assert torch.allclose(a.lora_A, b.lora_A, atol=1e-6) and torch.allclose(a.lora_B, b.lora_B, atol=1e-6)
    (ck / "state.pt").write_bytes(b"torn")
    with pytest.raises(ValueError, match="cannot resume"):
        correct(q2, targets, steps=6, progress=False, checkpoint_dir=ck)


def test_save_load_adapters_exact_and_refusals(setup, tmp_path):
    fp, q, targets = setup
    add_adapters(q, rank=4, init="svd", float_model=fp)
    save_adapters(q, tmp_path / "ad")
    fresh = copy.deepcopy(fp)
    quantize_model(fresh, "int4", progress=False)
    load_adapters(fresh, tmp_path / "ad")
    with torch.no_grad():
        assert torch.equal(q(_ids()).logits, fresh(_ids()).logits)
    bits = effective_bits(fresh)
    assert bits["bits_per_weight_with_adapters"] > bits["bits_per_weight"] > 4
    other = copy.deepcopy(fp)
    quantize_model(other, "nxfp4", progress=False)
    with pytest.raises(ValueError, match="trained on a int4"):
        load_adapters(other, tmp_path / "ad")
    data = (tmp_path / "ad" / TENSORS).read_bytes()
    (tmp_path / "ad" / TENSORS).write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated or replaced"):
        load_adapters(copy.deepcopy(other), tmp_path / "ad")
    with pytest.raises(FileNotFoundError, match="adapters"):
        load_adapters(other, tmp_path / "nothing")
    assert json.loads((tmp_path / "ad" / MANIFEST).read_text())["modules"]


def test_bad_inputs_are_refused(setup):
    fp, q, targets = setup
    with pytest.raises(ValueError, match="rank must be"):
        add_adapters(copy.deepcopy(q), rank=1000)
    with pytest.raises(ValueError, match="needs the float model"):
        add_adapters(copy.deepcopy(q), rank=4, init="svd")
    with pytest.raises(ValueError, match="init must be"):
        add_adapters(copy.deepcopy(q), rank=4, init="gaussian")
    with pytest.raises(ValueError, match="quantize it first"):
        add_adapters(copy.deepcopy(fp), rank=4)
    with pytest.raises(ValueError, match="no adapters"):
        correct(copy.deepcopy(q), targets, steps=2, progress=False)
    with pytest.raises(TypeError, match="QuantLinear"):
        LoRALinear(nn.Conv1d(8, 8, 1), rank=2)
    with pytest.raises(TypeError, match="quantization error"):
        LoRALinear(nn.Linear(8, 8), rank=2).init_from_error(torch.zeros(8, 8))


def test_correct_command_end_to_end(tmp_path, byte_tokenizer):
    from typer.testing import CliRunner

    import elastiq
    from elastiq.cli import app

    d = save_tiny_llama(tmp_path / "tiny", byte_tokenizer, seed=3)
    text = tmp_path / "calib.txt"
    text.write_text(TEXT)
    out = tmp_path / "corrected"
    args = ["correct", str(d), "--format", "int4", "--out", str(out), "--rank", "4", "--steps", "3", "--context", "48",
            "--calib", str(text), "--eval-tokens", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "KL loss" in r.stdout and (out / "adapters" / TENSORS).is_file()
    assert not (tmp_path / "corrected.checkpoint").exists()
    model, _ = elastiq.load(out)
    assert len(adapters_of(model)) == 14
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "already exists" in r.output
    r = CliRunner().invoke(app, args[:-4] + ["--calib", "wiki-eval", "--overwrite"])
    assert r.exit_code == 2 and "evaluation text" in r.output
