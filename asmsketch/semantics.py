"""z3 bit-vector semantics of the supported (pure, integer) instructions of both ISAs.

`step(isa, ins, state)` returns the new register state; registers are 64-bit z3 terms keyed by their
64-bit name. An immediate may be a Python int or a 64-bit z3 term (a hole). AArch64 w-register forms
compute in 32 bits and zero-extend; RV64 *w forms compute in 32 bits and sign-extend. Flags are not
modelled, so flag readers are never pure (see `is_pure`).
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from .asm import Function, Imm, Instr, Mem, Reg, Shift, is_branch
from .isa import ARM, canonical_reg

ARM_PURE = {"add", "adds", "sub", "subs", "mul", "madd", "msub", "mneg", "smulh", "umulh", "and", "ands",
            "orr", "eor", "bic", "orn", "eon", "mvn", "neg", "negs", "lsl", "lsr", "asr", "ror", "mov",
            "movz", "movk", "movn", "sxtw", "sxth", "sxtb", "uxtb", "uxth", "ubfx", "sbfx", "ubfiz",
            "sbfiz"}
RV_PURE = {"add", "addi", "sub", "mul", "mulh", "mulhu", "mulhsu", "and", "andi", "or", "ori", "xor",
           "xori", "sll", "slli", "srl", "srli", "sra", "srai", "slt", "slti", "sltu", "sltiu", "addw",
           "addiw", "subw", "mulw", "sllw", "slliw", "srlw", "srliw", "sraw", "sraiw", "lui", "li", "mv",
           "neg", "negw", "not", "sext.w", "seqz", "snez", "sltz", "sgtz"}
SUPPORTED = {ARM: ARM_PURE, "riscv": RV_PURE}
RV_IMM_FORMS = {"addi", "andi", "ori", "xori", "slli", "srli", "srai", "slti", "sltiu", "addiw", "slliw",
                "srliw", "sraiw", "lui", "li"}  # the RV64 opcodes whose last operand is an immediate
FLAG_SETTERS = {"adds", "subs", "ands", "negs"}
FLAG_READERS = {"csel", "csinc", "csinv", "csneg", "cset", "csetm", "cinc", "cinv", "cneg", "adc", "sbc",
                "ccmp", "ccmn"}


@dataclass(frozen=True)
class RegChoice:
    """A register-operand hole: reads options[sel] (64-bit names)."""
    options: tuple
    sel: object


@dataclass(frozen=True)
class OpChoice:
    """An opcode hole: the line runs as variants[sel], the same operands under another opcode."""
    variants: tuple  # Instr, one per opcode option
    sel: object


def _read_choice(st: dict, x: RegChoice):
    v = st[x.options[-1]]
    for i in range(len(x.options) - 2, -1, -1):
        v = z3.If(x.sel == i, st[x.options[i]], v)
    return v


def _bv(v, width=64):
    return v if z3.is_expr(v) else z3.BitVecVal(v & ((1 << width) - 1), width)


def rv_operands_fit(ins: Instr) -> bool:
    """RV64 takes an immediate in the I-forms only, and needs one there (the semantics below read an
    immediate or a register alike, so this is checked apart)."""
    imm = isinstance(ins.args[-1], Imm) if ins.args else False
    return imm == (ins.op in RV_IMM_FORMS) and not any(isinstance(x, Imm) for x in ins.args[:-1])


def _reads_flags(func: Function) -> bool:
    return any(i.op in FLAG_READERS or i.op.startswith("b.") for i in func.body)


def is_pure(func: Function, ins: Instr, flags_live: bool | None = None) -> bool:
    """Supported arithmetic with no memory, branch or live flag effect."""
    if ins.op not in SUPPORTED[func.isa] or is_branch(func.isa, ins.op):
        return False
    if any(isinstance(a, Mem) for a in ins.args):
        return False
    if func.isa == ARM and any(isinstance(a, Reg) and a.name in ("sp", "wsp") for a in ins.args):
        return False  # stack-pointer arithmetic belongs to the frame, not the computation
    if ins.op in FLAG_SETTERS:
        return not (_reads_flags(func) if flags_live is None else flags_live)
    return True


def pure_blocks(func: Function) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of pure instructions inside basic blocks."""
    from .asm import basic_blocks
    flags = _reads_flags(func)
    out = []
    for b in basic_blocks(func):
        start = None
        for i in list(b.span()) + [b.end]:
            ok = i < b.end and is_pure(func, func.body[i], flags)
            if ok and start is None:
                start = i
            if not ok and start is not None:
                out.append((start, i))
                start = None
    return out


