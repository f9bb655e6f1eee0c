"""Shared fixtures: a tiny Llama from a config and a byte-level tokenizer for it; the real
built-in model, loaded once per run."""
import pytest
import torch


@pytest.fixture(scope="session")
def byte_tokenizer():
    return make_byte_tokenizer()


def make_byte_tokenizer():
    """256 byte tokens (ids 0-255), no merges: any text tokenizes, deterministically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=sorted(alphabet)[0])


def make_tiny_llama(seed=0, tie=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


def save_tiny_llama(directory, tokenizer, seed=0):
    """A tiny Llama and its tokenizer written as a Hugging Face directory; returns the path."""
    make_tiny_llama(seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def model_dir(tmp_path, byte_tokenizer):
    """A tiny Llama saved as a Hugging Face directory with its tokenizer, and a small text file."""
    d = save_tiny_llama(tmp_path / "tiny", byte_tokenizer)
    text = tmp_path / "text.txt"
    text.write_text("A small real sentence, repeated to make a text. " * 8)
    return d, text


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """(model, tokenizer, cache): the real built-in model (SmolLM2-135M), loaded once per test
    run. It is converted from its GGUF file into a fresh cache, so the conversion is tested
    on every run and tests/test_models.py can check that a second load reads that cache."""
    import elastiq.models as M

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ELASTIQ_CACHE", str(cache))
        model, tokenizer = M.load(M.DEFAULT_MODEL)
    return model, tokenizer, cache
