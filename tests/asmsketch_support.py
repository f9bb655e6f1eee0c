"""Shared helpers for the asmsketch tests: skips when a tool is absent, small cached corpora."""

from functools import lru_cache

import pytest

for _mod in ("z3", "unicorn", "elftools"):
    pytest.importorskip(_mod, reason=f"asmsketch tests need {_mod} (pip install -e '.[asmsketch]')")

from asmsketch.toolchain import have_llvm  # noqa: E402

needs_llvm = pytest.mark.skipif(not have_llvm(), reason="llc/llvm-mc (LLVM 14) not installed: "
                                "apt-get install llvm-14 (scripts/setup_asmsketch.sh)")


@lru_cache(maxsize=None)
def pairs(start: int = 500_000, n: int = 12):
    from asmsketch.corpus import build_pairs
    return tuple(build_pairs(range(start, start + n)))
