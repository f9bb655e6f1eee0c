"""Tier A corpus: seeded random integer functions in LLVM IR, compiled by llc for both ISAs.

Each function is compiled at -O0, -O1 and -O2 for aarch64 and riscv64 (+m, no relaxation); the
two assembly texts of one (function, level) form a pair. `check_pairs` runs both under unicorn on
random inputs and compares results.
"""

from __future__ import annotations

import json
import re
import random
from dataclasses import asdict, dataclass

from .asm import normalize_labels, parse_functions
from .errors import AsmSketchError
from .emulate import Machine, run_function
from .isa import ARM, ISAS, RISCV
from .toolchain import assemble, compile_ir

OPT_LEVELS = (0, 1, 2)
BINOPS = ["add", "sub", "mul", "and", "or", "xor", "shl", "lshr", "ashr"]
PREDICATES = ["slt", "sgt", "ult", "eq", "ne", "sle"]
MASK = (1 << 64) - 1


def random_constant(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.4:
        v = rng.randrange(1, 64)
    elif r < 0.7:
        v = rng.randrange(64, 4096)
    elif r < 0.9:
        v = rng.randrange(4096, 1 << 20)
    else:
        v = rng.randrange(1 << 20, 1 << 31)
    return -v if rng.random() < 0.2 else v


class _Builder:
    def __init__(self, rng, nargs):
        self.rng, self.lines, self.n = rng, [], 0
        self.pool = [f"%a{i}" for i in range(nargs)]

    def fresh(self):
        self.n += 1
        return f"%t{self.n}"

    def operand(self, avoid=None):
        choices = [v for v in self.pool if v != avoid]
        if self.rng.random() < 0.45 or not choices:
            return str(random_constant(self.rng))
        return self.rng.choice(choices)

    def binop(self, lhs):
        op = self.rng.choice(BINOPS)
        if op in ("shl", "lshr", "ashr"):
            rhs = str(self.rng.randrange(1, 24))
        else:
            rhs = self.operand(avoid=lhs)
        if self.rng.random() < 0.5 and op in ("add", "mul", "and", "or", "xor"):
            lhs, rhs = rhs, lhs
        out = self.fresh()
        self.lines.append(f"  {out} = {op} i64 {lhs}, {rhs}")
        self.pool.append(out)
        return out

    def chain(self, start, n):
        v = start
        for _ in range(n):
            v = self.binop(v)
        return v


def generate_function(seed: int, name: str) -> str:
    """One function `i64 name(i64 ...)`: a chain of integer operations, sometimes a select or an if/else."""
    rng = random.Random(seed)
    nargs = rng.randint(1, 3)
    b = _Builder(rng, nargs)
    shape = rng.random()
    params = ", ".join(f"i64 %a{i}" for i in range(nargs))
    head = [f"define i64 @{name}({params}) {{", "entry:"]
    if shape < 0.6:
        v = b.chain(b.pool[0], rng.randint(2, 6))
        body = b.lines + [f"  ret i64 {v}"]
    elif shape < 0.8:
        x = b.chain(b.pool[0], rng.randint(1, 3))
        y = b.chain(rng.choice(b.pool[:nargs]), rng.randint(1, 2))
        c = b.fresh()
        b.lines.append(f"  {c} = icmp {rng.choice(PREDICATES)} i64 {x}, {b.operand(avoid=x)}")
        s = b.fresh()
        b.lines.append(f"  {s} = select i1 {c}, i64 {x}, i64 {y}")
        b.pool.append(s)
        v = b.chain(s, rng.randint(0, 2))
        body = b.lines + [f"  ret i64 {v}"]
    else:
        c = b.fresh()
        b.lines.append(f"  {c} = icmp {rng.choice(PREDICATES)} i64 {b.pool[0]}, {b.operand(avoid=b.pool[0])}")
        pre = b.lines + [f"  br i1 {c}, label %then, label %else"]
        b.lines, entry_pool = [], list(b.pool)
        x = b.chain(rng.choice(b.pool[:nargs]), rng.randint(1, 3))
        then = ["then:"] + b.lines + ["  br label %join"]
        b.lines, b.pool = [], list(entry_pool)
        y = b.chain(rng.choice(b.pool[:nargs]), rng.randint(1, 3))
        els = ["else:"] + b.lines + ["  br label %join"]
        b.lines, b.pool = [], list(entry_pool)
        p = b.fresh()
        b.lines.append(f"  {p} = phi i64 [{x}, %then], [{y}, %else]")
        b.pool.append(p)
        v = b.chain(p, rng.randint(0, 2))
        body = pre + then + els + ["join:"] + b.lines + [f"  ret i64 {v}"]
    return "\n".join(head + body + ["}"]) + "\n"


@dataclass
class Pair:
    id: str
    seed: int
    opt: int
    nargs: int
    ir: str
    arm: str  # canonical assembly text of the function body (labels normalised)
    riscv: str

    def text(self, isa: str) -> str:
        return self.arm if isa == ARM else self.riscv


def _body_text(func) -> str:
    return func.text(with_header=False)


def _compile_all(irs: dict, isa: str, opt: int) -> dict:
    """name -> normalised Function; a module that fails is retried function by function and the
    functions our parser does not take (e.g. RISC-V constant-pool loads) are left out."""
    try:
        funcs = parse_functions(isa, compile_ir("".join(irs.values()), isa, opt), f"llc-{isa}-O{opt}")
        return {f.name: normalize_labels(f) for f in funcs}
    except AsmSketchError:
        out = {}
        for s, ir in irs.items():
            try:
                f = parse_functions(isa, compile_ir(ir, isa, opt), f"llc-{isa}-O{opt}")[0]
                out[f.name] = normalize_labels(f)
            except AsmSketchError:
                pass
        return out


def build_pairs(seeds, progress=None, chunk: int = 50) -> list[Pair]:
    """Compile the functions of the given seeds at every level for both ISAs."""
    seeds = list(seeds)
    pairs = []
    for start in range(0, len(seeds), chunk):
        part = seeds[start:start + chunk]
        irs = {s: generate_function(s, f"fn{s}") for s in part}
        for opt in OPT_LEVELS:
            texts = {isa: _compile_all(irs, isa, opt) for isa in ISAS}
            for s in part:
                name = f"fn{s}"
                if name not in texts[ARM] or name not in texts[RISCV]:
                    continue
                nargs = irs[s].split("(", 1)[1].split(")")[0].count("i64")
                pairs.append(Pair(f"{name}-O{opt}", s, opt, nargs, irs[s],
                                  _body_text(texts[ARM][name]), _body_text(texts[RISCV][name])))
        if progress:
            progress(len(part))
    return pairs


def random_inputs(rng: random.Random, nargs: int, n: int) -> list[tuple[int, ...]]:
    """Argument tuples mixing small, negative and full-width values (edge cases get hit)."""
    def one():
        r = rng.random()
        if r < 0.3:
            return rng.randrange(-16, 17) & MASK
        if r < 0.6:
            return rng.randrange(-(1 << 20), 1 << 20) & MASK
        return rng.getrandbits(64)
    return [tuple(one() for _ in range(nargs)) for _ in range(n)]


TRAP = {ARM: "udf #0", RISCV: "unimp"}


def wrap_function(name: str, body: str, trap: str | None = None) -> str:
    """A function body (one instruction or label a line) as an assemblable file; with `trap`, a
    trapping instruction after it so a body without a return cannot run into the next one."""
    end = f"\t{trap}\n" if trap else ""
    return f"\t.text\n\t.globl\t{name}\n\t.p2align\t2\n{name}:\n{body}{end}"


def run_text(isa: str, body: str, inputs, name: str = "fn") -> list[int | None]:
    code = assemble(wrap_function(name, body), isa)
    return run_function(isa, code.data, code.symbols[name], inputs)


def run_many(isa: str, bodies: list[str], inputs: list) -> list[list[int | None]]:
    """Results of many function bodies (one assembler call); inputs[i] are the argument tuples of body i."""
    names = [f"fn_{i}" for i in range(len(bodies))]
    # local labels are per function: give each body its own
    text = "".join(wrap_function(n, re.sub(r"(\.L\w+)", rf"\1_{n}", b), TRAP[isa]) for n, b in zip(names, bodies))
    code = assemble(text, isa)
    machine = Machine(isa, code.data)
    return [[machine.call(code.symbols[n], args) for args in ins] for n, ins in zip(names, inputs)]


def check_pairs(pairs, n_inputs: int = 100, seed: int = 0, progress=None, chunk: int = 100) -> list[str]:
    """Ids of pairs whose two compilations disagree on some input (should be none)."""
    bad = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        inputs = [random_inputs(random.Random(f"{seed}-{p.id}"), p.nargs, n_inputs) for p in part]
        arm = run_many(ARM, [p.arm for p in part], inputs)
        rv = run_many(RISCV, [p.riscv for p in part], inputs)
        bad += [p.id for p, a, r in zip(part, arm, rv) if a != r or None in a]
        if progress:
            progress(len(part))
    return bad


def save_pairs(pairs, path: str) -> None:
    import os
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        for p in pairs:
            fh.write(json.dumps(asdict(p)) + "\n")
    os.replace(tmp, path)


def load_pairs(path: str) -> list[Pair]:
    with open(path) as fh:
        return [Pair(**json.loads(line)) for line in fh if line.strip()]


__all__ = ["Pair", "build_pairs", "check_pairs", "generate_function", "random_inputs", "run_text",
           "load_pairs", "save_pairs", "OPT_LEVELS"]
