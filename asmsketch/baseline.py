"""A rule-based transpiler (the "engineered transpiler" peer): one instruction at a time, a fixed
register map, immediates legalised through scratch registers, compares carried to their users.

Written here for the integer subset llc emits for the tier A corpus; anything else raises
AsmSketchError ("no translation"), as a rule-based system does outside its rules.
"""

from __future__ import annotations

from .asm import Function, Imm, Instr, Reg, format_instr
from .errors import AsmSketchError
from .isa import ARM, RISCV, canonical_reg

MASK = (1 << 64) - 1
_ARM_TO_RV = {**{f"x{i}": f"a{i}" for i in range(8)}, "x8": "t0", "x9": "t1", "x10": "t2", "x11": "t3",
              "x12": "t4", "x13": "s2", "x14": "s3", "x15": "s4", "x16": "s5", "x17": "s6", "x18": "s7",
              "x19": "s8", "x20": "s9", "x29": "s0", "x30": "ra", "sp": "sp", "xzr": "zero"}
_RV_TO_ARM = {**{f"a{i}": f"x{i}" for i in range(8)}, "t0": "x8", "t1": "x9", "t2": "x10", "t3": "x11",
              "t4": "x12", "t5": "x13", "t6": "x14", "s1": "x19", "s2": "x20", "s3": "x21", "s0": "x29",
              "ra": "x30", "sp": "sp", "zero": "xzr"}
RV_SCRATCH = ("t5", "t6")
ARM_SCRATCH = ("x16", "x17")
_COND_RV = {"eq": "beq", "ne": "bne", "lt": "blt", "ge": "bge", "gt": "bgt", "le": "ble", "lo": "bltu",
            "cc": "bltu", "hs": "bgeu", "cs": "bgeu", "hi": "bgtu", "ls": "bleu"}
_RV_COND = {"beq": "eq", "bne": "ne", "blt": "lt", "bge": "ge", "bltu": "lo", "bgeu": "hs", "bgt": "gt",
            "ble": "le", "bgtu": "hi", "bleu": "ls"}


def _sext32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


