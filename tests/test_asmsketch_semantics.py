"""asmsketch: z3 instruction semantics against unicorn, and the bitmask-immediate rule."""

import pytest

from asmsketch_support import needs_llvm
from asmsketch import semcheck, semantics


@needs_llvm
@pytest.mark.parametrize("isa", ["arm", "riscv"])
def test_semantics_match_unicorn(isa):
    result = semcheck.check_isa(isa, n_instances=2, n_states=8, seed=1)
    assert len(result) == len(semcheck.TEMPLATES[isa])
    assert {t: m for t, m in result.items() if m} == {}


@needs_llvm
def test_a_wrong_semantics_is_caught(monkeypatch):
    real = semantics._rv_step

    def off_by_one(ins, st):
        st = real(ins, st)
        if ins.op == "xori":
            name = ins.args[0].name
            st[name] = st[name] + 1
        return st
    monkeypatch.setattr(semantics, "_rv_step", off_by_one)
    result = semcheck.check_isa("riscv", n_instances=1, n_states=5)
    assert result["xori R, R, S12"] == 5
    assert sum(result.values()) == 5


def test_bitmask_immediates():
    assert semantics.arm_logical_ok(0xFF)
    assert semantics.arm_logical_ok(0x5555555555555555)
    assert semantics.arm_logical_ok(0xFFFFFFFF00000000)
    assert not semantics.arm_logical_ok(0)
    assert not semantics.arm_logical_ok(2 ** 64 - 1)
    assert not semantics.arm_logical_ok(0x1234)
    assert semantics.arm_logical_ok(0xF0, 32) and not semantics.arm_logical_ok(0xFFFFFFFF, 32)