class Unsupported(Exception):
    pass


def _imm(a):
    if isinstance(a, Imm):
        return _bv(a.value)
    raise Unsupported(f"expected an immediate, got {a}")


def _ext(x, w):
    return z3.Extract(w - 1, 0, x) if w < 64 else x


def _shift(kind, x, amt, w):
    amt = _ext(_bv(amt), w) if z3.is_expr(amt) else z3.BitVecVal(amt, w)
    if kind == "lsl":
        return x << amt
    if kind == "lsr":
        return z3.LShR(x, amt)
    if kind == "asr":
        return x >> amt
    if kind == "ror":
        return z3.RotateRight(x, amt)
    raise Unsupported(kind)


def _arm_step(ins: Instr, st: dict):
    op, a = ins.op, ins.args
    if not a or not isinstance(a[0], Reg):
        raise Unsupported(op)
    dest = a[0].name
    w = 32 if dest.startswith("w") else 64

    def rd(x):
        if isinstance(x, Reg):
            name = canonical_reg(ARM, x.name)
            v = z3.BitVecVal(0, 64) if name == "xzr" else st[name]
            return _ext(v, w)
        if isinstance(x, RegChoice):
            return _ext(_read_choice(st, x), w)
        if isinstance(x, Imm):
            return _ext(_bv(x.value), w)
        raise Unsupported(f"{op}: operand {x}")

    def op2(rest):
        """Second operand with an optional shift (register) or lsl #12 (immediate)."""
        v = rd(rest[0])
        if len(rest) > 1:
            s = rest[1]
            if not isinstance(s, Shift):
                raise Unsupported(op)
            v = _shift(s.kind, v, s.amount, w)
        return v

    if op in ("add", "adds"):
        r = rd(a[1]) + op2(a[2:])
    elif op in ("sub", "subs"):
        r = rd(a[1]) - op2(a[2:])
    elif op == "mul":
        r = rd(a[1]) * rd(a[2])
    elif op == "madd":
        r = rd(a[3]) + rd(a[1]) * rd(a[2])
    elif op == "msub":
        r = rd(a[3]) - rd(a[1]) * rd(a[2])
    elif op == "mneg":
        r = -(rd(a[1]) * rd(a[2]))
    elif op in ("smulh", "umulh"):
        ext = z3.SignExt if op == "smulh" else z3.ZeroExt
        r = z3.Extract(127, 64, ext(64, rd(a[1])) * ext(64, rd(a[2])))
    elif op in ("and", "ands"):
        r = rd(a[1]) & op2(a[2:])
    elif op == "orr":
        r = rd(a[1]) | op2(a[2:])
    elif op == "eor":
        r = rd(a[1]) ^ op2(a[2:])
    elif op == "bic":
        r = rd(a[1]) & ~op2(a[2:])
    elif op == "orn":
        r = rd(a[1]) | ~op2(a[2:])
    elif op == "eon":
        r = rd(a[1]) ^ ~op2(a[2:])
    elif op == "mvn":
        r = ~op2(a[1:])
    elif op in ("neg", "negs"):
        r = -op2(a[1:])
    elif op in ("lsl", "lsr", "asr", "ror"):
        if isinstance(a[2], Imm):
            r = _shift(op, rd(a[1]), a[2].value, w)
        else:
            r = _shift(op, rd(a[1]), rd(a[2]) & (w - 1), w)
    elif op == "mov":
        r = rd(a[1])
    elif op in ("movz", "movn"):
        sh = a[2].amount if len(a) > 2 else 0
        r = _ext(_bv(a[1].value) & 0xFFFF, w) << _ext(_bv(sh), w)
        if op == "movn":
            r = ~r
    elif op == "movk":
        sh = _ext(_bv(a[2].amount if len(a) > 2 else 0), w)
        field = z3.BitVecVal(0xFFFF, w) << sh
        r = (rd(a[0]) & ~field) | ((_ext(_bv(a[1].value), w) & 0xFFFF) << sh)
    elif op in ("sxtw", "sxth", "sxtb", "uxtb", "uxth"):
        bits = {"w": 32, "h": 16, "b": 8}[op[-1]]
        src = z3.Extract(bits - 1, 0, st[canonical_reg(ARM, a[1].name)] if canonical_reg(ARM, a[1].name) != "xzr"
                         else z3.BitVecVal(0, 64))
        r = (z3.SignExt if op[0] == "s" else z3.ZeroExt)(w - bits, src)
    elif op in ("ubfx", "sbfx", "ubfiz", "sbfiz"):
        # shift formulas: the same terms whether the field positions are numbers or holes
        lsb, width = _ext(_bv(a[2].value), w), _ext(_bv(a[3].value), w)
        if not (z3.is_expr(a[2].value) or z3.is_expr(a[3].value)):
            if not (0 <= a[2].value < w and 1 <= a[3].value <= w - (a[2].value if op.endswith("x") else 0)):
                raise Unsupported(f"{op}: bad field {a[2].value},{a[3].value}")
        x, wv = rd(a[1]), z3.BitVecVal(w, w)
        right = (lambda v, n: v >> n) if op[0] == "s" else z3.LShR
        if op.endswith("x"):
            r = right(x << (wv - lsb - width), wv - width)
        else:
            r = right(x << (wv - width), wv - width - lsb)
    else:
        raise Unsupported(op)
    name = canonical_reg(ARM, dest)
    if name != "xzr":
        st[name] = z3.ZeroExt(64 - w, r) if w < 64 else r
    return st


