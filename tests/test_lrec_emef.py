"""EMEF pieces of LREC training: activation checkpointing really engages, the chunked
head and loss equal the whole-window ones, a packed output head is decoded in row blocks,
low-precision adapters and optimizer state."""
import copy
import json

import pytest
import torch

from elastiq.lrec import AdapterAdamW, add_adapters, adapters_of, correct, distill_loss, load_adapters, save_adapters, \
    teacher_targets, window_loss
from elastiq.lrec import adapter as adapter_mod
from elastiq.lrec import headloss as headloss_mod
from elastiq.lrec.adapter import packed_linear
from elastiq.lrec.headloss import head_kl
from elastiq.lrec.io import MANIFEST
from elastiq.lrec.train import _checkpointing
from elastiq.quant import QuantLinear, quantize_model
from elastiq.quant.model import with_embedding

from conftest import make_tiny_llama, save_tiny_llama
from test_lrec import TEXT
from tolerance import assert_close, linear_scale, term_magnitude


@pytest.fixture(scope="module")
def prepared(byte_tokenizer):
    fp = make_tiny_llama(seed=5)
    targets = teacher_targets(fp, byte_tokenizer, TEXT, context=48, max_tokens=240, top_k=16, progress=False)
    q = copy.deepcopy(fp)
    quantize_model(q, "int4", progress=False)
    return fp, q, targets


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _saved_bytes(model, ids):
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids, use_cache=False).logits.float().logsumexp(-1).sum()
    loss.backward()
    return sum(seen.values())


def test_activation_checkpointing_engages_and_changes_no_gradient(prepared):
    fp, q, targets = prepared
    q = copy.deepcopy(q)
    add_adapters(q, rank=4)
    for lo in adapters_of(q).values():
        lo.requires_grad_(True)
    ids = targets.ids[0][None]
    q.train()
    _checkpointing(q, False)
    plain = _saved_bytes(q, ids)
    g_plain = _grads(q)
    q.zero_grad(set_to_none=True)
    _checkpointing(q, True)
    ckpt = _saved_bytes(q, ids)
    g_ckpt = _grads(q)
    # only each decoder layer's input is kept (and the tied head's weight, which exists anyway)
    assert ckpt < plain / 3
    assert g_plain.keys() == g_ckpt.keys() and len(g_ckpt) == 28
    for n in g_plain:
        assert_close(g_ckpt[n], g_plain[n], tol=1e-4, what=n)


def _loss_scale(logits, lp, top, ids, lm_weight):
    """The magnitude of the terms behind the window loss: the KL is a small difference of
    p*log p and p*log q (log q itself the difference of a logit and the log-sum-exp), the
    next-token loss the difference of a log-sum-exp and a logit."""
    lse = logits.double().logsumexp(-1, keepdim=True)
    p, t = lp.double().exp(), lp.double()
    kl = (p * term_magnitude(t, logits.double().gather(-1, top.long()), lse)).sum(-1).mean()
    lm = term_magnitude(lse[:, 0], logits.double().gather(-1, ids[1:, None])[:, 0]).mean()
    return kl + lm_weight * lm


@pytest.mark.parametrize("lm_weight", [0.0, 0.5])
def test_fused_and_chunked_head_loss_equal_the_whole_window(prepared, lm_weight, monkeypatch):
    fp, q, targets = prepared
    q = copy.deepcopy(q)
    add_adapters(q, rank=4)
    for lo in adapters_of(q).values():
        lo.requires_grad_(True)
    ids, lp, top = targets.ids[1], targets.logp[1], targets.top[1]
    whole = window_loss(q, ids, lp, top, lm_weight, head="whole")
    whole.backward()
    g_whole = _grads(q)
    with torch.no_grad():  # "whole" is the loss as first defined
        logits = q(ids[None]).logits[0, :-1]
        ref = distill_loss(logits, lp, top) + lm_weight * torch.nn.functional.cross_entropy(logits, ids[1:])
    scale = _loss_scale(logits, lp, top, ids, lm_weight)
    assert_close(whole, ref, scale, what="whole")
    monkeypatch.setattr(adapter_mod, "DECODE_BLOCK", 64 * 48)  # the 256-token head in blocks of 48 rows
    for kw in ({"head": "chunked", "head_chunk": 7}, {"head": "fused"}):  # 47 positions: 6 chunks of 7 and one of 5
        q.zero_grad(set_to_none=True)
        loss = window_loss(q, ids, lp, top, lm_weight, **kw)
        loss.backward()
        assert_close(loss, whole, scale, what=str(kw))
        for n, g in _grads(q).items():  # each gradient against its own largest element
            assert_close(g, g_whole[n], tol=1e-4, what=f"{kw} {n}")
    with pytest.raises(ValueError, match="head_chunk"):
        window_loss(q, ids, lp, top, head="chunked", head_chunk=0)
    with pytest.raises(ValueError, match="head must be one of"):
        window_loss(q, ids, lp, top, head="sideways")


