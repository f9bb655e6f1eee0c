"""What checking costs. (1) An elastic copy: sha256 of the tensors an extreme swap of
SmolLM2-135M reads (80 MiB, in tensors the size of its int8 linear layers), against the
fstat that tells whether a file changed since its tensors were last checked: why
elastiq.elastic.artifact re-hashes on change, not on every read. (2) The GGUF cache key:
the built-in SmolLM2 file's full sha256 on first sight, and the remembered answer after
(elastiq.models.from_gguf.fingerprint). See docs/security.md and docs/models.md.

    .venv/bin/python bench/verify_cost.py        # a few seconds

Writes bench/results/verify_cost.json.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elastiq.elastic.artifact import tensor_sha256  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # one decoder layer


def gguf_key_cost() -> dict:
    """Seconds for the built-in GGUF file's cache key: hashed (first sight), then remembered."""
    from elastiq.models import BUILTIN

    try:
        path = BUILTIN["smollm2-135m"].gguf_path()
    except (ImportError, FileNotFoundError):
        return {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ELASTIQ_CACHE"] = cache
        from elastiq.models.from_gguf import fingerprint

        path.read_bytes()  # page cache warm, as for any later load
        t0 = time.perf_counter()
        fingerprint(path)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        fingerprint(path)
        again = time.perf_counter() - t0
    return {"gguf_bytes": path.stat().st_size, "gguf_key_first_s": first, "gguf_key_remembered_s": again}


def main(repeats: int = 7) -> None:
    g = torch.Generator().manual_seed(0)
    tensors, total = [], 0
    while total < 80 * 2**20:
        for rows, cols in SHAPES:
            t = torch.randint(0, 256, (rows * cols,), dtype=torch.uint8, generator=g)
            tensors.append(t)
            total += t.numel()
    hash_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for t in tensors:
            tensor_sha256(t)
        hash_s.append(time.perf_counter() - t0)
    with tempfile.NamedTemporaryFile() as f:
        fd = f.fileno()
        t0 = time.perf_counter()
        for _ in tensors:
            os.fstat(fd)
        fstat_s = time.perf_counter() - t0
    out = {"mib": total / 2**20, "tensors": len(tensors), "repeats": repeats,
           "sha256_ms_median": statistics.median(hash_s) * 1e3, "sha256_ms_all": [s * 1e3 for s in hash_s],
           "sha256_mib_per_s": total / 2**20 / statistics.median(hash_s), "fstat_ms_per_swap": fstat_s * 1e3,
           "cpu": os.cpu_count(), "torch": torch.__version__, **gguf_key_cost()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verify_cost.json").write_text(json.dumps(out, indent=1))
    print(f"{out['mib']:.1f} MiB in {out['tensors']} tensors: sha256 {out['sha256_ms_median']:.0f} ms (median of "
          f"{repeats}; {out['sha256_mib_per_s']:.0f} MiB/s), fstat per tensor {out['fstat_ms_per_swap']:.2f} ms in all")
    if "gguf_bytes" in out:
        print(f"GGUF cache key of the {out['gguf_bytes'] / 1e6:.0f} MB SmolLM2 file: {out['gguf_key_first_s']:.3f} s hashed, "
              f"{out['gguf_key_remembered_s'] * 1e3:.2f} ms remembered")


if __name__ == "__main__":
    main()