class _ArmToRv:
    def __init__(self):
        self.out, self.n = [], 0

    def reg(self, r):
        name = canonical_reg(ARM, r.name)
        if name not in _ARM_TO_RV:
            raise AsmSketchError(f"no rule for register {r.name}")
        return _ARM_TO_RV[name]

    def emit(self, line):
        self.out.append("\t" + line)

    def val(self, a, scratch):
        """Register holding operand a (an immediate goes into the scratch register)."""
        if isinstance(a, Reg):
            return self.reg(a)
        self.emit(f"li {scratch}, {a.value}")
        return scratch

    def fix32(self, d, is_w):
        if is_w:  # AArch64 w writes zero-extend
            self.emit(f"slli {d}, {d}, 32")
            self.emit(f"srli {d}, {d}, 32")

    def shifted(self, args, scratch):
        v = self.val(args[0], scratch)
        if len(args) > 1:
            s = args[1]
            if isinstance(args[0], Imm):
                return self.val(Imm(args[0].value << s.amount), scratch)
            op = {"lsl": "slli", "lsr": "srli", "asr": "srai"}[s.kind]
            self.emit(f"{op} {scratch}, {v}, {s.amount}")
            return scratch
        return v

    def instr(self, ins: Instr):
        op, a = ins.op, ins.args
        w = bool(a) and isinstance(a[0], Reg) and a[0].name.startswith("w")
        if op in ("cmp", "cmn", "subs", "adds") and (op in ("cmp", "cmn") or self.flags_live):
            lhs = self.val(a[-2] if op in ("cmp", "cmn") else a[1], "t5")
            self.emit(f"mv s10, {lhs}")
            rhs = self.shifted(a[-1:] if op in ("cmp", "cmn") else a[2:], "t6")
            self.emit(f"{'neg' if op in ('cmn', 'adds') else 'mv'} s11, {rhs}")
            if op in ("cmp", "cmn"):
                return
        if op in ("add", "sub", "adds", "subs"):
            d, x = self.reg(a[0]), self.val(a[1], "t5")
            if isinstance(a[2], Imm):
                v = a[2].value << (a[3].amount if len(a) > 3 else 0)
                v = -v if op.startswith("sub") else v
                if -2048 <= v < 2048:
                    self.emit(f"addi {d}, {x}, {v}")
                else:
                    self.emit(f"li t6, {v}")
                    self.emit(f"add {d}, {x}, t6")
            else:
                y = self.shifted(a[2:], "t6")
                self.emit(f"{'add' if op.startswith('add') else 'sub'} {d}, {x}, {y}")
            self.fix32(d, w)
        elif op in ("and", "orr", "eor", "ands", "bic", "orn", "eon"):
            d, x = self.reg(a[0]), self.val(a[1], "t5")
            y = self.shifted(a[2:], "t6")
            if op in ("bic", "orn", "eon"):
                self.emit(f"not t6, {y}")
                y = "t6"
            self.emit(f"{ {'and': 'and', 'ands': 'and', 'bic': 'and', 'orr': 'or', 'orn': 'or'}.get(op, 'xor')} {d}, {x}, {y}")
            self.fix32(d, w)
        elif op in ("mul", "madd", "msub"):
            d = self.reg(a[0])
            self.emit(f"mul tp, {self.val(a[1], 't5')}, {self.val(a[2], 't6')}")
            if op == "mul":
                self.emit(f"mv {d}, tp")
            else:
                self.emit(f"{'add' if op == 'madd' else 'sub'} {d}, {self.val(a[3], 't6')}, tp")
            self.fix32(d, w)
        elif op in ("lsl", "lsr", "asr"):
            d, x = self.reg(a[0]), self.val(a[1], "t5")
            if isinstance(a[2], Imm):
                rv = {"lsl": "slli", "lsr": "srli", "asr": "srai"}[op]
                self.emit(f"{rv}{'w' if w else ''} {d}, {x}, {a[2].value}")
            else:
                self.emit(f"{ {'lsl': 'sll', 'lsr': 'srl', 'asr': 'sra'}[op]}{'w' if w else ''} {d}, {x}, {self.reg(a[2])}")
            self.fix32(d, w)
        elif op in ("mov", "movz"):
            d = self.reg(a[0])
            if isinstance(a[1], Imm):
                v = a[1].value << (a[2].amount if len(a) > 2 else 0)
                self.emit(f"li {d}, {v & 0xFFFFFFFF if w else v}")
            else:
                self.emit(f"mv {d}, {self.reg(a[1])}")
                self.fix32(d, w)
        elif op == "movk":
            d, sh = self.reg(a[0]), a[2].amount if len(a) > 2 else 0
            self.emit(f"li t6, {~(0xFFFF << sh) & MASK}")
            self.emit(f"and {d}, {d}, t6")
            self.emit(f"li t6, {a[1].value << sh}")
            self.emit(f"or {d}, {d}, t6")
            self.fix32(d, w)
        elif op in ("neg", "mvn"):
            d, y = self.reg(a[0]), self.shifted(a[1:], "t6")
            self.emit(f"{'neg' if op == 'neg' else 'not'} {d}, {y}")
            self.fix32(d, w)
        elif op in ("csel", "cset", "csinc"):
            d = self.reg(a[0])
            cond = a[-1].name
            if op == "cset":
                self.emit("li s1, 1")
                fv = "zero"
            else:
                self.emit(f"mv s1, {self.reg(a[1])}")
                fv = self.reg(a[2])
            self.n += 1
            self.emit(f"{_COND_RV[cond]} s10, s11, .Lsel{self.n}")
            self.emit(f"{'addi' if op == 'csinc' else 'mv'} s1, {fv}{', 1' if op == 'csinc' else ''}")
            self.out.append(f".Lsel{self.n}:")
            self.emit(f"mv {d}, s1")
            self.fix32(d, w)
        elif op in ("ldr", "str"):
            r, m = a[0], a[1]
            rv = ("ld" if op == "ldr" else "sd") if not r.name.startswith("w") else ("lwu" if op == "ldr" else "sw")
            base = self.reg(Reg(m.base))
            post = a[2].value if len(a) > 2 else 0
            if m.writeback:
                self.emit(f"addi {base}, {base}, {m.offset}")
                self.emit(f"{rv} {self.reg(r)}, 0({base})")
            else:
                self.emit(f"{rv} {self.reg(r)}, {m.offset}({base})")
            if post:
                self.emit(f"addi {base}, {base}, {post}")
        elif op == "b":
            self.emit(f"j {a[0].name}")
        elif op.startswith("b.") and op[2:] in _COND_RV:
            self.emit(f"{_COND_RV[op[2:]]} s10, s11, {a[0].name}")
        elif op in ("cbz", "cbnz"):
            self.emit(f"{'beqz' if op == 'cbz' else 'bnez'} {self.reg(a[0])}, {a[1].name}")
        elif op == "ret":
            self.emit("ret")
        elif op in ("ubfx", "sbfx", "ubfiz", "sbfiz"):
            d, x, lsb, width = self.reg(a[0]), self.reg(a[1]), a[2].value, a[3].value
            right = "srai" if op[0] == "s" else "srli"
            if op.endswith("x"):
                self.emit(f"slli {d}, {x}, {64 - lsb - width}")
                self.emit(f"{right} {d}, {d}, {64 - width}")
            else:
                self.emit(f"slli {d}, {x}, {64 - width}")
                self.emit(f"{right} {d}, {d}, {64 - width - lsb}")
            self.fix32(d, w)
        elif op in ("sxtw",):
            self.emit(f"sext.w {self.reg(a[0])}, {self.reg(a[1])}")
        else:
            raise AsmSketchError(f"no rule for '{format_instr(ARM, ins)}'")


