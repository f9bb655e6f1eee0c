"""The native runtime against the torch path on the same packed bytes: tiny models of each
supported family built from configs, every format the kernels serve, prefill and decode,
with and without AVX2; generation, and the refusals of bad input."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers as T

import elastiq
from elastiq.runtime import NativeError, NativeLM, Sampling
from elastiq.runtime import native

FAMILIES = ["llama", "qwen2", "gemma2", "gemma3"]
# every format family the kernels serve: integer groups, minifloats, OCP MX, NVFP4, NF4, NxFP, FP16 scales
FORMATS = ["int8", "int4", "int3", "nf4", "mxfp4", "mxfp6_e3m2", "mxfp8_e4m3", "mxint8", "nvfp4", "nxfp4", "mxfp4_am", "nxfp6"]


def tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=96)
    if family == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**common, tie_word_embeddings=True))
    elif family == "qwen2":  # biased q/k/v, an untied head
        model = T.Qwen2ForCausalLM(T.Qwen2Config(**common, tie_word_embeddings=False))
    elif family == "gemma2":  # sliding and full layers, soft-capped attention and logits, (1+w) norms
        model = T.Gemma2ForCausalLM(T.Gemma2Config(**common, head_dim=16, sliding_window=5, final_logit_softcapping=5.0,
                                                   attn_logit_softcapping=3.0, query_pre_attn_scalar=24))
    else:  # QK norm, sliding layers with their own rotary base, scaled embeddings
        model = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**common, head_dim=16, sliding_window=5, sliding_window_pattern=2,
                                                       query_pre_attn_scalar=20))
    for p in model.parameters():  # norms away from their defaults, so a wrong offset would show
        if p.dim() == 1:
            p.data.uniform_(-0.5, 0.5) if family.startswith("gemma") else p.data.uniform_(0.5, 1.5)
    return model.eval()


def saved(tmp_path, family, fmt, embedding=None, byte_tokenizer=None):
    model = tiny(family)
    if fmt is not None:
        elastiq.quantize(model, fmt, embedding=embedding, progress=False)
    out = tmp_path / f"{family}-{fmt}-{embedding}"
    elastiq.save(model, out, tokenizer=byte_tokenizer)
    return model, out


def assert_close(native_logits, torch_logits):
    """Within 1e-4 of the logits' scale (the largest magnitude)."""
    ref = torch_logits.detach().double().numpy()
    got = np.asarray(native_logits, dtype=np.float64)
    assert got.shape == ref.shape
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 1e-4 * scale, (np.abs(got - ref).max(), scale)


IDS = [3, 77, 150, 9, 201, 42, 18, 255, 0, 64, 128, 7, 99, 31, 12, 190, 5, 88, 140, 66]


def check_against_torch(model, lm):
    ids = torch.tensor([IDS])
    with torch.no_grad():
        ref = model(ids).logits[0]
    lm.model.reset()
    assert_close(lm.model.forward(IDS, all_logits=True), ref)  # prefill: every position at once
    lm.model.reset()
    lm.model.forward(IDS[:11])
    for i in range(11, len(IDS)):  # decode: one token at a time after a prefill
        assert_close(lm.model.forward([IDS[i]]), ref[i])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt, embedding", [(None, None), ("nxfp4", "same"), ("int8", None)])
def test_each_family_matches_the_torch_path(tmp_path, family, fmt, embedding):
    model, out = saved(tmp_path, family, fmt, embedding)
    check_against_torch(model, NativeLM(out))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_served_format_matches_the_torch_path(tmp_path, fmt):
    model, out = saved(tmp_path, "llama", fmt, "same")
    check_against_torch(model, NativeLM(out))


@pytest.mark.parametrize("variant", ["portable", "avx2"])
def test_without_avx2_or_avx512_the_results_are_the_same(tmp_path, monkeypatch, variant):
    """The scalar paths (no AVX2) and the AVX2 paths (no AVX-512) against the torch path, in a
    fresh library build."""
    model, out = saved(tmp_path, "gemma3", "nxfp4", "same")
    monkeypatch.setenv("ELASTIQ_KERNELS", variant)
    native.library.cache_clear()
    try:
        check_against_torch(model, NativeLM(out))
    finally:
        monkeypatch.undo()
        native.library.cache_clear()


