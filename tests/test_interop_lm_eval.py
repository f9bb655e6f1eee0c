"""The elastiq model for lm-evaluation-harness, on a tiny Llama: a rolling task over a local
text whose perplexity matches elastiq.perplexity, a multiple-choice task whose data ships in
tests/data/lm_eval, an elastic option, refusals."""
import math
from pathlib import Path

import pytest

import elastiq
import elastiq.evaluate
from elastiq.errors import InputError

pytest.importorskip("lm_eval")
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from elastiq.interop.lm_eval_model import ElastiqLM, documents, rolling_perplexity  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "lm_eval"
TEXT = ("Trees are perennial plants with an elongated stem, or trunk, usually supporting branches and leaves. "
        "In some usages, the definition of a tree may be narrower. ") * 12


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))


def rolling_ppl(lm, docs, tmp_path):
    ppl, metrics = rolling_perplexity(lm, docs, tmp_path)
    assert metrics["word_perplexity,none"] > 1
    return ppl


def test_rolling_perplexity_equals_elastiq_on_the_same_windows(model_dir, tmp_path):
    """Documents of context - 1 tokens: lm-eval scores each after its prefix token, and so does
    elastiq.perplexity with bos_id: the same tokens, the same context, the same number."""
    folder, _ = model_dir
    lm = ElastiqLM(pretrained=str(folder), format="int8", max_length=64)
    model, tok = elastiq.load(folder)
    elastiq.quantize(model, "int8", progress=False)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    docs = documents(tok, ids, 63)
    assert len(docs) == -(-len(ids) // 63) and sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs) == len(ids)
    parts = [elastiq.evaluate.evaluate(model, tok, d, context=64, bos_id=lm.prefix_token_id, progress=False) for d in docs]
    assert sum(p.tokens for p in parts) == len(ids)  # every token scored, the first of each from the prefix token
    ours = math.exp(sum(math.log(p.perplexity) * p.tokens for p in parts) / len(ids))
    theirs = rolling_ppl(lm, docs, tmp_path)
    assert 200 < ours < 400  # a random tiny model over 256 byte tokens
    assert abs(math.log(theirs) - math.log(ours)) < 1e-4  # mean log-likelihood per token


def test_one_document_differs_from_elastiq_only_by_lm_evals_convention(model_dir, tmp_path):
    """One document: lm-eval scores its first token from the prefix token, which also opens
    its first window; elastiq does not score the first token. Both agree with a direct sum."""
    import torch

    folder, _ = model_dir
    lm = ElastiqLM(pretrained=str(folder), max_length=64)
    ids = torch.tensor(lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"])

    def nll(inputs, targets):
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(inputs[None]).logits[0, -len(targets):].double(), -1)
        return -float(logp[torch.arange(len(targets)), targets].sum())

    # lm-eval: [prefix] + ids[:63] scores ids[:64]; each later window scores the next (up to) 64 tokens
    # from the 64 tokens before its last one (so a short last window reaches back for context)
    total = nll(torch.cat([torch.tensor([lm.prefix_token_id]), ids[:63]]), ids[:64])
    for begin in range(64, len(ids), 64):
        end = min(begin + 64, len(ids))
        total += nll(ids[end - 65:end - 1], ids[begin:end])
    theirs = rolling_ppl(lm, [TEXT], tmp_path)
    assert abs(math.log(theirs) - total / len(ids)) < 1e-4
    model, tok = elastiq.load(folder)
    ours = elastiq.evaluate.evaluate(model, tok, TEXT, context=64, progress=False)
    assert ours.tokens == len(ids) - 1


def test_documents_refuses_ids_that_do_not_round_trip(model_dir):
    folder, _ = model_dir
    _, tok = elastiq.load(folder)

    class Lossy:  # decodes every id to the same text
        def decode(self, ids):
            return "x" * len(ids)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [120] * len(text)}
    with pytest.raises(InputError, match="token 0"):
        documents(Lossy(), [5, 6, 7], 2)
    assert documents(Lossy(), [120, 120, 120], 2) == ["xx", "x"]


def test_a_multiple_choice_task_shipped_with_the_tests_runs_end_to_end(model_dir, monkeypatch):
    folder, _ = model_dir
    monkeypatch.chdir(DATA.parents[2])  # the task names its data relative to the repository root
    lm = ElastiqLM(pretrained=str(folder), format="nxfp4", max_length=64)
    out = simple_evaluate(model=lm, tasks=["elastiq_mc"], task_manager=TaskManager(include_path=str(DATA), include_defaults=False),
                          log_samples=True, bootstrap_iters=0)
    assert len(out["samples"]["elastiq_mc"]) == 8
    assert 0 <= out["results"]["elastiq_mc"]["acc,none"] <= 1


def test_an_elastic_option_and_refusals(tmp_path, byte_tokenizer, model_dir):
    from elastiq.elastic import build

    from conftest import make_tiny_llama

    art = build(make_tiny_llama(), byte_tokenizer, tmp_path / "a.elastic", formats=["int8", "int4"], calib_text=TEXT,
                calib_tokens=64, context=32, measure=2, progress=False)
    lm = ElastiqLM(pretrained=str(art), budget="1MiB", max_length=64)
    assert lm.loaded["option"] is not None
    with pytest.raises(InputError, match="packed already"):
        ElastiqLM(pretrained=str(art), format="int4")
    with pytest.raises(InputError, match="not one"):
        ElastiqLM(pretrained=str(model_dir[0]), option=3)
