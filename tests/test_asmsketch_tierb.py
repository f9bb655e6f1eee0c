"""asmsketch tier B: cross-GCC programs under qemu-user (skips where the tools are not installed)."""

import random

import pytest

from asmsketch_support import needs_llvm, pairs
from asmsketch import tierb
from asmsketch.corpus import random_inputs, run_text

pytestmark = [needs_llvm, pytest.mark.skipif(not tierb.have_tier_b(), reason=f"tier B tools missing: {tierb.HINT}")]


def test_there_are_twenty_programs():
    assert len(tierb.program_names()) >= 20


@pytest.mark.parametrize("name", ["euler1", "gcd", "crc32"])
def test_programs_agree_across_isas(name):
    a, r = tierb.run_program(name, "arm"), tierb.run_program(name, "riscv")
    assert a == r and a.strip()


def test_known_output():
    assert tierb.run_program("euler1", "riscv").strip() == "233168"


def test_function_in_a_whole_program_matches_unicorn():
    p = pairs()[4]
    inputs = random_inputs(random.Random(0), p.nargs, 6)
    for isa in ("arm", "riscv"):
        out = tierb.run_function_program(isa, p.text(isa), p.nargs, inputs)
        want = [v - (1 << 64) if v >> 63 else v for v in run_text(isa, p.text(isa), inputs)]
        assert [int(x) for x in out.split()] == want
