"""Guess & Sketch: beam hypotheses -> uncertain tokens -> holes in pure blocks -> aligned source block
-> CEGIS fill -> candidates; and the execution check that decides whether a candidate passes.

Holes go on uncertain immediates first, then on registers read, and, as an option, on opcodes; an
opcode hole may take the model's own next choices at that token that run with the line's operands."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import z3

from .asm import Function, Imm, Instr, Shift, parse_functions
from .corpus import random_inputs, run_many, wrap_function
from .errors import AsmSketchError
from .isa import REGS, abi_map, canonical_reg
from .model import Hypothesis
from .semantics import (SUPPORTED, Unsupported, hole_domain, is_pure, pure_blocks, rv_operands_fit, step,
                        value_ok)
from .sketch import (OPCODE, Hole, block_inputs, block_outputs, fill, immediate_operands, register_operands,
                     solve_block)
from .tokens import detokenize, roles

ALIGN, NO_ALIGN, RANDOM_HOLES = "align", "no_align", "random_holes"
MAX_REG_HOLES = 3
MAX_OP_HOLES = 2  # per block: each multiplies the solver's choices by up to N_ALTERNATIVES
MAX_SOLVES = 8  # solver calls per candidate: bounds the time a badly wrong guess can take


@dataclass
class SketchReport:
    target_lines: tuple[int, int]
    source_lines: tuple[int, int] | None
    holes: list[tuple[int, int]]
    status: str  # solved / no fix / skipped (why)
    seconds: float = 0.0
    values: dict = field(default_factory=dict)

    def holes_said(self) -> str:
        n_op = sum(operand == OPCODE for _, operand in self.holes)
        return f"{len(self.holes)} hole(s)" + (f", {n_op} on opcodes" if n_op else "")


@dataclass
class Candidate:
    body: str
    score: float
    sketches: list[SketchReport] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(s.status == "solved" for s in self.sketches)


def parse_body(isa: str, body: str) -> Function:
    return parse_functions(isa, wrap_function("fn", body), "candidate")[0]


def _source_pure_block_of(blocks, line):
    for b in blocks:
        if b[0] <= line < b[1]:
            return b
    return None


def _line_span_of_tokens(rls, lo, hi):
    return [i for i, r in enumerate(rls) if lo <= r.line < hi]


def aligned_source_spans(hyp: Hypothesis, tok_idx, src_roles, src_blocks):
    """Source spans for a target block, best first: the lines its tokens attend to (argmax per token),
    clipped to the pure block that gets most attention, then that whole pure block."""
    votes, lines = Counter(), []
    for i in tok_idx:
        if i >= len(hyp.attention):
            continue
        row = hyp.attention[i]
        j = max(range(len(row)), key=row.__getitem__)
        if j < len(src_roles) and src_roles[j].line >= 0:
            b = _source_pure_block_of(src_blocks, src_roles[j].line)
            if b is not None:
                votes[b] += row[j]
                lines.append((b, src_roles[j].line))
    if not votes:
        return []
    best = votes.most_common(1)[0][0]
    inside = [ln for b, ln in lines if b == best]
    tight = (min(inside), max(inside) + 1)
    return [tight, best] if tight != best else [best]


def positional_source_spans(tgt_func, span, src_func, src_blocks):
    """Without alignment: the source pure block at the same relative position."""
    mid = (span[0] + span[1]) / 2 / max(1, len(tgt_func.body))
    return [min(src_blocks, key=lambda b: abs((b[0] + b[1]) / 2 / max(1, len(src_func.body)) - mid))] \
        if src_blocks else []


def _reg_votes(hyp, tgt_roles, tgt_toks, src_roles, src_toks, src_isa, tgt_isa, lines, wanted_src):
    """For each target register in `lines`, the source register its tokens attend to most (among wanted)."""
    votes: dict[str, Counter] = {}
    for i, r in enumerate(tgt_roles):
        if r.kind != "reg" or not (lines[0] <= r.line < lines[1]) or i >= len(hyp.attention):
            continue
        t = canonical_reg(tgt_isa, tgt_toks[i])
        row = hyp.attention[i]
        for j in sorted(range(len(row)), key=lambda j: -row[j])[:4]:
            if j < len(src_roles) and src_roles[j].kind == "reg":
                s = canonical_reg(src_isa, src_toks[j])
                if s in wanted_src:
                    votes.setdefault(t, Counter())[s] += row[j]
                    break
    return {t: c.most_common(1)[0][0] for t, c in votes.items()}


def _map_regs(targets, sources, src_isa, tgt_isa, votes, positional: bool):
    """target register -> source register: shared ABI role first, then alignment votes (or order)."""
    inv = {v: k for k, v in abi_map(src_isa).items()}  # target -> source by ABI role
    out, free = {}, [s for s in sources]
    for t in targets:
        s = inv.get(t)
        if s in free:
            out[t] = s
            free.remove(s)
    for t in targets:
        if t in out:
            continue
        s = None if positional else votes.get(t)
        if s is None and positional and free:
            s = free[0]
        if s in free:
            out[t] = s
            free.remove(s)
    return out


def sketch_candidate(hyp: Hypothesis, src_toks, src_func: Function, tgt_isa: str, threshold: float,
                     mode: str = ALIGN, rng: random.Random | None = None, n_random: int | None = None,
                     deadline: float | None = None, opcode_holes: bool = False) -> Candidate:
    """Punch holes where the model is unsure and solve each sketched pure block. A guess too broken to
    analyse (unknown labels, unreadable lines) comes back unchanged: execution will judge it. Past
    `deadline` (time.time()) no solver call starts: the blocks left keep the guess. opcode_holes adds a
    third stage with holes on unsure opcodes (an option: see docs/asmsketch.md, "Opcode holes")."""
    try:
        return _sketch_candidate(hyp, src_toks, src_func, tgt_isa, threshold, mode, rng, n_random, deadline,
                                 opcode_holes)
    except AsmSketchError:
        return Candidate(detokenize(hyp.tokens), hyp.score)


def confidence_holes(hyp: Hypothesis, tgt_func: Function, tgt_isa: str, tgt_blocks, threshold: float,
                     tgt_roles=None) -> tuple[set, set]:
    """Operands of the pure blocks with a token the model gave probability below the threshold:
    (immediate holes, holes on registers read). Only pure blocks can be sketched, so only they count."""
    tgt_roles = tgt_roles or roles(hyp.tokens, REGS[tgt_isa])
    imms = {h for b in tgt_blocks for h in immediate_operands(tgt_func, *b)}
    readable = {h for b in tgt_blocks for h in register_operands(tgt_func, *b)}
    holes, reg_holes = set(), set()
    for i, r in enumerate(tgt_roles):
        if hyp.probs[i] >= threshold or r.line < 0 or r.operand < 0:
            continue
        h = Hole(r.line, r.operand)
        if r.kind == "imm" and h in imms:
            holes.add(h)
        elif r.kind == "reg" and h in readable:
            reg_holes.add(h)
    return holes, reg_holes


def _runs_with_operands(func: Function, ins: Instr, op: str) -> bool:
    """Whether `op` with `ins`'s operands is a pure instruction we model and can encode."""
    var = Instr(op, ins.args, ins.label)
    if not is_pure(func, var) or (func.isa == "riscv" and not rv_operands_fit(var)):
        return False
    try:
        step(func.isa, var, {canonical_reg(func.isa, r): z3.BitVec(r, 64) for r in REGS[func.isa]})
    except (Unsupported, KeyError):
        return False
    for k, a in enumerate(ins.args):
        if isinstance(a, (Imm, Shift)):
            v = a.value if isinstance(a, Imm) else a.amount
            d = hole_domain(func.isa, var, k, z3.BitVecVal(v & ((1 << 64) - 1), 64))
            if d is None or z3.is_false(z3.simplify(d)) or not value_ok(func.isa, var, k, v):
                return False
    return True