def _rv_step(ins: Instr, st: dict):
    op, a = ins.op, ins.args
    if not a or not isinstance(a[0], Reg):
        raise Unsupported(op)

    def rd(x):
        if isinstance(x, Reg):
            name = canonical_reg("riscv", x.name)
            return z3.BitVecVal(0, 64) if name == "zero" else st[name]
        if isinstance(x, RegChoice):
            return _read_choice(st, x)
        if isinstance(x, Imm):
            return _bv(x.value)
        raise Unsupported(f"{op}: operand {x}")

    def w32(f, *xs):
        return z3.SignExt(32, f(*[z3.Extract(31, 0, x) for x in xs]))

    one, zero = z3.BitVecVal(1, 64), z3.BitVecVal(0, 64)
    x = [rd(v) for v in a[1:]]
    base = op[:-1] if op.endswith("i") and op not in ("lui", "li", "mulhsu") else op
    if op.endswith("iw"):
        base = op[:-2] + "w"
    if op == "sltiu":
        base = "sltu"
    if base == "add":
        r = x[0] + x[1]
    elif base == "sub":
        r = x[0] - x[1]
    elif base == "mul":
        r = x[0] * x[1]
    elif base in ("mulh", "mulhu", "mulhsu"):
        e1 = z3.ZeroExt if base == "mulhu" else z3.SignExt
        e2 = z3.SignExt if base == "mulh" else z3.ZeroExt
        r = z3.Extract(127, 64, e1(64, x[0]) * e2(64, x[1]))
    elif base == "and":
        r = x[0] & x[1]
    elif base == "or":
        r = x[0] | x[1]
    elif base == "xor":
        r = x[0] ^ x[1]
    elif base == "sll":
        r = x[0] << (x[1] & 63)
    elif base == "srl":
        r = z3.LShR(x[0], x[1] & 63)
    elif base == "sra":
        r = x[0] >> (x[1] & 63)
    elif base == "slt":
        r = z3.If(x[0] < x[1], one, zero)
    elif base == "sltu":
        r = z3.If(z3.ULT(x[0], x[1]), one, zero)
    elif base == "addw":
        r = w32(lambda p, q: p + q, x[0], x[1])
    elif base == "subw":
        r = w32(lambda p, q: p - q, x[0], x[1])
    elif base == "mulw":
        r = w32(lambda p, q: p * q, x[0], x[1])
    elif base == "sllw":
        r = w32(lambda p, q: p << (q & 31), x[0], x[1])
    elif base == "srlw":
        r = w32(lambda p, q: z3.LShR(p, q & 31), x[0], x[1])
    elif base == "sraw":
        r = w32(lambda p, q: p >> (q & 31), x[0], x[1])
    elif op == "lui":
        r = z3.SignExt(32, z3.Extract(31, 0, (x[0] & 0xFFFFF) << 12))
    elif op in ("li", "mv"):
        r = x[0]
    elif op == "neg":
        r = -x[0]
    elif op == "negw":
        r = w32(lambda p: -p, x[0])
    elif op == "not":
        r = ~x[0]
    elif op == "sext.w":
        r = z3.SignExt(32, z3.Extract(31, 0, x[0]))
    elif op == "seqz":
        r = z3.If(x[0] == 0, one, zero)
    elif op == "snez":
        r = z3.If(x[0] != 0, one, zero)
    elif op == "sltz":
        r = z3.If(x[0] < 0, one, zero)
    elif op == "sgtz":
        r = z3.If(x[0] > 0, one, zero)
    else:
        raise Unsupported(op)
    name = canonical_reg("riscv", a[0].name)
    if name != "zero":
        st[name] = r
    return st


