"""An ``elastiq`` model for lm-evaluation-harness 0.4.x: a packed model, or one option of
an elastic artifact, scored through lm-eval's own Hugging Face model class (HFLM), which
takes a loaded transformers model; only the loading is elastiq's.

    elastiq lm-eval run --model elastiq --model_args pretrained=smollm2-135m,format=nxfp4 --tasks ...
    elastiq lm-eval run --model elastiq --model_args pretrained=A.elastic,budget=100MiB --tasks ...

(lm-eval finds no third-party models by itself, so ``elastiq lm-eval`` is lm-eval's command
line with this model registered first; in Python, importing this module registers it.)
"""
from __future__ import annotations

from lm_eval.api.registry import get_model, register_model
from lm_eval.models.huggingface import HFLM

from elastiq.errors import InputError

NAME = "elastiq"


def load_for_eval(pretrained: str, format: str | None = None, embedding: str | None = None, option=None,
                  budget: str | None = None):
    """(model, tokenizer, what was loaded): a model elastiq loads, packed in ``format`` if
    given, or an elastic artifact's ``option`` (or the best option in ``budget``)."""
    from elastiq.elastic.artifact import is_artifact

    if is_artifact(pretrained):
        from elastiq.elastic import ElasticModel, parse_bytes

        if format or embedding:
            raise InputError("format and embedding pack a model; an elastic artifact's options are packed already")
        host = ElasticModel(pretrained)
        if budget is not None:
            host.apply_budget(parse_bytes(str(budget)))
        else:
            host.swap(host.options[0] if option is None else int(option))
        return host.model, host.tokenizer, {"artifact": str(pretrained), "option": host.option}
    if option is not None or budget is not None:
        raise InputError(f"option and budget pick an option of an elastic artifact; {pretrained} is not one")
    import elastiq

    model, tokenizer = elastiq.load(pretrained)
    if format:
        elastiq.quantize(model, format, embedding=embedding, progress=False)
    return model, tokenizer, {"model": str(pretrained), "format": format, "embedding": embedding}


class ElastiqLM(HFLM):
    def __init__(self, pretrained: str, format: str | None = None, embedding: str | None = None, option=None,
                 budget: str | None = None, max_length: int | None = 1024, batch_size=1, device: str | None = "cpu",
                 **kwargs):
        from elastiq.quant.io import module_entries

        from .hf_quantizer import untie

        model, tokenizer, self.loaded = load_for_eval(str(pretrained), format, embedding, option, budget)
        untie(model, module_entries(model))  # HFLM ties weights again; a packed head shares the embedding already
        super().__init__(pretrained=model, tokenizer=tokenizer, backend="causal", device=device or "cpu", max_length=max_length,
                         batch_size=batch_size, **kwargs)


try:
    get_model(NAME)
except ValueError:  # not registered yet (importing twice registers once)
    register_model(NAME)(ElastiqLM)


def text_task(jsonl, name: str = "elastiq_text") -> dict:
    """An lm-eval task config scoring each document (``{"text": ...}`` lines of a local
    JSON-lines file) with loglikelihood_rolling, as lm-eval's wikitext task does."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(jsonl)}},
            "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
            "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}]}


def documents(tokenizer, ids, size: int) -> list[str]:
    """Token ids cut into texts of at most ``size`` tokens, each cut where its text tokenizes
    back to exactly its ids: documents that lm-eval and ``elastiq.perplexity`` score token
    for token alike (one window each when ``size`` < the context)."""
    ids = [int(i) for i in ids]
    out, begin = [], 0
    while begin < len(ids):
        end = min(begin + size, len(ids))
        while tokenizer(text := tokenizer.decode(ids[begin:end]), add_special_tokens=False)["input_ids"] != ids[begin:end]:
            end -= 1  # a cut inside a word, or a piece that decodes differently: cut earlier
            if end == begin:
                raise InputError(f"token {begin} does not decode to text that tokenizes back to it: cannot cut documents here")
        out.append(text)
        begin = end
    return out


def rolling_perplexity(lm, docs: list[str], folder) -> tuple[float, dict]:
    """(per-token perplexity, lm-eval's metrics) of ``docs`` scored by ``lm`` as documents of a
    local rolling task (``text_task``), whose data file is written in ``folder``."""
    import json
    from pathlib import Path

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = Path(folder) / "text.jsonl"
    data.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    out = simple_evaluate(model=lm, tasks=[text_task(data)], task_manager=TaskManager(include_defaults=False),
                          log_samples=True, bootstrap_iters=0)
    return token_perplexity(out["samples"]["elastiq_text"], lm.tokenizer), out["results"]["elastiq_text"]


def token_perplexity(samples: list[dict], tokenizer) -> float:
    """Per-token perplexity of a rolling task's logged samples: their summed log-likelihood
    over the tokens of their documents (lm-eval scores each document's every token, the
    first after its prefix token)."""
    import math

    total = sum(float(s["filtered_resps"][0]) if not isinstance(s["filtered_resps"][0], (list, tuple))
                else float(s["filtered_resps"][0][0]) for s in samples)
    tokens = sum(len(tokenizer(s["doc"]["text"], add_special_tokens=False)["input_ids"]) for s in samples)
    return math.exp(-total / tokens)