def opcode_options(hyp: Hypothesis, tgt_func: Function, tgt_blocks, tgt_roles) -> dict:
    """Lines of the pure blocks whose opcode token has other likely tokens (the model's own next choices)
    that run with the line's operands: line -> (opcodes, the guess's first; the guess's probability)."""
    lines = {ln for b in tgt_blocks for ln in range(*b)}
    out = {}
    for i, r in enumerate(tgt_roles):
        if r.kind != "op" or r.line not in lines or i >= len(hyp.alternatives):
            continue
        ins = tgt_func.body[r.line]
        alts = [t for t, _ in hyp.alternatives[i] if t != ins.op and t in SUPPORTED[tgt_func.isa]]
        alts = [t for t in dict.fromkeys(alts) if _runs_with_operands(tgt_func, ins, t)]
        if alts:
            out[r.line] = ((ins.op, *alts), hyp.probs[i])
    return out


def _op_holes(options: dict, threshold: float, mode: str, rng) -> dict:
    """Opcode holes, least confident first (the ablation: as many random lines, in random order); the
    caller keeps the first MAX_OP_HOLES of each block. Hole -> opcodes."""
    unsure = sorted((ln for ln, (_, p) in options.items() if p < threshold), key=lambda ln: options[ln][1])
    if mode == RANDOM_HOLES:
        pool = sorted(options)
        unsure = rng.sample(pool, min(len(pool), len(unsure)))
    return {Hole(ln, OPCODE): options[ln][0] for ln in unsure}