@pytest.mark.parametrize("hidden", [256, 384])  # head_dim 64 and 96: attention's 64- and 32-column vector paths
def test_long_contexts_and_a_growing_cache_match_the_torch_path(tmp_path, hidden):
    """Decoding past KEY_CHUNK keys (attention in chunks, merged), in a cache grown from a small
    reservation while it holds tokens (each kv head's rows move)."""
    torch.manual_seed(1)
    model = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=512)).eval()
    elastiq.quantize(model, "nxfp4", embedding="same", progress=False)
    elastiq.save(model, tmp_path / "m")
    lm = NativeLM(tmp_path / "m")
    ids = [int(i) for i in np.random.default_rng(1).integers(0, 256, 300)]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0]
    lm.model.reserve(40)
    lm.model.forward(ids[:40])
    assert_close(lm.model.forward(ids[40:200], all_logits=True), ref[40:200])  # grows to 256 keys
    for i in range(200, 300, 7):  # grows again, to 512; decoding reads 2 or 3 chunks of keys
        for j in range(i, min(i + 7, 300)):
            got = lm.model.forward([ids[j]])
        assert_close(got, ref[j])


def test_prefill_in_pieces_equals_prefill_at_once(tmp_path):
    """Long enough for the tiled product (more than 8 rows) and the sliding windows to matter."""
    model, out = saved(tmp_path, "gemma3", "int4", "same")
    lm = NativeLM(out)
    ids = list(np.random.default_rng(0).integers(0, 256, 60))
    whole = lm.model.forward(ids, all_logits=True)
    lm.model.reset()
    parts = np.concatenate([lm.model.forward(ids[:25], all_logits=True), lm.model.forward(ids[25:], all_logits=True)])
    assert np.abs(whole - parts).max() <= 1e-5 * np.abs(whole).max()
    with torch.no_grad():
        assert_close(whole, model(torch.tensor([ids])).logits[0])


# ---- generation ---------------------------------------------------------------------------
@pytest.fixture
def lm(tmp_path, byte_tokenizer):
    _, out = saved(tmp_path, "llama", "int8", "same", byte_tokenizer)
    return NativeLM(out)


def test_greedy_generation_equals_transformers_generate(tmp_path, byte_tokenizer):
    model, out = saved(tmp_path, "llama", "nxfp4", "same", byte_tokenizer)
    lm = NativeLM(out)
    g = lm.generate("Hello there", max_new_tokens=20, chat=False)
    ids = byte_tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert g.tokens == ref[0, ids.shape[1]:].tolist()
    assert g.text == byte_tokenizer.decode(g.tokens, skip_special_tokens=True)
    assert g.finish_reason == "length" and g.prompt_tokens == ids.shape[1]


def test_sampling_is_seeded_and_top_k_1_is_greedy(lm):
    greedy = lm.generate("abc", max_new_tokens=12, chat=False).tokens
    assert lm.generate("abc", 12, chat=False, sampling=Sampling(temperature=0.8, top_k=1, seed=1)).tokens == greedy
    a = lm.generate("abc", 12, chat=False, sampling=Sampling(temperature=1.5, top_p=0.9, seed=7)).tokens
    b = lm.generate("abc", 12, chat=False, sampling=Sampling(temperature=1.5, top_p=0.9, seed=7)).tokens
    c = lm.generate("abc", 12, chat=False, sampling=Sampling(temperature=1.5, seed=8)).tokens
    assert a == b and a != c


def test_top_p_keeps_the_smallest_set_reaching_p():
    from elastiq.runtime.generate import Sampler

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    seen = {Sampler(Sampling(temperature=1.0, top_p=0.75, seed=s))(logits) for s in range(200)}
    assert seen == {0, 1}


def test_stop_strings_cut_the_text_and_are_never_streamed(lm):
    full = lm.generate("abc", max_new_tokens=16, chat=False).text
    stop = full[5:7]
    streamed = []
    g = lm.generate("abc", max_new_tokens=16, chat=False, stop=(stop,), on_token=streamed.append)
    assert g.text == full[:full.find(stop)] and g.finish_reason == "stop"
    assert all(stop not in s for s in streamed) and streamed[-1] == g.text