def test_fused_head_loss_on_a_packed_head_never_decodes_it_whole(monkeypatch):
    torch.manual_seed(1)
    lin = torch.nn.Linear(32, 300, bias=False).requires_grad_(False)
    head = QuantLinear.from_linear(lin, "int4")
    h = torch.randn(9, 32, requires_grad=True)
    logp, top = torch.log_softmax(torch.randn(9, 300) * 2, -1).topk(5, -1)
    nxt = torch.randint(0, 300, (9,))
    s = torch.log_softmax(h @ head.weight().T, -1)
    ref = (logp.exp() * (logp - s.gather(-1, top))).sum() + 0.7 * torch.nn.functional.nll_loss(s, nxt, reduction="sum")
    g_ref, = torch.autograd.grad(ref, h)
    decoded = []
    real = adapter_mod._decoded_rows
    monkeypatch.setattr(adapter_mod, "DECODE_BLOCK", 32 * 70)
    monkeypatch.setattr(headloss_mod, "_decoded_rows", lambda b, s, e: decoded.append(e - s) or real(b, s, e))
    out = head_kl(head, h, logp, top, nxt, 0.7)
    g, = torch.autograd.grad(out, h)
    logits = (h @ head.weight().T).detach().double()
    lse = logits.logsumexp(-1)
    scale = (logp.double().exp() * term_magnitude(logp, logits.gather(-1, top), lse[:, None])).sum() \
        + 0.7 * term_magnitude(lse, logits.gather(-1, nxt[:, None])[:, 0]).sum()
    assert_close(out, ref, scale, what="loss")
    assert_close(g, g_ref, tol=1e-5, what="gradient")
    assert decoded == [70, 70, 70, 70, 20] * 2  # one pass forward, one backward, a block at a time


def test_large_packed_weight_is_decoded_in_row_blocks(monkeypatch):
    lin = torch.nn.Linear(64, 40, bias=True)
    base = QuantLinear.from_linear(lin, "int4")
    x = torch.randn(5, 64, requires_grad=True)
    y_ref = x @ base.weight().T + base.bias
    decoded = []
    real = adapter_mod._decoded_rows
    monkeypatch.setattr(adapter_mod, "_decoded_rows", lambda b, s, e: decoded.append(e - s) or real(b, s, e))
    monkeypatch.setattr(adapter_mod, "DECODE_BLOCK", 64 * 16)  # 16 rows at a time
    y = packed_linear(base, x)
    assert decoded == [16, 16, 8]  # never the whole 40 x 64 weight
    assert_close(y, y_ref, linear_scale(x, base.weight(), base.bias), what="forward")
    g = torch.randn_like(y)
    y.backward(g)
    assert_close(x.grad, g @ base.weight(), linear_scale(g, base.weight().T), what="backward")
    assert decoded == [16, 16, 8] * 2


def test_packed_embedding_and_tied_head_train_without_an_adapter_on_the_head(prepared, tmp_path):
    fp, _, targets = prepared
    q = copy.deepcopy(fp)
    quantize_model(q, with_embedding(q, "int4", "same"), progress=False)
    assert isinstance(q.lm_head, QuantLinear)
    adapters = add_adapters(q, rank=4)
    assert "lm_head" not in adapters and len(adapters) == 14
    log = correct(q, targets, steps=6, lr=5e-3, progress=False)  # the packed head runs fused
    assert log.losses[-1] < log.losses[0]