def _sketch_candidate(hyp, src_toks, src_func, tgt_isa, threshold, mode, rng, n_random, deadline,
                      opcode_holes) -> Candidate:
    body = detokenize(hyp.tokens)
    cand = Candidate(body, hyp.score)
    try:
        tgt_func = parse_body(tgt_isa, body)
    except AsmSketchError:
        return cand
    src_isa = src_func.isa
    tgt_roles = roles(hyp.tokens, REGS[tgt_isa])
    src_roles = roles(src_toks[1:], REGS[src_isa])
    src_roles = [type(src_roles[0])(-1, -1, "special")] + src_roles if src_roles else []
    n_lines = sum(1 for r in tgt_roles if r.kind == "op")
    if n_lines != len(tgt_func.body):
        return cand
    tgt_blocks = pure_blocks(tgt_func)
    src_blocks = pure_blocks(src_func)
    holes, reg_holes = confidence_holes(hyp, tgt_func, tgt_isa, tgt_blocks, threshold, tgt_roles)
    r_ = rng or random.Random(0)
    op_holes = _op_holes(opcode_options(hyp, tgt_func, tgt_blocks, tgt_roles), threshold, mode, r_) \
        if opcode_holes else {}
    if mode == RANDOM_HOLES:  # as many holes of each kind, at random places of the pure blocks
        pool = [h for b in tgt_blocks for h in immediate_operands(tgt_func, *b)]
        holes = set(r_.sample(pool, min(len(pool), len(holes) if n_random is None else n_random)))
        rpool = [h for b in tgt_blocks for h in register_operands(tgt_func, *b)]
        reg_holes = set(r_.sample(rpool, min(len(rpool), len(reg_holes))))
    new_func, solved, solves = tgt_func, {}, 0
    for span in tgt_blocks:
        def inside(hs):
            return sorted((h for h in hs if span[0] <= h.line < span[1]), key=lambda h: (h.line, h.operand))
        bh, br = inside(holes), inside(reg_holes)[:MAX_REG_HOLES]
        bo = [h for h in op_holes if span[0] <= h.line < span[1]][:MAX_OP_HOLES]  # in op_holes' order
        # immediates first, then registers read, then opcodes
        stages = ([bh] if bh else []) + ([bh + br] if br else []) + ([bh + br + bo] if bo else [])
        if not stages:
            continue
        tok_idx = _line_span_of_tokens(tgt_roles, *span)
        if mode == NO_ALIGN:
            sspans = positional_source_spans(tgt_func, span, src_func, src_blocks)
        else:
            sspans = aligned_source_spans(hyp, tok_idx, src_roles, src_blocks)
        rep = SketchReport(span, None, [(h.line, h.operand) for h in stages[0]], "skipped: no aligned source block")
        cand.sketches.append(rep)
        t_in = block_inputs(tgt_isa, tgt_func.body[span[0]:span[1]])
        t_out = block_outputs(tgt_func, *span)
        done = False
        for stage in stages:
            rep.holes = [(h.line, h.operand) for h in stage]
            for n_try, sblock in enumerate(sspans):
                rep.source_lines = sblock
                s_in = block_inputs(src_isa, src_func.body[sblock[0]:sblock[1]])
                s_out = block_outputs(src_func, *sblock)
                votes = {} if mode == NO_ALIGN else _reg_votes(
                    hyp, tgt_roles, hyp.tokens, src_roles, src_toks, src_isa, tgt_isa, span, set(s_in) | set(s_out))
                in_map = _map_regs(t_in, s_in, src_isa, tgt_isa, votes, mode == NO_ALIGN)
                out_map = _map_regs(t_out, s_out, src_isa, tgt_isa, votes, mode == NO_ALIGN)
                if len(out_map) < len(t_out) or not out_map:
                    rep.status = "skipped: outputs not matched"
                    continue
                if solves >= MAX_SOLVES:
                    rep.status = "skipped: solver budget of this candidate spent"
                    continue
                if deadline is not None and time.time() > deadline:
                    rep.status = "skipped: time budget of this function spent"
                    continue
                solves += 1
                # the tight span is a guess that is often wrong: a short budget before the whole block
                res = solve_block(src_func, sblock, tgt_func, span, stage, in_map, list(out_map.items()),
                                  timeout_ms=300 if n_try < len(sspans) - 1 else 3000, op_options=op_holes)
                rep.seconds += res.seconds
                if res.values is None:
                    rep.status = f"no fix ({res.reason})"
                    continue
                rep.status = "solved"
                rep.values = {(h.line, h.operand): v for h, v in res.values.items()}  # operand -1: the opcode
                solved.update(res.values)
                done = True
                break
            if done:
                break
    if solved:
        new_func = fill(tgt_func, solved)
        cand.body = new_func.text(with_header=False)
    return cand