def test_end_of_sequence_stops(lm):
    s = Sampling(temperature=1.0, seed=3)  # seeded: the same tokens until the stop
    first = lm.generate("abc", max_new_tokens=12, chat=False, sampling=s).tokens
    i = next(i for i in range(1, len(first)) if first[i] not in first[:i])
    lm.model.spec["eos_token_ids"] = [first[i]]
    g = lm.generate("abc", max_new_tokens=12, chat=False, sampling=s)
    assert g.tokens == first[:i] and g.finish_reason == "stop"


def test_the_context_limit_is_a_clear_error(lm):
    with pytest.raises(NativeError, match="maximum context of 96"):
        lm.generate("x" * 100, max_new_tokens=1, chat=False)
    with pytest.raises(NativeError, match="50 tokens plus 60 new tokens exceed the maximum context of 96"):
        lm.generate("x" * 50, max_new_tokens=60, chat=False)
    lm.model.reset()
    lm.model.forward(list(range(90)))
    with pytest.raises(NativeError, match="maximum context of 96"):
        lm.model.forward(list(range(7)))
    with pytest.raises(NativeError, match="token id out of range"):
        lm.model.forward([256])


def test_the_chat_template_renders_as_transformers_does(tmp_path, byte_tokenizer):
    tok = copy.deepcopy(byte_tokenizer)  # the fixture is shared by the session
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    _, out = saved(tmp_path, "llama", "int8", None, tok)
    lm = NativeLM(out)
    want = tok.apply_chat_template([{"role": "user", "content": " hi "}], add_generation_prompt=True, return_dict=True)
    assert lm.tokenizer.prompt_ids(" hi ") == list(want["input_ids"])
    assert lm.tokenizer.decode(want["input_ids"]) == "<user>hi<assistant>"


# ---- what it refuses ------------------------------------------------------------------------
def test_an_unsupported_family_gets_no_native_files_and_a_clear_error(tmp_path):
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=32)).eval()
    elastiq.save(model, tmp_path / "gpt2")
    with pytest.raises(NativeError, match="has no native.json"):
        NativeLM(tmp_path / "gpt2")


@pytest.mark.parametrize("damage", ["truncate", "flip", "traversal", "missing-tensor"])
def test_damaged_models_are_refused(tmp_path, damage):
    _, out = saved(tmp_path, "llama", "int4", "same")
    manifest = json.loads((out / "elastiq.json").read_text())
    w = out / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:-100])
    elif damage == "flip":
        b = bytearray(w.read_bytes())
        b[len(b) // 2] ^= 1
        w.write_bytes(bytes(b))
    elif damage == "traversal":
        manifest["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0" * 64}
        (out / "elastiq.json").write_text(json.dumps(manifest))
    else:  # a consistent manifest over a model with one tensor gone
        from safetensors.numpy import load_file, save_file

        t = load_file(str(w))
        t.pop("model.layers.1.mlp.up_proj.codes")
        save_file(t, str(w))
        manifest["files"]["model.safetensors"] = {"bytes": w.stat().st_size,
                                                  "sha256": __import__("hashlib").sha256(w.read_bytes()).hexdigest()}
        (out / "elastiq.json").write_text(json.dumps(manifest))
    with pytest.raises(NativeError) as e:
        NativeLM(out)
    assert "\n" not in str(e.value)


def test_the_runtime_never_imports_torch(tmp_path, byte_tokenizer):
    _, out = saved(tmp_path, "qwen2", "nxfp4", "same", byte_tokenizer)
    code = (f"import sys; from elastiq.runtime import NativeLM; lm = NativeLM({str(out)!r}); "
            "g = lm.generate('hi', max_new_tokens=4, chat=False); assert len(g.tokens) == 4; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_tied_float_head_shares_the_embeddings_one_matrix(tmp_path):
    """safetensors stores the tied pair once, under either name: one float copy serves both."""
    _, out = saved(tmp_path, "llama", "int8", None)
    m = NativeLM(out).model
    assert m.matrices["lm_head"] is m.matrices["model.embed_tokens"]
    assert m.matrices["lm_head"].kind == "F32"
