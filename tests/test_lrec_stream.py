"""LREC set up one layer at a time gives what the in-memory route gives, for several model families."""
import copy

import pytest
import torch

from elastiq.lrec import adapters_of, add_adapters, teacher_targets
from elastiq.lrec.stream import StreamUnsupported, stream_setup
from elastiq.quant import QuantEmbedding, QuantLinear, quantize_model

from conftest import make_tiny_llama

TEXT = ("Rain fell on the hills all night; by morning the river had risen over the lower fields "
        "and the ferry could not cross until noon. ") * 5


def _tiny(family: str, seed: int = 4):
    import transformers as T

    torch.manual_seed(seed)
    if family == "llama":
        return make_tiny_llama(seed)
    common = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, head_dim=16)
    if family == "qwen2":
        return T.Qwen2ForCausalLM(T.Qwen2Config(**common, tie_word_embeddings=False)).eval()
    if family == "gemma2":  # alternating sliding and full attention, embedding scaling, soft-capped logits
        return T.Gemma2ForCausalLM(T.Gemma2Config(**common, sliding_window=16, final_logit_softcapping=5.0)).eval()
    raise ValueError(family)


def _in_memory(fp, tok, fmt, rank, init, embedding=None):
    q = copy.deepcopy(fp)
    quantize_model(q, fmt if embedding is None else {"model.embed_tokens": embedding, "*": fmt}, progress=False)
    torch.manual_seed(0)
    add_adapters(q, rank, init=init, float_model=fp)
    return q, teacher_targets(fp, tok, TEXT, context=40, max_tokens=400, top_k=8, progress=False)


def _streamed(directory, tok, fmt, rank, init, embedding=None):
    torch.manual_seed(0)
    return stream_setup(directory, fmt, tok, TEXT, rank=rank, init=init, embedding=embedding, context=40,
                        calib_tokens=400, top_k=8, progress=False)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_streamed_setup_matches_the_in_memory_route(family, tmp_path, byte_tokenizer):
    fp = _tiny(family)
    fp.save_pretrained(tmp_path / family)
    q_mem, t_mem = _in_memory(fp, byte_tokenizer, "int3", 4, "svd")
    q_str, t_str = _streamed(tmp_path / family, byte_tokenizer, "int3", 4, "svd")

    assert len(t_str) == len(t_mem) > 1
    for a, b in zip(t_mem.ids, t_str.ids):
        assert torch.equal(a, b)
    for a, b in zip(t_mem.logp, t_str.logp):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=0)
    agree = torch.cat([(a == b).float().flatten() for a, b in zip(t_mem.top, t_str.top)]).mean()
    assert agree > 0.99  # top-k ids: only near-ties may swap

    mem, stream = adapters_of(q_mem), adapters_of(q_str)
    assert set(mem) == set(stream) and len(mem) == 7 * fp.config.num_hidden_layers
    for name in mem:
        assert torch.equal(mem[name].base.codes, stream[name].base.codes), name
        torch.testing.assert_close(stream[name].delta(), mem[name].delta(), atol=1e-5, rtol=1e-4)
    assert not any(p.device.type == "meta" for p in q_str.parameters())
    assert all(p.requires_grad == ("lora_" in n) for n, p in q_str.named_parameters())
    ids = t_mem.ids[0][None]
    with torch.no_grad():
        torch.testing.assert_close(q_str(ids).logits, q_mem(ids).logits, atol=1e-4, rtol=1e-4)


def test_streamed_setup_packs_the_embedding_and_its_tied_head(tmp_path, byte_tokenizer):
    fp = make_tiny_llama(seed=5)
    fp.save_pretrained(tmp_path / "m")
    q_mem, _ = _in_memory(fp, byte_tokenizer, "int4", 4, "zero", embedding="int8")
    q_str, _ = _streamed(tmp_path / "m", byte_tokenizer, "int4", 4, "zero", embedding="int8")
    assert isinstance(q_str.model.embed_tokens, QuantEmbedding)
    assert isinstance(q_str.lm_head, QuantLinear) and q_str.lm_head.codes.data_ptr() == q_str.model.embed_tokens.codes.data_ptr()
    assert torch.equal(q_str.model.embed_tokens.codes, q_mem.model.embed_tokens.codes)
    ids = torch.arange(30)[None]
    with torch.no_grad():  # zero-init adapters: exactly the packed model
        torch.testing.assert_close(q_str(ids).logits, q_mem(ids).logits, atol=1e-5, rtol=1e-5)


def test_streamed_setup_refuses_what_it_cannot_read(tmp_path, byte_tokenizer):
    fp = make_tiny_llama()
    fp.config.save_pretrained(tmp_path / "config-only")
    with pytest.raises(StreamUnsupported, match="no model.safetensors"):
        _streamed(tmp_path / "config-only", byte_tokenizer, "int4", 4, "zero")
    fp.save_pretrained(tmp_path / "ok")
    with pytest.raises(ValueError, match="too short"):
        stream_setup(tmp_path / "ok", "int4", byte_tokenizer, "h", rank=4, progress=False)
    with pytest.raises(ValueError, match="init must be"):
        stream_setup(tmp_path / "ok", "int4", byte_tokenizer, TEXT, rank=4, init="random", progress=False)
    with pytest.raises(ValueError, match="rank must be"):
        stream_setup(tmp_path / "ok", "int4", byte_tokenizer, TEXT, rank=1000, progress=False)



@pytest.mark.slow  # seconds of training or the real model
def test_correct_command_streams_and_falls_back_to_the_whole_model(tmp_path, byte_tokenizer, monkeypatch):
    from typer.testing import CliRunner

    from elastiq.cli import app
    from elastiq.lrec import stream

    make_tiny_llama(seed=6).save_pretrained(tmp_path / "m")
    byte_tokenizer.save_pretrained(tmp_path / "m")
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)

    def run(out):
        r = CliRunner().invoke(app, ["correct", str(tmp_path / "m"), "--format", "int4", "--out", str(out), "--rank", "4",
                                     "--steps", "2", "--context", "40", "--calib", str(calib), "--eval-tokens", "0"])
        assert r.exit_code == 0, r.output
        return r.output

    assert "whole float model" not in run(tmp_path / "streamed")

    def unsupported(*a, **k):
        raise StreamUnsupported("no decoder-layer list here")

    monkeypatch.setattr(stream, "stream_setup", unsupported)
    assert "no decoder-layer list here: setting up with the whole float model in memory" in " ".join(run(tmp_path / "whole").split())
    import elastiq

    a, b = elastiq.load(tmp_path / "streamed")[0], elastiq.load(tmp_path / "whole")[0]
    la, lb = adapters_of(a), adapters_of(b)
    assert set(la) == set(lb) and la
    for n in la:  # the same start and targets, so the same two training steps
        torch.testing.assert_close(la[n].delta(), lb[n].delta(), atol=1e-4, rtol=1e-3)