def _arm_to_rv(func: Function) -> str:
    t = _ArmToRv()
    t.flags_live = any(i.op.startswith("b.") or i.op in ("csel", "cset", "csinc") for i in func.body)
    for ins in func.body:
        if ins.label:
            t.out.append(f"{ins.label}:")
        t.instr(ins)
    t.out += [f"{lab}:" for lab in func.end_labels]
    return "\n".join(t.out) + "\n"


def _rv_to_arm(func: Function) -> str:
    out = []

    def emit(s):
        out.append("\t" + s)

    def reg(r, w=False):
        name = canonical_reg(RISCV, r.name)
        if name not in _RV_TO_ARM:
            raise AsmSketchError(f"no rule for register {r.name}")
        x = _RV_TO_ARM[name]
        if w:
            return "wzr" if x == "xzr" else "w" + x[1:]
        return x

    def li(d, v):
        v &= MASK
        emit(f"movz {d}, #{v & 0xFFFF}")
        for sh in (16, 32, 48):
            if (v >> sh) & 0xFFFF:
                emit(f"movk {d}, #{(v >> sh) & 0xFFFF}, lsl #{sh}")

    three = {"add": "add", "sub": "sub", "mul": "mul", "and": "and", "or": "orr", "xor": "eor", "sll": "lsl",
             "srl": "lsr", "sra": "asr"}
    for ins in func.body:
        if ins.label:
            out.append(f"{ins.label}:")
        op, a = ins.op, ins.args
        if op in three:
            emit(f"{three[op]} {reg(a[0])}, {reg(a[1])}, {reg(a[2])}")
        elif op in ("addw", "subw", "mulw"):
            emit(f"{three[op[:-1]]} {reg(a[0], True)}, {reg(a[1], True)}, {reg(a[2], True)}")
            emit(f"sxtw {reg(a[0])}, {reg(a[0], True)}")
        elif op in ("addi", "addiw"):
            w = op == "addiw"
            v = a[2].value
            if 0 <= v < 4096:
                emit(f"add {reg(a[0], w)}, {reg(a[1], w)}, #{v}")
            elif -4096 < v < 0:
                emit(f"sub {reg(a[0], w)}, {reg(a[1], w)}, #{-v}")
            else:
                li("x16", v)
                emit(f"add {reg(a[0], w)}, {reg(a[1], w)}, {'w16' if w else 'x16'}")
            if w:
                emit(f"sxtw {reg(a[0])}, {reg(a[0], True)}")
        elif op in ("andi", "ori", "xori"):
            li("x16", a[2].value)
            emit(f"{three[op[:-1]]} {reg(a[0])}, {reg(a[1])}, x16")
        elif op in ("slli", "srli", "srai"):
            emit(f"{three[op[:-1]]} {reg(a[0])}, {reg(a[1])}, #{a[2].value}")
        elif op in ("slliw", "srliw", "sraiw"):
            emit(f"{three[op[:-2]]} {reg(a[0], True)}, {reg(a[1], True)}, #{a[2].value}")
            emit(f"sxtw {reg(a[0])}, {reg(a[0], True)}")
        elif op == "lui":
            li(reg(a[0]), _sext32(a[1].value << 12))
        elif op == "li":
            li(reg(a[0]), a[1].value)
        elif op == "mv":
            emit(f"mov {reg(a[0])}, {reg(a[1])}")
        elif op in ("neg", "not"):
            emit(f"{'neg' if op == 'neg' else 'mvn'} {reg(a[0])}, {reg(a[1])}")
        elif op == "negw":
            emit(f"neg {reg(a[0], True)}, {reg(a[1], True)}")
            emit(f"sxtw {reg(a[0])}, {reg(a[0], True)}")
        elif op == "sext.w":
            emit(f"sxtw {reg(a[0])}, {reg(a[1], True)}")
        elif op in ("slt", "sltu", "slti", "sltiu"):
            rhs = f"#{a[2].value}" if isinstance(a[2], Imm) and 0 <= a[2].value < 4096 else None
            if isinstance(a[2], Imm) and rhs is None:
                li("x16", a[2].value)
                rhs = "x16"
            emit(f"cmp {reg(a[1])}, {rhs or reg(a[2])}")
            emit(f"cset {reg(a[0])}, {'lo' if 'u' in op else 'lt'}")
        elif op in ("seqz", "snez"):
            emit(f"cmp {reg(a[1])}, #0")
            emit(f"cset {reg(a[0])}, {'eq' if op == 'seqz' else 'ne'}")
        elif op in ("ld", "sd", "lw", "sw"):
            m = a[1]
            w = op in ("lw", "sw")
            emit(f"{'ldr' if op[0] == 'l' else 'str'} {reg(a[0], w)}, [{reg(Reg(m.base))}, #{m.offset}]")
            if op == "lw":
                emit(f"sxtw {reg(a[0])}, {reg(a[0], True)}")
        elif op in _RV_COND:
            emit(f"cmp {reg(a[0])}, {reg(a[1])}")
            emit(f"b.{_RV_COND[op]} {a[2].name}")
        elif op in ("beqz", "bnez"):
            emit(f"{'cbz' if op == 'beqz' else 'cbnz'} {reg(a[0])}, {a[1].name}")
        elif op == "j":
            emit(f"b {a[0].name}")
        elif op == "ret":
            emit("ret")
        else:
            raise AsmSketchError(f"no rule for '{format_instr(RISCV, ins)}'")
    out += [f"{lab}:" for lab in func.end_labels]
    return "\n".join(out) + "\n"


def transpile(func: Function) -> str:
    """The function's body in the other ISA; AsmSketchError when a rule is missing."""
    try:
        return _arm_to_rv(func) if func.isa == ARM else _rv_to_arm(func)
    except (IndexError, AttributeError, KeyError) as e:
        raise AsmSketchError(f"no rule for an operand form ({type(e).__name__})") from None


__all__ = ["transpile"]
