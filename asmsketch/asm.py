"""Assembly IR for AArch64 and RV64: parse, print, basic blocks, pure blocks, liveness.

Text in either ISA's LLVM syntax parses into `Function`s of `Instr`s whose operands are typed
(register, immediate, shift, memory, label, condition). Immediates are held as Python ints and
printed in decimal, so one function has one canonical text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .errors import AsmSketchError
from .isa import ARM, COMMENT, REGS, RISCV, RETURN_REG, canonical_reg


@dataclass(frozen=True)
class Reg:
    name: str


@dataclass(frozen=True)
class Imm:
    value: int


@dataclass(frozen=True)
class Shift:
    kind: str  # lsl, lsr, asr, ror
    amount: int


@dataclass(frozen=True)
class Mem:
    base: str
    offset: int
    writeback: bool = False  # AArch64 pre-index "[...]!"


@dataclass(frozen=True)
class Label:
    name: str


@dataclass(frozen=True)
class Cond:
    name: str


Operand = Reg | Imm | Shift | Mem | Label | Cond


@dataclass
class Instr:
    op: str
    args: list
    label: str | None = None  # a label defined just before this instruction

    def with_args(self, args) -> "Instr":
        return replace(self, args=list(args))


@dataclass
class Function:
    isa: str
    name: str
    body: list[Instr] = field(default_factory=list)
    end_labels: list[str] = field(default_factory=list)  # labels after the last instruction

    def text(self, with_header: bool = True) -> str:
        return print_function(self, with_header)


ARM_CONDS = {"eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt",
             "gt", "le", "al", "nv"}
ARM_COND_OPS = {"csel", "csinc", "csinv", "csneg", "cset", "csetm", "cinc", "cinv", "cneg", "ccmp", "ccmn"}
SHIFT_KINDS = {"lsl", "lsr", "asr", "ror"}
ARM_BRANCHES = {"b", "bl", "br", "blr", "ret", "cbz", "cbnz", "tbz", "tbnz"}
RV_BRANCHES = {"beq", "bne", "blt", "bge", "bltu", "bgeu", "beqz", "bnez", "blez", "bgez", "bltz",
               "bgtz", "bgt", "ble", "bgtu", "bleu", "j", "jal", "jalr", "jr", "ret", "call", "tail"}


def is_branch(isa: str, op: str) -> bool:
    if isa == ARM:
        return op in ARM_BRANCHES or op.startswith("b.")
    return op in RV_BRANCHES


def _int(text: str, where: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise AsmSketchError(f"{where}: '{text}' is not an integer") from None


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


_MEM_ARM = re.compile(r"^\[\s*([a-z0-9]+)\s*(?:,\s*#?(-?(?:0x[0-9a-f]+|\d+)))?\s*\](!?)$")
_MEM_RV = re.compile(r"^(-?(?:0x[0-9a-f]+|\d+))?\(\s*([a-z0-9]+)\s*\)$")
_SHIFT = re.compile(r"^(lsl|lsr|asr|ror)\s+#?(-?(?:0x[0-9a-f]+|\d+))$")
_LABEL = re.compile(r"^[.A-Za-z_][\w.$]*$")


def parse_operand(isa: str, op: str, text: str, where: str) -> Operand:
    t = text.strip().lower()
    regs = REGS[isa]
    if t in regs:
        return Reg(t)
    if isa == ARM:
        if t.startswith("#"):
            return Imm(_int(t[1:], where))
        m = _SHIFT.match(t)
        if m:
            return Shift(m.group(1), _int(m.group(2), where))
        m = _MEM_ARM.match(t)
        if m:
            if m.group(1) not in regs:
                raise AsmSketchError(f"{where}: '{m.group(1)}' is not an AArch64 register")
            return Mem(m.group(1), _int(m.group(2), where) if m.group(2) else 0, m.group(3) == "!")
        if op in ARM_COND_OPS and t in ARM_CONDS:
            return Cond(t)
    else:
        if re.fullmatch(r"-?(0x[0-9a-f]+|\d+)", t):
            return Imm(_int(t, where))
        m = _MEM_RV.match(t)
        if m:
            if m.group(2) not in regs:
                raise AsmSketchError(f"{where}: '{m.group(2)}' is not a RISC-V register")
            return Mem(m.group(2), _int(m.group(1), where) if m.group(1) else 0)
    if is_branch(isa, op) and _LABEL.match(text.strip()):
        return Label(text.strip())
    raise AsmSketchError(f"{where}: cannot read operand '{text.strip()}' of '{op}' "
                         f"(relocations, floating point and vector operands are not supported)")


def parse_line(isa: str, line: str, where: str = "line") -> Instr:
    line = line.strip()
    m = re.match(r"^([a-z][a-z0-9.]*)\s*(.*)$", line.lower())
    if not m:
        raise AsmSketchError(f"{where}: cannot read instruction '{line}'")
    op, rest = m.group(1), line[len(m.group(1)):].strip()
    args = [parse_operand(isa, op, part, where) for part in _split_top(rest)] if rest else []
    return Instr(op, args)


def _strip_comment(isa: str, line: str) -> str:
    for mark in (COMMENT[isa], ";" if isa == ARM else None):
        if mark and mark in line:
            line = line[: line.index(mark)]
    return line.rstrip()


def parse_functions(isa: str, text: str, source: str = "input") -> list[Function]:
    """Every function (a global symbol's code up to its .size / next function) in an assembly file."""
    funcs: list[Function] = []
    cur: Function | None = None
    pending: list[str] = []
    globl = set(re.findall(r"^\s*\.globl\s+([\w.$]+)", text, re.M))
    for num, raw in enumerate(text.splitlines(), 1):
        where = f"{source}:{num}"
        line = _strip_comment(isa, raw).strip()
        if not line:
            continue
        m = re.match(r"^([.A-Za-z_][\w.$]*):\s*(.*)$", line)
        if m:
            name, line = m.group(1), m.group(2).strip()
            if name in globl or (cur is None and not name.startswith(".")):
                cur = Function(isa, name)
                funcs.append(cur)
                pending = []
            elif cur is not None:
                pending.append(name)
            if not line:
                continue
        if line.startswith("."):
            if line.startswith(".size") and cur is not None:
                cur.end_labels = pending
                cur, pending = None, []
            continue
        if cur is None:
            raise AsmSketchError(f"{where}: instruction outside a function: '{line}'")
        ins = parse_line(isa, line, where)
        if pending:
            ins.label = pending[-1]
            if len(pending) > 1:  # several labels on one spot: keep one, rename the rest
                alias = {p: pending[-1] for p in pending[:-1]}
                for f in cur.body:
                    f.args = [Label(alias.get(a.name, a.name)) if isinstance(a, Label) else a for a in f.args]
            pending = []
        cur.body.append(ins)
    if cur is not None:
        cur.end_labels = pending
    if not funcs:
        raise AsmSketchError(f"{source}: no function found (expected 'name:' followed by instructions)")
    for f in funcs:
        if not f.body:
            raise AsmSketchError(f"{source}: function '{f.name}' has no instructions")
    return funcs


def normalize_labels(func: Function) -> Function:
    """Rename local labels to .L1, .L2, ... in order of first appearance (one canonical text)."""
    names: dict[str, str] = {}

    def new(name):
        if name not in names:
            names[name] = f".L{len(names) + 1}"
        return names[name]

    body = []
    for ins in func.body:
        lab = new(ins.label) if ins.label else None
        args = [Label(new(a.name)) if isinstance(a, Label) and a.name != func.name else a for a in ins.args]
        body.append(Instr(ins.op, args, lab))
    used = {a.name for ins in func.body for a in ins.args if isinstance(a, Label)}
    ends = [new(x) for x in func.end_labels if x in used]
    return Function(func.isa, func.name, body, ends)


def format_operand(isa: str, a: Operand) -> str:
    if isinstance(a, Reg):
        return a.name
    if isinstance(a, Imm):
        return f"#{a.value}" if isa == ARM else str(a.value)
    if isinstance(a, Shift):
        return f"{a.kind} #{a.amount}"
    if isinstance(a, Mem):
        if isa == ARM:
            inner = f"[{a.base}, #{a.offset}]" if a.offset else f"[{a.base}]"
            return inner + ("!" if a.writeback else "")
        return f"{a.offset}({a.base})"
    if isinstance(a, (Label, Cond)):
        return a.name
    raise TypeError(a)


def format_instr(isa: str, ins: Instr) -> str:
    ops = ", ".join(format_operand(isa, a) for a in ins.args)
    return f"{ins.op} {ops}".strip()


def print_function(func: Function, with_header: bool = True) -> str:
    out = []
    if with_header:
        out += ["\t.text", f"\t.globl\t{func.name}", "\t.p2align\t2", f"{func.name}:"]
    for ins in func.body:
        if ins.label:
            out.append(f"{ins.label}:")
        out.append("\t" + format_instr(func.isa, ins))
    out += [f"{lab}:" for lab in func.end_labels]
    if with_header:
        out.append(f".Lend_{func.name}:")
        out.append(f"\t.size\t{func.name}, .Lend_{func.name}-{func.name}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- registers read / written

def _regs_of(isa: str, args) -> list[str]:
    return [canonical_reg(isa, a.name) for a in args if isinstance(a, Reg)]


ARM_NO_DEST = {"cmp", "cmn", "tst", "str", "stp", "strb", "strh", "stur", "b", "br", "ret", "cbz",
               "cbnz", "tbz", "tbnz", "ccmp", "ccmn"}
RV_NO_DEST = {"sd", "sw", "sh", "sb", "ret", "j", "jr"} | RV_BRANCHES - {"jal", "jalr"}
FLAG_WRITERS = {"cmp", "cmn", "tst", "adds", "subs", "ands", "bics", "negs", "ccmp", "ccmn"}


def reads_writes(isa: str, ins: Instr) -> tuple[list[str], list[str]]:
    """(registers read, registers written), 64-bit names, zero register excluded."""
    regs = _regs_of(isa, ins.args)
    mem_bases = [canonical_reg(isa, a.base) for a in ins.args if isinstance(a, Mem)]
    op = ins.op
    if isa == ARM:
        if op == "ret":
            rd, wr = ["x30", "x0"], []
        elif op in ARM_NO_DEST or op.startswith("b."):
            rd, wr = regs, []
        elif op == "movk":
            rd, wr = regs[:1], regs[:1]
        elif op == "ldp":
            rd, wr = [], regs[:2]
        elif op in ("stp",):
            rd, wr = regs, []
        else:
            rd, wr = regs[1:], regs[:1]
        if op in ("bl", "blr"):
            wr = ["x30", "x0"]
        wb = [m for a, m in zip([a for a in ins.args if isinstance(a, Mem)], mem_bases) if a.writeback]
        if op in ("ldp", "stp", "ldr", "str") and any(isinstance(a, Imm) for a in ins.args):
            wb = mem_bases  # post-index
        zero = "xzr"
    else:
        if op == "ret":
            rd, wr = ["ra", "a0"], []
        elif op in RV_NO_DEST:
            rd, wr = regs, []
        else:
            rd, wr = regs[1:], regs[:1]
        wb = []
        zero = "zero"
    rd = [r for r in rd + mem_bases if r != zero]
    wr = [r for r in wr + wb if r != zero]
    return rd, wr


# ---------------------------------------------------------------- blocks

@dataclass
class Block:
    start: int  # index of first instruction
    end: int  # one past the last

    def span(self):
        return range(self.start, self.end)


def basic_blocks(func: Function) -> list[Block]:
    """Split at labels and after branches."""
    starts = {0}
    for i, ins in enumerate(func.body):
        if ins.label:
            starts.add(i)
        if is_branch(func.isa, ins.op):
            starts.add(i + 1)
    starts = sorted(s for s in starts if s < len(func.body))
    return [Block(s, e) for s, e in zip(starts, starts[1:] + [len(func.body)])]


def successors(func: Function, blocks: list[Block]) -> list[list[int]]:
    at = {}
    for bi, b in enumerate(blocks):
        if func.body[b.start].label:
            at[func.body[b.start].label] = bi
    ends = set(func.end_labels)
    succ = []
    for bi, b in enumerate(blocks):
        last = func.body[b.end - 1]
        out = []
        labels = [a.name for a in last.args if isinstance(a, Label)]
        for lab in labels:
            if lab in at:
                out.append(at[lab])
            elif lab not in ends and lab != func.name:
                raise AsmSketchError(f"function {func.name}: branch to unknown label '{lab}'")
        uncond = last.op in ("b", "ret", "br", "j", "jr") or (func.isa == RISCV and last.op == "ret")
        if not uncond and bi + 1 < len(blocks):
            out.append(bi + 1)
        succ.append(out)
    return succ


def live_after(func: Function) -> list[set[str]]:
    """For each instruction, the registers live just after it (backward dataflow over the CFG)."""
    blocks = basic_blocks(func)
    succ = successors(func, blocks)
    rw = [reads_writes(func.isa, ins) for ins in func.body]
    live_in = [set() for _ in blocks]
    changed = True
    while changed:
        changed = False
        for bi in reversed(range(len(blocks))):
            live = set().union(*[live_in[s] for s in succ[bi]]) if succ[bi] else set()
            for i in reversed(blocks[bi].span()):
                rd, wr = rw[i]
                live = (live - set(wr)) | set(rd)
            if live != live_in[bi]:
                live_in[bi], changed = live, True
    after = [set() for _ in func.body]
    for bi, b in enumerate(blocks):
        live = set().union(*[live_in[s] for s in succ[bi]]) if succ[bi] else set()
        if func.body[b.end - 1].op == "ret":
            live = {RETURN_REG[func.isa]}
        for i in reversed(b.span()):
            after[i] = set(live)
            rd, wr = rw[i]
            live = (live - set(wr)) | set(rd)
    return after
