"""asmsketch: tier A corpus agreement under unicorn, the CEGIS solver, and the rule-based peer."""


from asmsketch_support import needs_llvm, pairs
from asmsketch import baseline, corpus, trials
from asmsketch.pipeline import parse_body, verify, verify_many

pytestmark = needs_llvm


def test_generator_is_deterministic():
    assert corpus.generate_function(7, "f") == corpus.generate_function(7, "f")
    assert corpus.generate_function(7, "f") != corpus.generate_function(8, "f")


def test_pairs_agree_under_unicorn():
    ps = pairs()
    assert len(ps) == 36  # 12 functions x 3 levels
    assert corpus.check_pairs(list(ps), n_inputs=30) == []


def test_execution_gives_known_values():
    ir = "define i64 @f(i64 %a, i64 %b) {\n  %t = mul i64 %a, 3\n  %u = sub i64 %t, %b\n  ret i64 %u\n}\n"
    from asmsketch.asm import normalize_labels, parse_functions
    from asmsketch.toolchain import compile_ir
    for isa in ("arm", "riscv"):
        f = normalize_labels(parse_functions(isa, compile_ir(ir, isa, 2))[0])
        got = corpus.run_text(isa, f.text(with_header=False), [(5, 4), (-1 & (2**64 - 1), 0)])
        assert got == [11, (-3) & (2**64 - 1)]


def test_a_corrupted_candidate_fails_execution():
    p = next(p for p in pairs() if p.opt == 2 and "addi" in p.riscv)
    bad = p.riscv.replace("addi", "xori", 1)
    assert verify("arm", p.arm, "riscv", [p.riscv, bad], p.nargs, 30) == [True, False]


def test_solver_fills_corrupted_immediates():
    ts = trials.make_trials(pairs(500_000, 30), n=12, seed=3)
    assert len(ts) == 12
    s = trials.summarize(ts)
    assert s["fill_fails_execution"] == 0
    assert s["fixed_share"] >= 11 / 12  # (12/12 here) bench/transpile.py --phase solver measures 500


def test_corrupted_opcode_is_never_a_false_pass():
    ts = trials.make_trials(pairs(500_000, 30), n=10, seed=4, opcode=True)
    s = trials.summarize(ts)
    assert s["fill_fails_execution"] == 0  # z3's "equivalent" is never contradicted by execution
    assert s["no_fix_share"] >= 0.6  # some swaps have an equivalent fill (e.g. add <-> sub with -imm)


def test_rule_based_peer_translates_most_functions():
    ps = list(pairs())
    for s, t in (("arm", "riscv"), ("riscv", "arm")):
        outs = [[baseline.transpile(parse_body(s, p.text(s)))] for p in ps]
        ok = verify_many(s, [p.text(s) for p in ps], t, outs, [p.nargs for p in ps], 20)
        assert sum(r[0] for r in ok) >= 0.9 * len(ps)


def test_products_of_holes_are_solved_by_matching_operands():
    """(x << 20 >>> 19) - 3, squared, << 20: the target's shift amounts, bit-field and constant are
    holes that feed a multiplication. Matching the two products operand for operand leaves z3 no
    multiplier to bit-blast, so a small budget suffices."""
    from asmsketch.sketch import Hole, solve_block
    src = parse_body("riscv", "\tslli a0, a0, 20\n\tsrli a0, a0, 19\n\taddi a0, a0, -3\n"
                              "\tmul a0, a0, a0\n\tslli a0, a0, 20\n")
    tgt = parse_body("arm", "\tubfiz x8, x0, #2, #40\n\tsub x8, x8, #7\n\tmul x8, x8, x8\n\tlsl x0, x8, #9\n")
    holes = [Hole(0, 2), Hole(0, 3), Hole(1, 2), Hole(3, 2)]
    res = solve_block(src, (0, 5), tgt, (0, 4), holes, {"x0": "a0"}, [("x0", "a0")], timeout_ms=1000)
    assert res.values == {Hole(0, 2): 1, Hole(0, 3): 44, Hole(1, 2): 3, Hole(3, 2): 20}
    assert res.reason == "equivalent"
