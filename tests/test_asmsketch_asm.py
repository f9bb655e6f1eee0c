"""asmsketch: parser, printer, tokenizer, blocks and liveness."""

import pytest

from asmsketch_support import needs_llvm, pairs
from asmsketch.asm import Imm, Mem, Reg, Shift, basic_blocks, live_after, parse_functions, parse_line
from asmsketch.errors import AsmSketchError
from asmsketch.tokens import detokenize, roles, tokenize_text
from asmsketch.isa import REGS


def test_parse_operands_both_isas():
    ins = parse_line("arm", "movk w9, #0x1, lsl #16")
    assert ins.op == "movk" and ins.args == [Reg("w9"), Imm(1), Shift("lsl", 16)]
    assert parse_line("arm", "str x0, [sp, #-16]!").args == [Reg("x0"), Mem("sp", -16, True)]
    assert parse_line("riscv", "ld a0, 24(sp)").args == [Reg("a0"), Mem("sp", 24)]
    assert parse_line("riscv", "addi a0, a0, -2048").args[2] == Imm(-2048)


@pytest.mark.parametrize("isa, line", [("arm", "add x0, x1, q7"), ("riscv", "lui a1, %hi(.LCPI0_0)"),
                                       ("arm", "ldr x0, [q9, #8]"), ("riscv", "123 a0")])
def test_malformed_lines_raise_one_clear_error(isa, line):
    with pytest.raises(AsmSketchError):
        parse_line(isa, line)


def test_file_without_function_is_an_error():
    with pytest.raises(AsmSketchError, match="no function"):
        parse_functions("arm", "\t.text\n")


@needs_llvm
@pytest.mark.parametrize("isa", ["arm", "riscv"])
def test_print_parse_and_tokens_round_trip(isa):
    from asmsketch.corpus import wrap_function
    for p in pairs():
        body = p.text(isa)
        f = parse_functions(isa, wrap_function("fn", body))[0]
        assert f.text(with_header=False) == body
        toks = tokenize_text(body)
        assert detokenize(toks) == body
        rl = roles(toks, REGS[isa])
        assert sum(r.kind == "op" for r in rl) == len(f.body)
        # every digit token sits in an operand that holds an integer
        for t, r in zip(toks, rl):
            if r.kind == "imm":
                assert isinstance(f.body[r.line].args[r.operand], (Imm, Shift, Mem))


def test_immediates_split_into_digits():
    toks = tokenize_text("\taddi a0, a0, -123\n")
    assert toks == ["addi", "a0", ",", "a0", ",", "-", "1", "2", "3", "<nl>"]


def test_blocks_and_liveness_of_a_diamond():
    text = """f:
\tbeqz a0, .L1
\taddi a1, a0, 5
\tj .L2
.L1:
\tli a1, 7
.L2:
\tmv a0, a1
\tret
"""
    f = parse_functions("riscv", text)[0]
    assert [(b.start, b.end) for b in basic_blocks(f)] == [(0, 1), (1, 3), (3, 4), (4, 6)]
    live = live_after(f)
    assert live[1] == {"a1", "ra"} and live[3] == {"a1", "ra"} and live[4] == {"a0", "ra"}  # ret reads ra
