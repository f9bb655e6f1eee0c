"""LREC adapters merged into an elastic artifact as one more hosting option."""
import torch

from elastiq.elastic import Artifact, ElasticModel, build
from elastiq.lrec.elastic import correct_option
from elastiq.quant import LowRankAdded, weight_bytes

from conftest import make_tiny_llama


def test_corrected_option_joins_the_family(tmp_path, byte_tokenizer):
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun. " * 30)
    art = build(make_tiny_llama(), byte_tokenizer, tmp_path / "t.elastic", formats=["int8", "int3"],
                calib_text=text.read_text(), calib_name=str(text), calib_tokens=128, context=64, measure=2,
                progress=False)
    a = Artifact(art)
    last = a.family.options[-1]
    before = a.manifest["quality"]["measured"][str(last)]
    entry = correct_option(art, last, make_tiny_llama(), byte_tokenizer, rank=4, steps=6, context=64,
                           calib_tokens=512, adapter_dtype="bfloat16", progress=False)
    assert entry["kl"] < before  # the adapters pull the int3 option toward the float model
    assert len(entry["modules"]) == 14 and entry["bytes"] == sum(  # rank 4, bfloat16: 2 bytes a weight
        2 * 4 * (o + i) for o, i in (a.manifest["modules"][m]["shape"] for m in entry["modules"]))
    h = ElasticModel(art)
    extra = a.chain.n_options
    assert h.sizes[extra] == h.sizes[last] + entry["bytes"]
    h.apply_budget(int(h.sizes[extra]))
    if entry["kl"] < h.quality[h.best_option(int(h.sizes[extra]) - 1)]:
        assert h.option == extra
    h.swap(extra)
    assert sum(isinstance(m, LowRankAdded) for m in h.model.modules()) == 14
    assert weight_bytes(h.model) == h.sizes[extra]
    with torch.no_grad():
        assert torch.isfinite(h.model(torch.tensor([[1, 2, 3]])).logits).all()
