"""Solver trials: correct target blocks with corrupted immediates (or a corrupted opcode), immediates
made holes, solved against the source block of the other ISA; each fill is then run to confirm it."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import z3

from .asm import Function, Imm, Instr
from .isa import abi_map
from .pipeline import parse_body, verify
from .semantics import Unsupported, pure_blocks, run_block
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


def block_spec(src: Function, tgt: Function, tspan: tuple) -> tuple[dict, list]:
    """(target live-in -> source register, [(target live-out, source register)]) by ABI role."""
    inv = {v: k for k, v in abi_map(src.isa).items()}
    t_in = block_inputs(tgt.isa, tgt.body[tspan[0]:tspan[1]])
    in_map = {r: inv[r] for r in t_in if r in inv}
    outs = [(r, inv[r]) for r in block_outputs(tgt, *tspan) if r in inv]
    return in_map, outs


def blocks_agree(src: Function, sspan: tuple, tgt: Function, tspan: tuple, rng: random.Random, n: int = 8) -> bool:
    """Whether the two blocks give the same mapped outputs on n random inputs. The pure blocks of a
    function pair need not correspond (a source block cut short by an unsupported instruction), and a
    trial is only meaningful on a correct block: one that computes what its source block computes."""
    in_map, outs = block_spec(src, tgt, tspan)
    if not outs:
        return False
    s_ins, t_ins = src.body[sspan[0]:sspan[1]], tgt.body[tspan[0]:tspan[1]]
    regs = set(block_inputs(src.isa, s_ins)) | set(in_map.values()) | {s for _, s in outs}
    for _ in range(n):
        s_state = {r: z3.BitVecVal(rng.getrandbits(64), 64) for r in regs}
        t_state = {r: s_state[in_map[r]] if r in in_map else z3.BitVecVal(rng.getrandbits(64), 64)
                   for r in set(block_inputs(tgt.isa, t_ins)) | {t for t, _ in outs}}
        try:
            so, to = run_block(src.isa, s_ins, s_state), run_block(tgt.isa, t_ins, t_state)
        except (Unsupported, KeyError):
            return False
        if any(z3.simplify(to[t]).as_long() != z3.simplify(so[s]).as_long() for t, s in outs):
            return False
    return True


def make_trials(pairs, n: int, seed: int = 0, opcode: bool = False, stats: dict | None = None) -> list[Trial]:
    """Blocks from single-pure-block functions (both ISAs) that agree with their source block,
    1-3 immediates as holes. stats, if given, counts the blocks left out as not agreeing."""
    rng = random.Random(seed)
    check = random.Random(seed + 1)
    out = []
    pool = [(p, s, t) for p in pairs for s, t in (("arm", "riscv"), ("riscv", "arm"))]
    rng.shuffle(pool)
    for p, s, t in pool:
        src, tgt = parse_body(s, p.text(s)), parse_body(t, p.text(t))
        sb, tb = pure_blocks(src), pure_blocks(tgt)
        if len(sb) != 1 or len(tb) != 1:
            continue
        if not blocks_agree(src, sb[0], tgt, tb[0], check):
            if stats is not None:
                stats["blocks_not_agreeing"] = stats.get("blocks_not_agreeing", 0) + 1
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
    """(fill found, fill passes execution, seconds, CPU seconds, the solver's reason)."""
    s_isa, t_isa = trial.src.isa, trial.tgt.isa
    in_map, outs = block_spec(trial.src, trial.tgt, trial.tspan)
    res = solve_block(trial.src, trial.sspan, trial.tgt, trial.tspan, trial.holes, in_map, outs)
    if res.values is None:
        return False, False, res.seconds, res.cpu_seconds, res.reason
    fixed = fill(trial.tgt, res.values).text(with_header=False)
    nargs = 8
    ok = verify(s_isa, trial.src.text(with_header=False), t_isa, [fixed], nargs, n_inputs)[0]
    return True, ok, res.seconds, res.cpu_seconds, res.reason


def summarize(trials, progress=None) -> dict:
    found = passed = 0
    times, cpu, no_fix = [], [], {}
    for tr in trials:
        f, ok, sec, cpu_sec, why = run_trial(tr)
        found += f
        passed += ok
        times.append(sec)
        cpu.append(cpu_sec)
        if not f:  # why the solver gave up: budget spent, no fill exists, ...
            key = f"{why} ({tr.tgt.isa} target, {'with' if _multiplies(tr) else 'no'} multiply)"
            no_fix[key] = no_fix.get(key, 0) + 1
        if progress:
            progress(1)
    n = max(1, len(trials))
    return {"n": len(trials), "fill_found": found, "fill_passes_execution": passed,
            "fill_fails_execution": found - passed, "fixed_share": passed / n, "no_fix_share": (len(trials) - found) / n,
            "median_s": statistics.median(times) if times else None,
            "median_cpu_s": statistics.median(cpu) if cpu else None,
            "p90_s": sorted(times)[int(0.9 * (len(times) - 1))] if times else None, "no_fix_reasons": no_fix}


def _multiplies(trial: Trial) -> bool:
    body = trial.tgt.body[trial.tspan[0]:trial.tspan[1]]
    return any("mul" in i.op or i.op in ("madd", "msub", "mneg") for i in body)