def step(isa: str, ins: Instr, st: dict) -> dict:
    if isinstance(ins, OpChoice):  # each variant on its own copy, merged register by register
        outs = [step(isa, v, dict(st)) for v in ins.variants]
        merged = dict(outs[-1])
        for i in range(len(outs) - 2, -1, -1):
            for r, val in outs[i].items():
                if r not in merged or not val.eq(merged[r]):
                    merged[r] = z3.If(ins.sel == i, val, merged.get(r, val))
        return merged
    try:
        return (_arm_step if isa == ARM else _rv_step)(ins, st)
    except (IndexError, AttributeError, TypeError) as e:
        raise Unsupported(f"{ins.op}: malformed operands") from e


def run_block(isa: str, instrs, state: dict) -> dict:
    """Symbolically execute instructions; `state` maps every register read to a 64-bit term."""
    st = dict(state)
    for ins in instrs:
        st = step(isa, ins, st)
    return st


# ------------------------------------------------------------------ immediate domains

def arm_logical_ok(value: int, width: int = 64) -> bool:
    """Whether `value` is an AArch64 bitmask immediate (a rotated run of ones, replicated)."""
    mask = (1 << width) - 1
    v = value & mask
    if v in (0, mask):
        return False
    size = width
    while size > 2:  # smallest repeating element
        half = size // 2
        if (v >> half) & ((1 << half) - 1) != v & ((1 << half) - 1):
            break
        size = half
    e = v & ((1 << size) - 1)
    emask = (1 << size) - 1
    for rot in range(size):
        r = ((e >> rot) | (e << (size - rot))) & emask
        if r and (r & (r + 1)) == 0:  # a run of ones starting at bit 0
            return True
    return False


def arm_logical_domain(v, width: int):
    """z3: `v` (a `width`-bit term) is an AArch64 bitmask immediate. For some element size e, v repeats
    every e bits and each element holds one cyclic run of ones: the run starts (bits set whose lower
    neighbour, cyclically, is clear) of one element are a single bit. Cheaper for z3 than a set of values."""
    ones = (1 << width) - 1
    starts = v & ~z3.RotateLeft(v, 1)
    sizes = []
    for e in (2, 4, 8, 16, 32, 64):
        if e > width:
            break
        low = z3.Extract(e - 1, 0, starts)
        periodic = z3.BoolVal(True) if e == width else v == z3.RotateLeft(v, e)
        sizes.append(z3.And(periodic, low != 0, low & (low - 1) == 0))
    return z3.And(v != 0, v != ones, z3.Or(sizes))


