"""LLVM 14 tools (llc, llvm-mc) and ELF code extraction with pyelftools."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache

from .errors import AsmSketchError
from .isa import MATTR, TRIPLE

INSTALL_HINT = "install LLVM 14 (Debian: apt-get install llvm-14) or run scripts/setup_asmsketch.sh"


@lru_cache(maxsize=None)
def find_tool(name: str) -> str | None:
    """The -14 build first (the corpus was made with it), then an unversioned one."""
    for cand in (f"{name}-14", name):
        path = shutil.which(cand)
        if path:
            return path
    return None


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise AsmSketchError(f"'{name}' not found: {INSTALL_HINT}")
    return path


def _mattr(isa: str) -> list[str]:
    return [f"-mattr={MATTR[isa]}"] if MATTR[isa] else []


def compile_ir(ir: str, isa: str, opt: int) -> str:
    """LLVM IR text -> assembly text for one ISA at -O{opt}."""
    llc = require_tool("llc")
    res = subprocess.run([llc, f"-O{opt}", f"-mtriple={TRIPLE[isa]}", *_mattr(isa), "-o", "-"],
                         input=ir, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise AsmSketchError(f"llc failed: {res.stderr.strip().splitlines()[0] if res.stderr else res.returncode}")
    return res.stdout


@dataclass
class Code:
    data: bytes
    symbols: dict[str, int]  # name -> offset in .text


def assemble(asm: str, isa: str) -> Code:
    """Assembly text -> (.text bytes, symbol offsets). Raises AsmSketchError on assembler errors."""
    from elftools.elf.elffile import ELFFile

    mc = require_tool("llvm-mc")
    with tempfile.TemporaryDirectory(prefix="asmsketch-") as tmp:
        obj = os.path.join(tmp, "out.o")
        res = subprocess.run([mc, f"-triple={TRIPLE[isa].split('-')[0]}", *_mattr(isa), "-filetype=obj",
                              "-o", obj], input=asm, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            msg = next((ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr.strip())
            raise AsmSketchError(f"assembler rejected the code: {msg.replace('<stdin>', 'asm').strip()}")
        with open(obj, "rb") as fh:
            elf = ELFFile(io.BytesIO(fh.read()))
    text = elf.get_section_by_name(".text")
    rel = elf.get_section_by_name(".rela.text")
    if rel is not None and rel.num_relocations():
        raise AsmSketchError("the code needs relocations (calls, globals or constant pools): not supported")
    symbols = {}
    symtab = elf.get_section_by_name(".symtab")
    for sym in symtab.iter_symbols():
        if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE") and sym["st_shndx"] != "SHN_UNDEF":
            symbols[sym.name] = sym["st_value"]
    return Code(text.data(), symbols)


def have_llvm() -> bool:
    return find_tool("llc") is not None and find_tool("llvm-mc") is not None


__all__ = ["Code", "assemble", "compile_ir", "find_tool", "have_llvm", "require_tool"]
