"""The native runtime on the real built-in model: 64 greedy tokens identical to the torch
path on the same packed bytes."""
import copy

import numpy as np
import pytest
import torch

import elastiq
from elastiq.runtime import NativeLM


def torch_greedy(model, ids, n):
    out = []
    with torch.no_grad():
        o = model(torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            nxt = int(o.logits[0, -1].argmax())
            out.append(nxt)
            o = model(torch.tensor([[nxt]]), past_key_values=o.past_key_values, use_cache=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["int8", "nxfp4"])
def test_64_greedy_tokens_equal_the_torch_path(smollm2, tmp_path, fmt):
    model, tok, _ = smollm2  # the real model, loaded once per test run (conftest)
    packed = elastiq.quantize(copy.deepcopy(model), fmt, embedding="same", progress=False)
    elastiq.save(packed, tmp_path / fmt, tokenizer=tok)
    lm = NativeLM(tmp_path / fmt)
    ids = lm.tokenizer.prompt_ids("Write a short story about a robot who learns to paint.")
    assert ids == tok.apply_chat_template([{"role": "user", "content": "Write a short story about a robot who learns "
                                            "to paint."}], add_generation_prompt=True, return_dict=True)["input_ids"]
    logits = lm.model.forward(ids)
    native = []
    for _ in range(64):
        native.append(int(np.argmax(logits)))
        logits = lm.model.forward([native[-1]])
    assert native == torch_greedy(packed, ids, 64)