def test_bfloat16_adapters_train_save_and_load_exactly(prepared, tmp_path):
    fp, q, targets = prepared
    q32, q16 = copy.deepcopy(q), copy.deepcopy(q)
    add_adapters(q32, rank=4, init="svd", float_model=fp)
    add_adapters(q16, rank=4, init="svd", float_model=fp, dtype="bfloat16")
    lo32, lo16 = adapters_of(q32), adapters_of(q16)
    assert all(lo.lora_A.dtype == torch.bfloat16 for lo in lo16.values())
    assert sum(lo.adapter_bytes for lo in lo16.values()) * 2 == sum(lo.adapter_bytes for lo in lo32.values())
    for n in lo32:  # the same start, rounded to bfloat16
        assert torch.equal(lo16[n].lora_A, lo32[n].lora_A.bfloat16())
    log = correct(q16, targets, steps=5, lr=5e-3, progress=False, optimizer_state="bfloat16")
    assert log.losses[-1] < log.losses[0]
    assert all(lo.lora_A.dtype == torch.bfloat16 for lo in adapters_of(q16).values())
    save_adapters(q16, tmp_path / "ad")
    assert {m["dtype"] for m in json.loads((tmp_path / "ad" / MANIFEST).read_text())["modules"].values()} == {"bfloat16"}
    fresh = copy.deepcopy(q)
    load_adapters(fresh, tmp_path / "ad")
    ids = targets.ids[0][None]
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, q16(ids).logits)
    with pytest.raises(ValueError, match="adapter dtype must be one of"):
        add_adapters(copy.deepcopy(q), rank=4, dtype="int8")
    with pytest.raises(ValueError, match="optimizer state dtype"):
        correct(q16, targets, steps=1, progress=False, optimizer_state="fp8")


def test_adapter_adamw_matches_torch_adamw_and_keeps_float32_masters():
    torch.manual_seed(0)
    p_ref = torch.nn.Parameter(torch.randn(6, 5))
    p = torch.nn.Parameter(p_ref.detach().clone())
    ref = torch.optim.AdamW([p_ref], lr=1e-2, weight_decay=0.01)
    ours = AdapterAdamW([p], lr=1e-2, weight_decay=0.01)
    for _ in range(5):
        g = torch.randn(6, 5)
        p_ref.grad, p.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    assert torch.allclose(p, p_ref, atol=1e-6)
    # bfloat16 weights: small updates accumulate in the float32 master instead of rounding away
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = AdapterAdamW([w], lr=1e-4, state_dtype="bfloat16")
    for _ in range(40):
        w.grad = torch.ones(4, dtype=torch.bfloat16)
        opt.step()
    assert torch.allclose(opt.state[w]["master"], torch.full((4,), 1 - 40e-4), atol=1e-5)
    assert w.dtype == torch.bfloat16 and float(w[0]) < 1.0  # 1 - 0.004 rounds to the bfloat16 below 1
    assert opt.state[w]["exp_avg"].dtype == torch.bfloat16
    # a resumed optimizer keeps its float32 masters (torch would cast them to the parameter's dtype)
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = AdapterAdamW([w2], lr=1e-4, state_dtype="bfloat16")
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[w2]["master"].dtype == torch.float32
    assert torch.equal(opt2.state[w2]["master"], opt.state[w]["master"])


def test_correct_command_with_packed_embedding_and_bfloat16_adapters(tmp_path, byte_tokenizer):
    from typer.testing import CliRunner

    import elastiq
    from elastiq.cli import app
    from elastiq.quant import QuantEmbedding

    d = save_tiny_llama(tmp_path / "tiny", byte_tokenizer, seed=3)
    text = tmp_path / "calib.txt"
    text.write_text(TEXT)
    out = tmp_path / "corrected"
    args = ["correct", str(d), "--format", "int4", "--out", str(out), "--rank", "4", "--steps", "2", "--context", "48",
            "--calib", str(text), "--eval-tokens", "0", "--embedding", "same", "--adapter-dtype", "bfloat16",
            "--optimizer-state", "bfloat16"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    model, _ = elastiq.load(out)
    assert isinstance(model.model.embed_tokens, QuantEmbedding)
    loaded = adapters_of(model)
    assert len(loaded) == 14 and all(lo.lora_A.dtype == torch.bfloat16 for lo in loaded.values())
    bad = [str(tmp_path / "bad") if a == str(out) else ("int8" if a == "bfloat16" else a) for a in args]
    r = CliRunner().invoke(app, bad)
    assert r.exit_code == 2 and "adapter dtype must be one of" in r.output
