"""elastiq as a transformers quantization method (elastiq.interop.hf_quantizer), on a tiny
Llama saved as a Hugging Face folder: the same logits as elastiq.quantize, a save and load
that keeps them, a peft LoRA that trains, refusals."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import elastiq
from elastiq.errors import InputError
from elastiq.interop.hf_quantizer import ElastiqConfig, lora_config
from elastiq.quant import QuantEmbedding, QuantLinear

from conftest import make_tiny_llama, save_tiny_llama

IDS = torch.tensor([[5, 17, 99, 3, 200, 41, 7, 63, 128, 255, 12, 90]])


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def folder(tmp_path_factory, byte_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny", byte_tokenizer)


@pytest.fixture(scope="module")
def packed(folder):
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=ElastiqConfig(format="nxfp4", embedding="same"))


def test_from_pretrained_with_the_config_packs_as_elastiq_quantize_does(packed):
    direct = elastiq.quantize(make_tiny_llama(), "nxfp4", embedding="same", progress=False)
    assert isinstance(packed.model.layers[1].mlp.up_proj, QuantLinear)
    assert isinstance(packed.model.embed_tokens, QuantEmbedding)
    assert torch.equal(logits(packed), logits(direct))
    assert elastiq.weight_bytes(packed) == elastiq.weight_bytes(direct)


def test_save_pretrained_then_from_pretrained_keeps_the_logits(packed, tmp_path):
    packed.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p/config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "elastiq" and config["modules"]["lm_head"]["tied_to"] == "model.embed_tokens"
    from safetensors import safe_open

    with safe_open(tmp_path / "p/model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.self_attn.q_proj.codes" in keys and not any(k.startswith("lm_head.") for k in keys)
    assert not any(k.endswith("proj.weight") for k in keys)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.lm_head, QuantLinear)
    assert loaded.lm_head.codes.data_ptr() == loaded.model.embed_tokens.codes.data_ptr()  # one copy serves both
    assert torch.equal(logits(loaded), logits(packed))


def test_a_peft_lora_attaches_and_trains_on_the_packed_model(folder, byte_tokenizer):
    from peft import get_peft_model

    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=ElastiqConfig(format="int4"))
    before = model.model.layers[0].self_attn.q_proj.codes.clone()
    peft_model = get_peft_model(model, lora_config(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert len(trainable) == 2 * 3 * 2  # A and B, three layers kinds, two decoder layers
    ids = byte_tokenizer("The quick brown fox jumps over the lazy dog. " * 3, return_tensors="pt").input_ids
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(12):
        loss = peft_model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.1
    assert torch.equal(model.model.layers[0].self_attn.q_proj.base_layer.codes, before)  # the packed base is frozen


def test_refusals(folder, packed, tmp_path):
    with pytest.raises(InputError, match="mxfp5"):
        ElastiqConfig(format="mxfp5")
    packed.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p/config.json").read_text())
    config["quantization_config"]["modules"]["model.layers.0.mlp.up_proj"]["shape"] = "big"
    (tmp_path / "p/config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="shape"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "p")
