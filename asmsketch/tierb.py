"""Tier B: whole programs built with the aarch64/riscv64 cross GCCs and run under qemu-user.

Two uses: the hand-written C programs in programs/ run on both ISAs with their output compared
(the harness's own check), and a transpiled function is linked with a C driver that prints its results
on fixed inputs, which gives the third verification level (qemu per whole program).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from .corpus import wrap_function
from .errors import AsmSketchError
from .isa import ARM

GCC = {ARM: "aarch64-linux-gnu-gcc", "riscv": "riscv64-linux-gnu-gcc"}
QEMU = {ARM: "qemu-aarch64", "riscv": "qemu-riscv64"}
PROGRAM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")
HINT = "apt-get install gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu qemu-user (scripts/setup_asmsketch.sh)"


def have_tier_b() -> bool:
    return all(shutil.which(t) for t in list(GCC.values()) + list(QEMU.values()))


def _need():
    missing = [t for t in list(GCC.values()) + list(QEMU.values()) if not shutil.which(t)]
    if missing:
        raise AsmSketchError(f"tier B needs {', '.join(missing)}: {HINT}")


def program_names() -> list[str]:
    return sorted(f[:-2] for f in os.listdir(PROGRAM_DIR) if f.endswith(".c"))


def build_and_run(isa: str, sources: dict[str, str], timeout: float = 20.0) -> str:
    """Compile (-O1, static) and link the given files, run under qemu; returns stdout."""
    _need()
    with tempfile.TemporaryDirectory(prefix="asmsketch-b-") as tmp:
        paths = []
        for name, text in sources.items():
            path = os.path.join(tmp, name)
            with open(path, "w") as fh:
                fh.write(text)
            paths.append(path)
        exe = os.path.join(tmp, "prog")
        res = subprocess.run([GCC[isa], "-O1", "-static", "-o", exe, *paths], capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise AsmSketchError(f"{GCC[isa]} failed: {res.stderr.strip().splitlines()[-1] if res.stderr else ''}")
        try:
            run = subprocess.run([QEMU[isa], exe], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AsmSketchError(f"program did not finish in {timeout:.0f} s under {QEMU[isa]}") from None
        return run.stdout + (f"exit {run.returncode}\n" if run.returncode else "")


def run_program(name: str, isa: str) -> str:
    with open(os.path.join(PROGRAM_DIR, name + ".c")) as fh:
        return build_and_run(isa, {name + ".c": fh.read()})


def driver(nargs: int, inputs) -> str:
    """C main that prints fn(inputs...) one line each."""
    params = ", ".join(["long"] * nargs)
    rows = ",".join("{" + ",".join(f"(long){int(v) - (1 << 64) if v >> 63 else int(v)}L" for v in args) + "}"
                    for args in inputs)
    call = ", ".join(f"in[i][{k}]" for k in range(nargs))
    return (f"#include <stdio.h>\nextern long fn({params});\nstatic const long in[][{nargs}] = {{{rows}}};\n"
            f"int main(void) {{ for (unsigned i = 0; i < sizeof in / sizeof in[0]; i++) "
            f"printf(\"%ld\\n\", fn({call})); return 0; }}\n")


def run_function_program(isa: str, body: str, nargs: int, inputs) -> str:
    """The function body linked with the driver and run under qemu."""
    return build_and_run(isa, {"main.c": driver(nargs, inputs), "fn.s": wrap_function("fn", body)})