def solver_checked_first(cands: list[Candidate], tgt_isa: str) -> list[Candidate]:
    """Guess & Sketch's order of its candidates: those that parse and whose every sketched block z3
    proved equal to its aligned source block first, then those with a block it could not fix, then those
    it could not read; the beam's order within each group. No execution is involved."""
    def group(c):
        try:
            parse_body(tgt_isa, c.body)
        except AsmSketchError:
            return 2
        return int(any(s.status != "solved" for s in c.sketches))
    return sorted(cands, key=group)  # stable: beam order within a group


def verify(src_isa: str, src_body: str, tgt_isa: str, bodies: list[str], nargs: int, n_inputs: int = 20,
           seed: int = 0) -> list[bool]:
    """Execution check: each candidate body against the source on the same random inputs."""
    inputs = random_inputs(random.Random(seed), nargs, n_inputs)
    want = run_many(src_isa, [src_body], [inputs])[0]
    if None in want:
        raise AsmSketchError("the source function does not run to completion under emulation")
    out = []
    for b in bodies:
        try:
            got = run_many(tgt_isa, [b], [inputs])[0]
        except AsmSketchError:
            out.append(False)
            continue
        out.append(got == want)
    return out


def verify_many(src_isa, src_bodies, tgt_isa, cand_lists, nargs_list, n_inputs=20, seed=0) -> list[list[bool]]:
    """Batched execution check (one assembler call per ISA when every candidate assembles)."""
    inputs = [random_inputs(random.Random(f"{seed}-{i}"), n, n_inputs) for i, n in enumerate(nargs_list)]
    wants = run_many(src_isa, src_bodies, inputs)
    flat = [(i, b) for i, bodies in enumerate(cand_lists) for b in bodies]
    results: dict[int, list] = {}
    try:
        got = run_many(tgt_isa, [b for _, b in flat], [inputs[i] for i, _ in flat])
        for k, (i, _) in enumerate(flat):
            results[k] = got[k]
    except AsmSketchError:
        for k, (i, b) in enumerate(flat):
            try:
                results[k] = run_many(tgt_isa, [b], [inputs[i]])[0]
            except AsmSketchError:
                results[k] = None
    out, k = [], 0
    for i, bodies in enumerate(cand_lists):
        row = []
        for _ in bodies:
            row.append(results[k] is not None and None not in wants[i] and results[k] == wants[i])
            k += 1
        out.append(row)
    return out


__all__ = ["ALIGN", "NO_ALIGN", "RANDOM_HOLES", "Candidate", "SketchReport", "aligned_source_spans",
           "confidence_holes", "opcode_options", "positional_source_spans", "sketch_candidate",
           "solver_checked_first", "verify", "verify_many", "parse_body"]