def arm_mov_domain(h, wide: bool):
    """z3: `mov` can encode `h`: a 16-bit chunk at a 16-bit boundary (movz), the complement of one
    (movn), or a bitmask immediate (orr); for w registers as a 32-bit value, written signed or not."""
    w = 64 if wide else 32
    v = h if wide else z3.Extract(31, 0, h)
    full = (1 << w) - 1
    chunk = [z3.Or(v & (full ^ (0xFFFF << s)) == 0, ~v & (full ^ (0xFFFF << s)) == 0) for s in range(0, w, 16)]
    dom = z3.Or(*chunk, arm_logical_domain(v, w))
    return dom if wide else z3.And(h >= -(1 << 31), h <= full, dom)


def hole_domain(isa: str, ins: Instr, index: int, h):
    """z3 constraint on hole `h` (64-bit, signed value) at operand `index` so it can be encoded.
    `ins` is the instruction with its holes as terms, so that operands constrained together (a
    bit-field's lsb and width) stay correct when both are holes. For a line whose opcode is a hole too,
    the constraint of the opcode chosen."""
    if isinstance(ins, OpChoice):
        doms = [hole_domain(isa, v, index, h) for v in ins.variants]
        return z3.And([z3.Implies(ins.sel == i, z3.BoolVal(False) if d is None else d) for i, d in enumerate(doms)])
    op, a = ins.op, ins.args
    arg = a[index]
    wide = not (isinstance(a[0], Reg) and a[0].name.startswith("w"))
    if isinstance(arg, Shift):
        if op in ("movz", "movk", "movn"):
            return z3.Or(*[h == s for s in ((0, 16, 32, 48) if wide else (0, 16))])
        if op in ("add", "adds", "sub", "subs") and isinstance(a[2], Imm):
            return z3.Or(h == 0, h == 12)
        return z3.And(h >= 0, h < (64 if wide else 32))

    def rng(lo, hi):
        return z3.And(h >= lo, h <= hi)
    if isa == ARM:
        if op in ("add", "adds", "sub", "subs", "cmp", "cmn"):
            return rng(0, 4095)
        if op in ("movz", "movk", "movn"):
            return rng(0, 65535)
        if op == "mov":  # the aliases the assembler takes: one movz, one movn, or an orr bitmask immediate
            return arm_mov_domain(h, wide)
        if op in ("lsl", "lsr", "asr", "ror"):
            return rng(0, 63 if wide else 31)
        if op in ("and", "ands", "orr", "eor"):
            # the exact encodable set, so that CEGIS never proposes a value the assembler rejects
            if wide:
                return arm_logical_domain(h, 64)
            return z3.And(z3.Extract(63, 32, h) == 0, arm_logical_domain(z3.Extract(31, 0, h), 32))
        if op in ("ubfx", "sbfx", "ubfiz", "sbfiz"):  # lsb + width <= w; the other may be a hole (a term)
            w = 64 if wide else 32
            lsb, width = (h, a[3].value) if index == 2 else (a[2].value, h)
            return z3.And(lsb >= 0, width >= 1, lsb + width <= w, lsb < w, width <= w)
        return None
    if op in ("addi", "andi", "ori", "xori", "slti", "sltiu", "addiw"):
        return rng(-2048, 2047)
    if op in ("slli", "srli", "srai"):
        return rng(0, 63)
    if op in ("slliw", "srliw", "sraiw"):
        return rng(0, 31)
    if op == "lui":
        return rng(0, (1 << 20) - 1)
    if op == "li":
        return z3.BoolVal(True)
    return None


def value_ok(isa: str, ins: Instr, index: int, value: int) -> bool:
    """Encodability checks z3 does not express (AArch64 bitmask immediates, bit-field bounds)."""
    if isa == ARM and ins.op in ("and", "ands", "orr", "eor") and isinstance(ins.args[index], Imm):
        wide = not ins.args[0].name.startswith("w")
        return arm_logical_ok(value, 64 if wide else 32)
    return True
