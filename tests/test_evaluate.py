"""Perplexity and KL against independent computations on a tiny model."""
import copy
import math

import pytest
import torch

from elastiq.compare import compare
from elastiq.evaluate import evaluate, kl_divergence, perplexity

from conftest import make_tiny_llama

TEXT = "The quick brown fox jumps over the lazy dog. " * 3


def test_single_window_perplexity_equals_the_model_loss(tiny_llama, byte_tokenizer):
    ids = torch.tensor(byte_tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        loss = tiny_llama(ids[None], labels=ids[None]).loss
    ev = evaluate(tiny_llama, byte_tokenizer, TEXT, context=len(ids), progress=False)
    assert ev.tokens == len(ids) - 1
    assert ev.perplexity == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert ev.kl is None


def test_windows_score_every_token_once(tiny_llama, byte_tokenizer):
    n = len(byte_tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    for context, stride in [(32, 32), (32, 16), (64, 8)]:
        ev = evaluate(tiny_llama, byte_tokenizer, TEXT, context=context, stride=stride, progress=False)
        assert ev.tokens == n - 1
    assert evaluate(tiny_llama, byte_tokenizer, TEXT, context=32, max_tokens=50, progress=False).tokens == 49
    # more context per scored token can only help a model this small so much: the figures stay close
    full = perplexity(tiny_llama, byte_tokenizer, TEXT, context=n, progress=False)
    short = perplexity(tiny_llama, byte_tokenizer, TEXT, context=32, progress=False)
    assert short == pytest.approx(full, rel=0.2)


def test_kl_is_zero_against_itself_and_matches_a_direct_computation(tiny_llama, byte_tokenizer):
    assert kl_divergence(tiny_llama, tiny_llama, byte_tokenizer, TEXT, context=200, progress=False) == pytest.approx(0, abs=1e-7)
    other = make_tiny_llama(seed=1)
    ids = torch.tensor(byte_tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        p = torch.log_softmax(tiny_llama(ids[None]).logits[0, :-1], -1)
        q = torch.log_softmax(other(ids[None]).logits[0, :-1], -1)
    direct = float((p.exp() * (p - q)).sum(-1).mean())
    assert kl_divergence(other, tiny_llama, byte_tokenizer, TEXT, context=len(ids), progress=False) == pytest.approx(direct, rel=1e-5)


def test_compare_reports_float_then_each_format(tiny_llama, byte_tokenizer):
    before = copy.deepcopy(tiny_llama.state_dict())
    res = compare(tiny_llama, byte_tokenizer, TEXT, ["int8", "int4", "mxfp4"], context=64, progress=False)
    assert [r.format for r in res] == ["float", "int8", "int4", "mxfp4"]
    assert res[0].kl == 0 and res[0].delta_perplexity == 0
    assert res[1].bits_per_weight == pytest.approx(8 + 16 / 128, abs=0.2)  # ragged groups add a little
    assert res[1].kl < res[2].kl  # 8 bits stay closer to the float model than 4
    assert res[2].weight_bytes < res[1].weight_bytes < res[0].weight_bytes
    assert all(torch.equal(v, tiny_llama.state_dict()[k]) for k, v in before.items())  # the float model is untouched
    with pytest.raises(ValueError, match="unknown format"):
        compare(tiny_llama, byte_tokenizer, TEXT, ["int4", "nope"], progress=False)


def test_bad_evaluation_arguments(tiny_llama, byte_tokenizer):
    with pytest.raises(ValueError, match="context"):
        evaluate(tiny_llama, byte_tokenizer, TEXT, context=1, progress=False)
    with pytest.raises(ValueError):
        evaluate(tiny_llama, byte_tokenizer, "", progress=False)
