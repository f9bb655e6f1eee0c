"""Differential check of the z3 semantics against unicorn on random machine states.

Every instruction form in `TEMPLATES` is instantiated with random registers and immediates,
assembled by llvm-mc, run one instance at a time under unicorn from random register values, and
compared with the z3 semantics evaluated on the same values.
"""

from __future__ import annotations

import random

import z3
from unicorn import arm64_const as A
from unicorn import riscv_const as R

from .asm import parse_line
from .emulate import Machine
from .isa import ARM, RISCV, canonical_reg
from .semantics import arm_logical_ok, step
from .toolchain import assemble

ARM_POOL = [f"x{i}" for i in range(1, 16)]
RV_POOL = ["a0", "a1", "a2", "a3", "a4", "a5", "t0", "t1", "t2", "s1"]

_arm3 = ["add", "sub", "adds", "subs", "and", "orr", "eor", "bic", "orn", "eon", "ands"]
ARM_TEMPLATES = (
    [f"{o} X, X, X" for o in _arm3] + [f"{o} W, W, W" for o in _arm3]
    + [f"{o} X, X, X, {s} #SH" for o in _arm3 for s in ("lsl", "lsr", "asr")]
    + ["add X, X, #U12", "sub X, X, #U12", "add X, X, #U12, lsl #12", "sub W, W, #U12", "add W, W, #U12",
       "adds X, X, #U12", "subs X, X, #U12",
       "and X, X, #BM", "orr X, X, #BM", "eor X, X, #BM", "and W, W, #BM32", "ands X, X, #BM",
       "mul X, X, X", "mul W, W, W", "madd X, X, X, X", "msub X, X, X, X", "mneg X, X, X",
       "madd W, W, W, W", "smulh X, X, X", "umulh X, X, X",
       "mvn X, X", "mvn W, W", "neg X, X", "neg W, W", "negs X, X", "mvn X, X, lsl #SH",
       "lsl X, X, #SH", "lsr X, X, #SH", "asr X, X, #SH", "ror X, X, #SH", "lsl W, W, #SH32",
       "lsr W, W, #SH32", "asr W, W, #SH32", "lsl X, X, X", "lsr X, X, X", "asr X, X, X", "ror X, X, X",
       "lsl W, W, W", "asr W, W, W",
       "mov X, X", "mov W, W", "mov X, #MOVX", "mov W, #U16", "movz X, #U16, lsl #HW", "movk X, #U16, lsl #HW",
       "movn X, #U16, lsl #HW", "movk W, #U16, lsl #HW32", "movz W, #U16",
       "sxtw X, W", "sxth X, W", "sxtb X, W", "uxtb W, W", "uxth W, W",
       "ubfx X, X, #0, #8", "sbfx X, X, #3, #20", "ubfiz X, X, #4, #12", "sbfiz X, X, #2, #30", "ubfx W, W, #5, #9"]
)
_rv3 = ["add", "sub", "mul", "mulh", "mulhu", "mulhsu", "and", "or", "xor", "sll", "srl", "sra", "slt", "sltu",
        "addw", "subw", "mulw", "sllw", "srlw", "sraw"]
RV_TEMPLATES = (
    [f"{o} R, R, R" for o in _rv3]
    + [f"{o} R, R, S12" for o in ("addi", "andi", "ori", "xori", "slti", "sltiu", "addiw")]
    + [f"{o} R, R, SH" for o in ("slli", "srli", "srai")] + [f"{o} R, R, SH32" for o in ("slliw", "srliw", "sraiw")]
    + ["lui R, U20", "li R, S64", "li R, S12", "mv R, R", "neg R, R", "negw R, R", "not R, R", "sext.w R, R",
       "seqz R, R", "snez R, R", "sltz R, R", "sgtz R, R"]
)
TEMPLATES = {ARM: ARM_TEMPLATES, RISCV: RV_TEMPLATES}


def random_bitmask(rng: random.Random, width: int = 64) -> int:
    while True:
        size = rng.choice([s for s in (2, 4, 8, 16, 32, 64) if s <= width])
        ones = rng.randrange(1, size)
        elem = (1 << ones) - 1
        rot = rng.randrange(size)
        elem = ((elem >> rot) | (elem << (size - rot))) & ((1 << size) - 1)
        v = 0
        for i in range(width // size):
            v |= elem << (i * size)
        if arm_logical_ok(v, width):
            return v


def instantiate(isa: str, template: str, rng: random.Random) -> str:
    pool = ARM_POOL if isa == ARM else RV_POOL
    fills = {
        "X": lambda: rng.choice(pool), "W": lambda: "w" + rng.choice(pool)[1:], "R": lambda: rng.choice(pool),
        "U12": lambda: str(rng.randrange(4096)), "U16": lambda: str(rng.randrange(65536)),
        "SH32": lambda: str(rng.randrange(32)), "SH": lambda: str(rng.randrange(64)),
        "HW32": lambda: str(rng.choice((0, 16))), "HW": lambda: str(rng.choice((0, 16, 32, 48))),
        "BM32": lambda: str(random_bitmask(rng, 32)), "BM": lambda: str(random_bitmask(rng)),
        "MOVX": lambda: str(rng.choice((rng.randrange(65536), -rng.randrange(1, 65537)))),
        "S12": lambda: str(rng.randrange(-2048, 2048)), "U20": lambda: str(rng.randrange(1 << 20)),
        "S64": lambda: str(rng.randrange(-(1 << 63), 1 << 63)),
    }
    out = []
    for tok in template.replace(",", " , ").split():
        key = tok.lstrip("#")
        out.append(tok[: len(tok) - len(key)] + fills[key]() if key in fills else tok)
    return " ".join(out).replace(" , ", ", ")


def _uc_reg(isa: str, name: str):
    if isa == ARM:
        return getattr(A, f"UC_ARM64_REG_{name.upper()}")
    return getattr(R, f"UC_RISCV_REG_{name.upper()}")


def check_isa(isa: str, n_instances: int = 10, n_states: int = 100, seed: int = 0, progress=None) -> dict:
    """Mismatch counts per template: {template: mismatches} over n_instances * n_states states."""
    rng = random.Random(seed)
    pool = ARM_POOL if isa == ARM else RV_POOL
    lines = []
    for t in TEMPLATES[isa]:
        lines += [(t, instantiate(isa, t, rng)) for _ in range(n_instances)]
    text = "\t.text\n" + "".join(f"i{k}:\n\t{line}\n" for k, (_, line) in enumerate(lines)) + f"i{len(lines)}:\n"
    code = assemble(text, isa)
    machine = Machine(isa, code.data)
    result = {t: 0 for t in TEMPLATES[isa]}
    sym = {name: z3.BitVec(name, 64) for name in pool}
    for k, (t, line) in enumerate(lines):
        ins = parse_line(isa, line)
        dest = canonical_reg(isa, ins.args[0].name)
        expr = z3.simplify(step(isa, ins, dict(sym))[dest])
        for _ in range(n_states):
            vals = {name: rng.getrandbits(64) if rng.random() < 0.7 else rng.randrange(-40, 40) & (2**64 - 1)
                    for name in pool}
            ok = machine.run_range(code.symbols[f"i{k}"], code.symbols[f"i{k + 1}"],
                                   {_uc_reg(isa, n): v for n, v in vals.items()})
            got = machine.uc.reg_read(_uc_reg(isa, dest)) if ok else None
            want = z3.simplify(z3.substitute(expr, *[(sym[n], z3.BitVecVal(v, 64)) for n, v in vals.items()]))
            if got != want.as_long():
                result[t] += 1
        if progress:
            progress(1)
    return result
