"""What checking an elastic copy costs: sha256 of the tensors an extreme swap of
SmolLM2-135M reads (80 MiB, in tensors the size of its int8 linear layers), against the
fstat that tells whether a file changed since its tensors were last checked. Why
elastiq.elastic.artifact re-hashes on change, not on every read (docs/security.md).

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
           "cpu": os.cpu_count(), "torch": torch.__version__}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verify_cost.json").write_text(json.dumps(out, indent=1))
    print(f"{out['mib']:.1f} MiB in {out['tensors']} tensors: sha256 {out['sha256_ms_median']:.0f} ms (median of "
          f"{repeats}; {out['sha256_mib_per_s']:.0f} MiB/s), fstat per tensor {out['fstat_ms_per_swap']:.2f} ms in all")


if __name__ == "__main__":
    main()
