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


@pytest.mark.parametrize("width", [64, 32])
def test_bitmask_domain_in_z3_is_the_bitmask_rule(width):
    import random
    import z3
    v = z3.BitVec("v", width)
    dom = semantics.arm_logical_domain(v, width)
    rng = random.Random(width)
    values = [rng.getrandbits(width) for _ in range(150)]
    for e in (2, 4, 8, 16, 32, 64)[: 5 if width == 32 else 6]:  # replicated elements: mostly immediates
        values += [sum(el << k for k in range(0, width, e)) for el in (rng.getrandbits(e) for _ in range(25))]
        values += [sum(((1 << rng.randint(1, e - 1)) - 1) << k for k in range(0, width, e)) for _ in range(10)]
    assert sum(semantics.arm_logical_ok(x, width) for x in values) > 50
    for x in values:
        got = z3.is_true(z3.simplify(z3.substitute(dom, (v, z3.BitVecVal(x, width)))))
        assert got == semantics.arm_logical_ok(x, width), hex(x)


@needs_llvm
@pytest.mark.parametrize("wide", [True, False])
def test_mov_hole_domain_values_assemble(wide):
    """Values z3 picks inside the mov domain (pushed towards odd corners) are ones llvm-mc encodes."""
    import random
    import z3
    from asmsketch.toolchain import assemble
    h = z3.BitVec("h", 64)
    rng = random.Random(int(wide))
    lines = []
    for _ in range(12):
        s = z3.Solver()
        s.add(semantics.arm_mov_domain(h, wide), z3.Extract(7, 0, h) == rng.getrandbits(8) | 1)
        assert s.check() == z3.sat
        lines.append(f"\tmov {'x' if wide else 'w'}9, #{s.model()[h].as_signed_long()}")
    code = assemble("\n".join(lines) + "\n", "arm")
    assert len(code.data) == 4 * len(lines)  # each a single instruction: movz, movn or orr
