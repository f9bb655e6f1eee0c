"""Solver trials: correct target blocks with corrupted immediates (or a corrupted opcode), immediates
made holes, solved against the source block of the other ISA; each fill is then run to confirm it."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from .asm import Function, Imm, Instr
from .isa import abi_map
from .pipeline import parse_body, verify
from .semantics import pure_blocks
from .sketch import block_inputs, block_outputs, fill, immediate_operands, solve_block

# opcode swaps that keep the operand shape (the corrupted block must still parse and assemble)
SWAPS = {"arm": {"add": "sub", "sub": "add", "eor": "orr", "orr": "eor", "and": "orr", "lsl": "lsr",
                 "lsr": "asr", "asr": "lsl", "mul": "add"},
         "riscv": {"add": "sub", "sub": "add", "addi": "xori", "xori": "ori", "ori": "andi", "andi": "ori",
                   "xor": "or", "or": "xor", "and": "or", "slli": "srli", "srli": "srai", "srai": "slli",
                   "mul": "add", "addiw": "addi"}}


@dataclass
class Trial:
    pair_id: str
    src: Function
    tgt: Function
    sspan: tuple
    tspan: tuple
    holes: list
    corrupted_opcode: bool


def make_trials(pairs, n: int, seed: int = 0, opcode: bool = False) -> list[Trial]:
    """Blocks from single-pure-block functions (both ISAs), 1-3 immediates as holes."""
    rng = random.Random(seed)
    out = []
    pool = [(p, s, t) for p in pairs for s, t in (("arm", "riscv"), ("riscv", "arm"))]
    rng.shuffle(pool)
    for p, s, t in pool:
        src, tgt = parse_body(s, p.text(s)), parse_body(t, p.text(t))
        sb, tb = pure_blocks(src), pure_blocks(tgt)
        if len(sb) != 1 or len(tb) != 1:
            continue
        imms = immediate_operands(tgt, *tb[0])
        if not imms:
            continue
        holes = rng.sample(imms, rng.randint(1, min(3, len(imms))))
        body = [Instr(i.op, list(i.args), i.label) for i in tgt.body]
        for h in holes:  # the corrupted values never reach the solver; they are what it must replace
            a = body[h.line].args[h.operand]
            if isinstance(a, Imm):
                body[h.line].args[h.operand] = Imm(a.value + rng.choice((-3, -1, 1, 2, 7)))
        if opcode:
            lines = [i for i in range(*tb[0]) if body[i].op in SWAPS[t]]
            if not lines:
                continue
            k = rng.choice(lines)
            body[k] = Instr(SWAPS[t][body[k].op], body[k].args, body[k].label)
        out.append(Trial(p.id, src, Function(t, tgt.name, body, tgt.end_labels), sb[0], tb[0], holes, opcode))
        if len(out) == n:
            break
    return out


def run_trial(trial: Trial, n_inputs: int = 50):
    """(fill found, fill passes execution, seconds)."""
    s_isa, t_isa = trial.src.isa, trial.tgt.isa
    inv = {v: k for k, v in abi_map(s_isa).items()}
    t_in = block_inputs(t_isa, trial.tgt.body[trial.tspan[0]:trial.tspan[1]])
    t_out = block_outputs(trial.tgt, *trial.tspan)
    in_map = {r: inv[r] for r in t_in if r in inv}
    outs = [(r, inv[r]) for r in t_out if r in inv]
    res = solve_block(trial.src, trial.sspan, trial.tgt, trial.tspan, trial.holes, in_map, outs)
    if res.values is None:
        return False, False, res.seconds
    fixed = fill(trial.tgt, res.values).text(with_header=False)
    nargs = 8
    ok = verify(s_isa, trial.src.text(with_header=False), t_isa, [fixed], nargs, n_inputs)[0]
    return True, ok, res.seconds


def summarize(trials, progress=None) -> dict:
    found = passed = 0
    times = []
    for tr in trials:
        f, ok, sec = run_trial(tr)
        found += f
        passed += ok
        times.append(sec)
        if progress:
            progress(1)
    n = max(1, len(trials))
    return {"n": len(trials), "fill_found": found, "fill_passes_execution": passed,
            "fill_fails_execution": found - passed, "fixed_share": passed / n, "no_fix_share": (len(trials) - found) / n,
            "median_s": statistics.median(times) if times else None,
            "p90_s": sorted(times)[int(0.9 * (len(times) - 1))] if times else None}
