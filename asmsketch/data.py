"""The fixed corpus splits and the model cache used by the command, the benchmarks and the tests."""

from __future__ import annotations

import os

TRAIN_SEEDS = range(0, 6000)
DEV_SEEDS = range(100_000, 100_200)
TEST_SEEDS = range(200_000, 200_200)


def cache_dir() -> str:
    """ASMSKETCH_CACHE, else .cache/asmsketch at the repository root (ignored by git)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("ASMSKETCH_CACHE", os.path.join(here, ".cache", "asmsketch"))


def model_dir() -> str:
    return os.path.join(cache_dir(), "model")
