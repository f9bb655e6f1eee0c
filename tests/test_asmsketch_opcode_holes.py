"""asmsketch: opcode holes. The solver chooses a line's opcode among the model's own next choices that
run with the line's operands; the semantics of the choice, the solver, the fill and the pipeline."""

import random

import pytest
import z3

from asmsketch_support import needs_llvm, pairs
from asmsketch import model, pipeline, tokens
from asmsketch.asm import Imm, Instr, Reg
from asmsketch.semantics import OpChoice, pure_blocks, step
from asmsketch.sketch import OPCODE, Hole, fill, solve_block

SWAPS = {"arm": {"add": "sub", "sub": "add", "eor": "orr", "orr": "eor", "lsl": "lsr", "lsr": "lsl",
                 "asr": "lsr", "and": "orr"},
         "riscv": {"add": "sub", "sub": "add", "addw": "subw", "subw": "addw", "xor": "or", "or": "xor",
                   "and": "or", "slli": "srli", "srli": "slli", "srai": "srli", "sll": "srl", "srl": "sll",
                   "xori": "ori", "ori": "xori", "andi": "ori"}}


@pytest.mark.parametrize("isa, ops, args", [
    ("riscv", ("add", "sub", "xor", "sll"), [Reg("a0"), Reg("a1"), Reg("a2")]),
    ("riscv", ("addiw", "xori", "slti"), [Reg("a0"), Reg("a1"), Imm(-7)]),
    ("arm", ("lsl", "lsr", "asr", "ror"), [Reg("w0"), Reg("w1"), Imm(5)]),
    ("arm", ("add", "sub", "mul"), [Reg("x0"), Reg("x1"), Reg("x2")]),
])
def test_an_opcode_choice_computes_the_chosen_variant(isa, ops, args):
    """For every selector value, the merged state equals that variant's own state, for all inputs."""
    regs = ["x1", "x2", "x0"] if isa == "arm" else ["a1", "a2", "a0"]
    st = {r: z3.BitVec(r, 64) for r in regs}
    sel = z3.BitVec("sel", 64)
    variants = tuple(Instr(op, args) for op in ops)
    merged = step(isa, OpChoice(variants, sel), dict(st))
    dest = regs[-1]
    for i, v in enumerate(variants):
        own = step(isa, v, dict(st))
        s = z3.Solver()
        s.add(sel == i, merged[dest] != own[dest])
        assert s.check() == z3.unsat, (ops[i], args)


def _body(isa, text):
    return pipeline.parse_body(isa, text)


def test_the_solver_picks_the_opcode_that_makes_the_blocks_equal():
    src = _body("arm", "\tsub x0, x0, x1\n")
    tgt = _body("riscv", "\tadd a0, a0, a1\n")
    hole = Hole(0, OPCODE)
    res = solve_block(src, (0, 1), tgt, (0, 1), [hole], {"a0": "x0", "a1": "x1"}, [("a0", "x0")],
                      op_options={hole: ("add", "xor", "sub")})
    assert res.values == {hole: "sub"} and res.reason == "equivalent"
    res = solve_block(src, (0, 1), tgt, (0, 1), [hole], {"a0": "x0", "a1": "x1"}, [("a0", "x0")],
                      op_options={hole: ("add", "xor")})
    assert res.values is None  # the right opcode is not among the options: no fix, never a wrong one


def test_an_opcode_and_an_immediate_are_solved_together():
    """x - 5 guessed as x + 3: the opcode hole takes sub, and the immediate under sub's encoding 5."""
    src = _body("riscv", "\taddi a0, a0, -5\n")
    tgt = _body("arm", "\tadd x0, x0, #3\n")
    holes = [Hole(0, 2), Hole(0, OPCODE)]
    res = solve_block(src, (0, 1), tgt, (0, 1), holes, {"x0": "a0"}, [("x0", "a0")],
                      op_options={Hole(0, OPCODE): ("add", "sub")})
    assert res.values == {Hole(0, 2): 5, Hole(0, OPCODE): "sub"}
    assert fill(tgt, res.values).text(with_header=False).split() == ["sub", "x0,", "x0,", "#5"]


