"""Sketches and their solver: holes in a target block, filled by CEGIS so that the block computes what
its aligned source block computes, for all inputs.

A hole is an operand (immediate, shift amount or register read) of one target instruction, or its
opcode (operand OPCODE), which the solver chooses among a few options with the same operands. Inputs
are the live-in registers; the specification equates mapped live-out registers of the two blocks.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import z3

from .asm import Function, Imm, Instr, Reg, Shift, live_after, reads_writes
from .isa import canonical_reg
from .semantics import OpChoice, RegChoice, Unsupported, hole_domain, run_block, value_ok

MASK = (1 << 64) - 1
OPCODE = -1  # the operand index of an opcode hole
RLIMIT_PER_MS = 500  # z3 resource units per "millisecond" of budget (roughly, on this project's CPUs)


@dataclass(frozen=True)
class Hole:
    line: int  # instruction index in the target function
    operand: int  # operand index in that instruction, or OPCODE


@dataclass
class SolveResult:
    values: dict | None  # Hole -> int, or None when no fill exists (or none was found in budget)
    seconds: float
    iterations: int
    reason: str = ""
    examples: list = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time (z3 runs in it): what the solve costs on a busy machine


def block_inputs(isa: str, instrs) -> list[str]:
    """Registers read before written (64-bit names), in first-use order."""
    seen, written = [], set()
    for ins in instrs:
        rd, wr = reads_writes(isa, ins)
        if ins.op == "movk":  # movk reads its destination
            rd = rd
        for r in rd:
            if r not in written and r not in seen:
                seen.append(r)
        written |= set(wr)
    return seen


def block_outputs(func: Function, start: int, end: int) -> list[str]:
    """Registers written in [start, end) and live after it."""
    live = live_after(func)[end - 1]
    written = []
    for ins in func.body[start:end]:
        for r in reads_writes(func.isa, ins)[1]:
            if r not in written:
                written.append(r)
    return [r for r in written if r in live]


def _holed(isa: str, instrs: list[Instr], holes: dict, reg_options: tuple = (), op_options: dict | None = None):
    """Instructions with hole operands replaced by z3 terms. holes: (local line, operand) -> term;
    a register operand becomes a choice among reg_options, an opcode (OPCODE) a choice among
    op_options[local line]."""
    out = []
    for li, ins in enumerate(instrs):
        args = list(ins.args)
        for (hl, ho), term in holes.items():
            if hl != li or ho == OPCODE:
                continue
            a = args[ho]
            if isinstance(a, Imm):
                args[ho] = Imm(term)
            elif isinstance(a, Shift):
                args[ho] = Shift(a.kind, term)
            elif isinstance(a, Reg) and ho > 0:
                args[ho] = RegChoice(reg_options, term)
            else:
                raise Unsupported(f"operand {ho} of '{ins.op}' is not an immediate")
        if (li, OPCODE) in holes:
            out.append(OpChoice(tuple(Instr(op, args, ins.label) for op in op_options[li]), holes[(li, OPCODE)]))
        else:
            out.append(ins.with_args(args))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def solve_block(*args, **kwargs) -> SolveResult:
    """CEGIS for the holes of a target block (see _solve_block), with its CPU time."""
    c0 = time.process_time()
    res = _solve_block(*args, **kwargs)
    res.cpu_seconds = time.process_time() - c0
    return res


def _solve_block(src: Function, src_span: tuple[int, int], tgt: Function, tgt_span: tuple[int, int],
                 holes: list[Hole], reg_map: dict[str, str], outputs: list[tuple[str, str]],
                 seed: int = 0, n_examples: int = 4, max_iters: int = 24, timeout_ms: int = 3000,
                 op_options: dict | None = None) -> SolveResult:
    """CEGIS: find hole values with tgt_block(x) == src_block(x) on the mapped outputs, for all x.

    reg_map: target live-in register -> source register it carries (unmapped inputs are free);
    outputs: (target register, source register) pairs that must be equal after the blocks;
    op_options: opcode hole -> the opcodes it may take (the guess's first).
    """
    t0 = time.perf_counter()
    src_ins = src.body[src_span[0]:src_span[1]]
    tgt_ins = tgt.body[tgt_span[0]:tgt_span[1]]
    if not outputs:
        return SolveResult(None, time.perf_counter() - t0, 0, "no outputs to compare")
    src_in = block_inputs(src.isa, src_ins)
    xs = {r: z3.BitVec(f"in_{r}", 64) for r in src_in}
    for s in reg_map.values():
        xs.setdefault(s, z3.BitVec(f"in_{s}", 64))
    tgt_state = {}
    for r in block_inputs(tgt.isa, tgt_ins) + [t for t, _ in outputs]:
        if r in reg_map:
            tgt_state[r] = xs[reg_map[r]]
        else:
            tgt_state[r] = z3.BitVec(f"free_{r}", 64)
    src_state = dict(xs)
    for _, s in outputs:
        src_state.setdefault(s, xs.setdefault(s, z3.BitVec(f"in_{s}", 64)))
    hv = {h: z3.BitVec(f"hole_{h.line}_{h.operand}", 64) for h in holes}
    local = {(h.line - tgt_span[0], h.operand): v for h, v in hv.items()}
    op_holes = {h: tuple(op_options[h]) for h in holes if h.operand == OPCODE}
    reg_holes = [h for h in holes if h.operand != OPCODE and isinstance(tgt.body[h.line].args[h.operand], Reg)]
    options = tuple(register_options(tgt, tgt_span)) if reg_holes else ()
    for r in options:  # a register chosen for a hole that nothing else reads is a free input
        tgt_state.setdefault(r, z3.BitVec(f"free_{r}", 64))
    try:
        holed = _holed(tgt.isa, tgt_ins, local, options,
                       {h.line - tgt_span[0]: ops for h, ops in op_holes.items()})
        tgt_out = run_block(tgt.isa, holed, tgt_state)
        src_out = run_block(src.isa, src_ins, src_state)
    except (Unsupported, KeyError) as e:
        return SolveResult(None, time.perf_counter() - t0, 0, f"unsupported: {e}")
    spec = z3.And([tgt_out[t] == src_out[s] for t, s in outputs])
    inputs = sorted({v.get_id(): v for v in list(xs.values()) + [tgt_state[r] for r in tgt_state]}.items())
    inputs = [v for _, v in inputs]
    domain = []
    for h, v in hv.items():
        if h in reg_holes or h in op_holes:
            domain.append(z3.ULT(v, len(options) if h in reg_holes else len(op_holes[h])))
            continue
        d = hole_domain(tgt.isa, holed[h.line - tgt_span[0]], h.operand, v)
        if d is None:
            return SolveResult(None, time.perf_counter() - t0, 0, f"no hole domain for '{tgt.body[h.line].op}'")
        domain.append(d)
    rng = random.Random(seed)
    # 1 and 2 first: products with a hole stay linear there, which keeps z3's bit-blasting small
    examples = [[1] * len(inputs), [2] * len(inputs)] + [
        [rng.choice((rng.getrandbits(64), rng.randrange(-50, 50) & MASK)) for _ in inputs]
        for _ in range(max(0, n_examples - 2))]
    cegis = _Cegis(tgt, holes, hv, reg_holes, op_holes, inputs, domain, max_iters, timeout_ms * RLIMIT_PER_MS)
    abstract = _abstract_products([src_out[s] for _, s in outputs], [tgt_out[t] for t, _ in outputs], spec)
    it = 0
    if abstract:  # products matched operand for operand: no multiplier for z3 to bit-blast, so large
        # random inputs are cheap (they make the products large, which pins the holes after them)
        wide = examples[:2] + [[rng.getrandbits(64) for _ in inputs] for _ in range(n_examples)]
        vals, it, why = cegis.run(*abstract, wide, fresh=rng)
        if vals is not None:
            return SolveResult(cegis.named(vals, options), time.perf_counter() - t0, it, why, examples)
    vals, it2, why = cegis.run(spec, spec, examples)
    if vals is None:
        return SolveResult(None, time.perf_counter() - t0, it + it2, why, examples)
    return SolveResult(cegis.named(vals, options), time.perf_counter() - t0, it + it2, why, examples)


def _products(exprs) -> list:
    """The multiplications in terms, inner ones first (each shared subterm once)."""
    seen, out = set(), []

    def walk(e):
        if e.get_id() in seen:
            return
        seen.add(e.get_id())
        for c in e.children():
            walk(c)
        if z3.is_app_of(e, z3.Z3_OP_BMUL) and e.num_args() == 2:
            out.append(e)
    for e in exprs:
        walk(e)
    return out


def _abstract_products(src_terms, tgt_terms, spec):
    """When both blocks multiply the same number of times, pair the products in order and require
    equal operands (either order). Returns (synthesis spec: the target's products replaced by the
    source's, which inputs make constant; verification spec: each pair replaced by one free value,
    which implies equivalence once the operands are proven equal), or None."""
    sp, tp = _products(src_terms), _products(tgt_terms)
    if not sp or len(sp) != len(tp) or any(a.size() != b.size() for a, b in zip(sp, tp)):
        return None
    same = [z3.Or(z3.And(t.arg(0) == s.arg(0), t.arg(1) == s.arg(1)),
                  z3.And(t.arg(0) == s.arg(1), t.arg(1) == s.arg(0))) for s, t in zip(sp, tp)]
    full = z3.And(*same, spec)
    synth = z3.substitute(full, *[(t, s) for s, t in zip(sp, tp)])
    free = [z3.BitVec(f"product_{k}", s.size()) for k, s in enumerate(sp)]
    verify = z3.substitute(full, *[(t, f) for t, f in zip(tp, free)], *[(s, f) for s, f in zip(sp, free)])
    return synth, verify


class _Cegis:
    """Counterexample-guided search for hole values: z3 fits them to examples, then checks them for
    all inputs; a counterexample becomes an example."""

    def __init__(self, tgt, holes, hv, reg_holes, op_holes, inputs, domain, max_iters, rlimit):
        self.tgt, self.holes, self.hv, self.reg_holes, self.op_holes = tgt, holes, hv, reg_holes, op_holes
        self.inputs, self.domain, self.max_iters, self.rlimit = inputs, domain, max_iters, rlimit

    def _at(self, spec, ex):
        return z3.simplify(z3.substitute(spec, *[(x, z3.BitVecVal(v, 64)) for x, v in zip(self.inputs, ex)]))

    def named(self, vals, options):
        for h in self.reg_holes:  # an index into the options -> the register's name
            vals[h] = options[vals[h]]
        for h, ops in self.op_holes.items():  # an index into the opcodes -> the opcode
            vals[h] = ops[vals[h]]
        return vals

    def _chosen(self, line: int, vals) -> Instr:
        """The target line under the opcode the values choose (its own where the opcode is no hole)."""
        ins = self.tgt.body[line]
        h = Hole(line, OPCODE)
        return Instr(self.op_holes[h][vals[h]], ins.args, ins.label) if h in self.op_holes else ins

    def run(self, synth_spec, verify_spec, examples, fresh: random.Random | None = None):
        """(values or None, iterations, reason). fresh: the verification spec abstracts the products, so
        its counterexample need not be one: a fill that fails is excluded outright, and a random input
        is added with the counterexample."""
        synth = z3.Solver()
        # z3's resource limit, not wall time: the same answer on a busy or an idle machine
        synth.set("rlimit", self.rlimit)
        synth.add(*self.domain)
        for ex in examples:
            synth.add(self._at(synth_spec, ex))
        hv = self.hv
        for it in range(1, self.max_iters + 1):
            res = synth.check()
            if res != z3.sat:
                return None, it, "no fill satisfies the examples" if res == z3.unsat else "synthesis timed out"
            m = synth.model()
            vals = {h: _signed(m.eval(v, model_completion=True).as_long()) for h, v in hv.items()}
            bad = [h for h in self.holes if h not in self.reg_holes and h not in self.op_holes
                   and not value_ok(self.tgt.isa, self._chosen(h.line, vals), h.operand, vals[h])]
            if bad:
                synth.add(z3.Or([hv[h] != z3.BitVecVal(vals[h] & MASK, 64) for h in bad]))
                continue
            verify = z3.Solver()
            verify.set("rlimit", self.rlimit)
            verify.add(z3.Not(z3.substitute(verify_spec, *[(hv[h], z3.BitVecVal(vals[h] & MASK, 64))
                                                           for h in self.holes])))
            res = verify.check()
            if res == z3.unsat:
                return vals, it, "equivalent"
            if res != z3.sat:
                return None, it, "verification timed out"
            cm = verify.model()
            ex = [cm.eval(x, model_completion=True).as_long() for x in self.inputs]
            examples.append(ex)
            synth.add(self._at(synth_spec, ex))
            if fresh is not None:
                synth.add(self._at(synth_spec, [fresh.getrandbits(64) for _ in self.inputs]))
                synth.add(z3.Or([hv[h] != z3.BitVecVal(vals[h] & MASK, 64) for h in self.holes]))
        return None, self.max_iters, "iteration budget spent"


def fill(func: Function, values: dict) -> Function:
    """The function with holes replaced by solved values (printed in a form the assembler takes)."""
    body = [Instr(i.op, list(i.args), i.label) for i in func.body]
    for h, v in values.items():  # opcodes first: how an immediate is printed depends on its opcode
        if h.operand == OPCODE:
            body[h.line].op = v
    for h, v in values.items():
        if h.operand == OPCODE:
            continue
        ins = body[h.line]
        a = ins.args[h.operand]
        if isinstance(a, Shift):
            ins.args[h.operand] = Shift(a.kind, v)
        elif isinstance(a, Reg):
            narrow = func.isa == "arm" and a.name.startswith("w")
            ins.args[h.operand] = Reg(("w" + v[1:]) if narrow and v.startswith("x") else v)
        else:
            if func.isa == "arm" and ins.op in ("and", "ands", "orr", "eor"):
                wide = not ins.args[0].name.startswith("w")
                v &= MASK if wide else 0xFFFFFFFF
            ins.args[h.operand] = Imm(v)
    return Function(func.isa, func.name, body, list(func.end_labels))


def immediate_operands(func: Function, start: int, end: int) -> list[Hole]:
    """Every immediate / shift-amount operand in [start, end): the places a hole may go."""
    out = []
    for i in range(start, end):
        for k, a in enumerate(func.body[i].args):
            if isinstance(a, (Imm, Shift)):
                out.append(Hole(i, k))
    return out


def register_operands(func: Function, start: int, end: int) -> list[Hole]:
    """Register operands read (not the destination) in [start, end): the places an operand hole may go."""
    return [Hole(i, k) for i in range(start, end) for k, a in enumerate(func.body[i].args)
            if isinstance(a, Reg) and k > 0 and func.body[i].op != "movk"]


def register_options(func: Function, span: tuple[int, int]) -> list[str]:
    """The registers a register hole may read: those the block mentions (64-bit names, no zero/sp)."""
    names = []
    for ins in func.body[span[0]:span[1]]:
        for a in ins.args:
            if isinstance(a, Reg):
                r = canonical_reg(func.isa, a.name)
                if r not in ("xzr", "zero", "sp") and r not in names:
                    names.append(r)
    return names


__all__ = ["OPCODE", "Hole", "SolveResult", "block_inputs", "block_outputs", "fill", "immediate_operands",
           "register_operands", "register_options", "solve_block"]
