"""The elastiq model for lm-evaluation-harness, on a tiny Llama: a rolling task over a local
text whose perplexity matches elastiq.perplexity, a multiple-choice task whose data ships in
tests/data/lm_eval, an elastic option, refusals."""
import json
from pathlib import Path

import pytest

import elastiq
from elastiq.errors import InputError

pytest.importorskip("lm_eval")
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from elastiq.interop.lm_eval_model import ElastiqLM, text_task, token_perplexity  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "lm_eval"
TEXT = ("Trees are perennial plants with an elongated stem, or trunk, usually supporting branches and leaves. "
        "In some usages, the definition of a tree may be narrower. ") * 12


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))


def test_rolling_perplexity_matches_elastiq_at_the_same_context(model_dir, tmp_path):
    folder, _ = model_dir
    lm = ElastiqLM(pretrained=str(folder), format="int8", max_length=64)
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": TEXT}) + "\n")
    out = simple_evaluate(model=lm, tasks=[text_task(data)], task_manager=TaskManager(include_defaults=False),
                          log_samples=True, bootstrap_iters=0)
    theirs = token_perplexity(out["samples"]["elastiq_text"], lm.tokenizer)
    model, tok = elastiq.load(folder)
    elastiq.quantize(model, "int8", progress=False)
    ours = elastiq.perplexity(model, tok, TEXT, context=64, progress=False)
    assert 200 < ours < 400  # a random tiny model over 256 byte tokens
    assert abs(theirs / ours - 1) < 0.005
    assert out["results"]["elastiq_text"]["word_perplexity,none"] > 1


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