def test_an_immediate_hole_keeps_the_encoding_of_the_chosen_opcode():
    """orr takes only bitmask immediates: x | 6 guessed as add x, #?, with the opcode free among add and
    orr, the solver may use either, but an orr fill must be a bitmask immediate (6 = 0b110 is one)."""
    src = _body("riscv", "\tori a0, a0, 6\n")
    tgt = _body("arm", "\tadd x0, x0, #1\n")
    holes = [Hole(0, 2), Hole(0, OPCODE)]
    res = solve_block(src, (0, 1), tgt, (0, 1), holes, {"x0": "a0"}, [("x0", "a0")],
                      op_options={Hole(0, OPCODE): ("add", "orr")})
    assert res.values == {Hole(0, 2): 6, Hole(0, OPCODE): "orr"}


def _hyp_with_alternatives(body_tokens, probs, alternatives, src_len):
    return model.Hypothesis(body_tokens, -1.0, probs, [[1.0 / src_len] * src_len for _ in body_tokens],
                            alternatives)


def test_opcode_options_keep_the_alternatives_that_run_with_the_operands():
    f = _body("riscv", "\tadd a0, a0, a1\n\taddi a0, a0, 3\n")
    toks = tokens.tokenize_text(f.text(with_header=False))
    rl = tokens.roles(toks, {"a0", "a1"})
    alts = [[(t, 1.0)] for t in toks]
    ops = [i for i, r in enumerate(rl) if r.kind == "op"]
    alts[ops[0]] = [("add", 0.5), ("sub", 0.3), ("ld", 0.1), ("addi", 0.05)]  # a load; an immediate form
    alts[ops[1]] = [("addi", 0.6), ("xori", 0.2), ("slli", 0.1), ("add", 0.1)]
    probs = [0.99] * len(toks)
    probs[ops[0]] = 0.5
    hyp = _hyp_with_alternatives(toks, probs, alts, 4)
    got = pipeline.opcode_options(hyp, f, pure_blocks(f), rl)
    assert got == {0: (("add", "sub"), 0.5), 1: (("addi", "xori", "slli"), 0.99)}


@needs_llvm
@pytest.mark.parametrize("src, tgt", [("arm", "riscv"), ("riscv", "arm")])
def test_guess_and_sketch_repairs_an_uncertain_opcode(src, tgt):
    """The compiled target with one opcode swapped for another of the same operands, marked unsure, the
    right one the model's second choice: the opcode stage repairs it (and the random ablation gets as
    many opcode holes)."""
    fixed = tried = 0
    for p in pairs():
        s_func = pipeline.parse_body(src, p.text(src))
        t_func = pipeline.parse_body(tgt, p.text(tgt))
        blocks = pure_blocks(t_func)
        if len(pure_blocks(s_func)) != 1 or len(blocks) != 1:
            continue
        toks = tokens.tokenize_text(p.text(tgt))
        rl = tokens.roles(toks, set())
        spots = [i for i, r in enumerate(rl) if r.kind == "op" and blocks[0][0] <= r.line < blocks[0][1]
                 and toks[i] in SWAPS[tgt]]
        if not spots:
            continue
        i = spots[0]
        bad, probs = list(toks), [0.99] * len(toks)
        right, bad[i], probs[i] = toks[i], SWAPS[tgt][toks[i]], 0.4
        alts = [[(t, q)] for t, q in zip(bad, probs)]
        alts[i] = [(bad[i], 0.4), (right, 0.35)]
        src_toks = [tokens.TO[tgt]] + tokens.tokenize_text(p.text(src)) + [tokens.EOS]
        hyp = _hyp_with_alternatives(bad, probs, alts, len(src_toks))
        before, = pipeline.verify(src, p.text(src), tgt, [tokens.detokenize(bad)], p.nargs)
        if before:
            continue  # the swap happened to be harmless
        tried += 1
        cand = pipeline.sketch_candidate(hyp, src_toks, s_func, tgt, 0.5, pipeline.NO_ALIGN, opcode_holes=True)
        fixed += pipeline.verify(src, p.text(src), tgt, [cand.body], p.nargs)[0]
        without = pipeline.sketch_candidate(hyp, src_toks, s_func, tgt, 0.5, pipeline.NO_ALIGN)
        assert all(h[1] != OPCODE for s in without.sketches for h in s.holes)  # an option, off by default
        r = pipeline.sketch_candidate(hyp, src_toks, s_func, tgt, 0.5, pipeline.RANDOM_HOLES, random.Random(0),
                                      opcode_holes=True)
        assert sum(h[1] == OPCODE for s in r.sketches for h in s.holes) <= 1
        if tried == 6:
            break
    assert tried >= 3
    assert fixed >= tried - 1
