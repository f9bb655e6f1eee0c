"""Run a function's machine code under unicorn: arguments in, return register out.

Emulation only: no system calls are serviced (a trap stops the run), memory is a fresh code page
and a fresh stack, and each run has an instruction budget, so hostile code cannot escape or hang.
"""

from __future__ import annotations

from unicorn import Uc, UcError, UC_ARCH_ARM64, UC_ARCH_RISCV, UC_MODE_ARM, UC_MODE_RISCV64
from unicorn import arm64_const as A
from unicorn import riscv_const as R

from .errors import AsmSketchError
from .isa import ARM

CODE_BASE = 0x100000
STACK_BASE = 0x7F000000
STACK_SIZE = 0x10000
RETURN_ADDR = 0xDEAD000
MAX_STEPS = 20000
MASK = (1 << 64) - 1

ARG_REGS = {ARM: [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(8)],
            "riscv": [getattr(R, f"UC_RISCV_REG_A{i}") for i in range(8)]}
SP = {ARM: A.UC_ARM64_REG_SP, "riscv": R.UC_RISCV_REG_SP}
LR = {ARM: A.UC_ARM64_REG_X30, "riscv": R.UC_RISCV_REG_RA}
PC = {ARM: A.UC_ARM64_REG_PC, "riscv": R.UC_RISCV_REG_PC}


class Machine:
    """One emulator per ISA and code blob, reused across inputs (registers reset each call)."""

    def __init__(self, isa: str, code: bytes):
        self.isa = isa
        self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM) if isa == ARM else Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
        size = (len(code) + 0xFFF) & ~0xFFF or 0x1000
        self.uc.mem_map(CODE_BASE, size)
        self.uc.mem_write(CODE_BASE, code)
        self.uc.mem_map(STACK_BASE, STACK_SIZE)
        self.uc.mem_map(RETURN_ADDR, 0x1000)
        self.code_size = len(code)

    def call(self, offset: int, args, regs: dict | None = None) -> int | None:
        """Return register after running from `offset` until it returns; None if it faults or loops."""
        uc = self.uc
        for r in ARG_REGS[self.isa]:
            uc.reg_write(r, 0)
        for r, v in zip(ARG_REGS[self.isa], args):
            uc.reg_write(r, v & MASK)
        for r, v in (regs or {}).items():
            uc.reg_write(r, v & MASK)
        uc.mem_write(STACK_BASE, bytes(STACK_SIZE))
        uc.reg_write(SP[self.isa], STACK_BASE + STACK_SIZE - 0x100)
        uc.reg_write(LR[self.isa], RETURN_ADDR)
        try:
            uc.emu_start(CODE_BASE + offset, RETURN_ADDR, count=MAX_STEPS)
        except UcError:
            return None
        if uc.reg_read(PC[self.isa]) != RETURN_ADDR:
            return None
        return uc.reg_read(ARG_REGS[self.isa][0]) & MASK

    def run_range(self, start: int, end: int, regs: dict) -> bool:
        """Run [start, end) with the given register values (block-level checks)."""
        for r, v in regs.items():
            self.uc.reg_write(r, v & MASK)
        try:
            self.uc.emu_start(CODE_BASE + start, CODE_BASE + end, count=MAX_STEPS)
        except UcError:
            return False
        return self.uc.reg_read(PC[self.isa]) == CODE_BASE + end


def run_function(isa: str, code: bytes, offset: int, inputs) -> list[int | None]:
    """Return values of the function at `offset` for each argument tuple in `inputs`."""
    if not code:
        raise AsmSketchError("no machine code to run")
    m = Machine(isa, code)
    return [m.call(offset, args) for args in inputs]
