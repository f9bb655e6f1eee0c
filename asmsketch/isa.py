"""The two instruction sets: names, LLVM triples, register files and the ABI correspondence."""

from __future__ import annotations

ARM = "arm"
RISCV = "riscv"
ISAS = (ARM, RISCV)

TRIPLE = {ARM: "aarch64-linux-gnu", RISCV: "riscv64-linux-gnu"}
MATTR = {ARM: "", RISCV: "+m,-relax"}
COMMENT = {ARM: "//", RISCV: "#"}

ARM_X = [f"x{i}" for i in range(31)]
ARM_W = [f"w{i}" for i in range(31)]
ARM_SPECIAL = ["sp", "wsp", "xzr", "wzr", "fp", "lr"]
ARM_REGS = set(ARM_X + ARM_W + ARM_SPECIAL)

RV_ABI = (["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"]
          + [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + ["t3", "t4", "t5", "t6"])
RV_REGS = set(RV_ABI) | {f"x{i}" for i in range(32)} | {"fp"}
REGS = {ARM: ARM_REGS, RISCV: RV_REGS}

# Return and argument registers, the stack pointer, frame pointer, link register and zero:
# the parts of the calling conventions the two ISAs share one for one.
ABI_PAIRS = [(f"x{i}", f"a{i}") for i in range(8)] + [
    ("sp", "sp"), ("x29", "s0"), ("x30", "ra"), ("xzr", "zero")]
RETURN_REG = {ARM: "x0", RISCV: "a0"}
ARG_REGS = {ARM: [f"x{i}" for i in range(8)], RISCV: [f"a{i}" for i in range(8)]}


def other(isa: str) -> str:
    return RISCV if isa == ARM else ARM


def canonical_reg(isa: str, reg: str) -> str:
    """The 64-bit name of a register (w5 -> x5, fp -> x29 / s0)."""
    if isa == ARM:
        if reg in ("wzr", "xzr"):
            return "xzr"
        if reg in ("wsp", "sp"):
            return "sp"
        if reg == "fp":
            return "x29"
        if reg == "lr":
            return "x30"
        if reg[0] == "w":
            return "x" + reg[1:]
        return reg
    if reg == "fp":
        return "s0"
    if reg.startswith("x") and reg[1:].isdigit():
        return RV_ABI[int(reg[1:])]
    return reg


def abi_map(src_isa: str) -> dict[str, str]:
    """Source register -> target register under the shared calling-convention roles."""
    if src_isa == ARM:
        return {a: r for a, r in ABI_PAIRS}
    return {r: a for a, r in ABI_PAIRS}
