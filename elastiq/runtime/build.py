"""Build and load the native runtime library (engine.c, which includes the packed-weight
kernels of elastiq/quant/lut_kernel.c), without torch.

Compiled once per machine and source with the system C compiler into the elastiq cache
(``cc -O3 -march=native -fopenmp``, about two seconds), written under a temporary name
and renamed into place. ``ELASTIQ_KERNELS=portable`` builds it without AVX2 and FMA (the
scalar paths a machine without AVX2 runs) and ``ELASTIQ_KERNELS=avx2`` without AVX-512,
as it does the packed-weight kernels, so that one machine can test every path.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from elastiq.cache import cache_dir

HERE = Path(__file__).parent
SOURCES = (HERE / "engine.c", HERE.parent / "quant" / "lut_kernel.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
PORTABLE_FLAGS = ("-mno-avx2", "-mno-fma")
AVX2_FLAGS = ("-mno-avx512f",)  # on an AVX-512 machine: the AVX2 paths that machines without AVX-512 run
VARIANTS = {"portable": PORTABLE_FLAGS, "avx2": AVX2_FLAGS}  # ELASTIQ_KERNELS values that choose a build


def variant_flags() -> tuple[str, ...]:
    """The extra flags ELASTIQ_KERNELS asks for (``portable``: no AVX2; ``avx2``: no AVX-512)."""
    return VARIANTS.get(os.environ.get("ELASTIQ_KERNELS", "1").strip().lower(), ())


class NativeUnavailable(RuntimeError):
    """The native runtime cannot be built or loaded on this machine."""


class BuildFailed(RuntimeError):
    """No C compiler, or the compiler refused the source; the message says which."""


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build_shared(sources: tuple[Path, ...], name: str, flags) -> Path:
    """``sources[0]`` (which may include the others) compiled once per machine, source and
    flags into ``cache/kernels/NAME-KEY.so``, under a temporary name renamed into place;
    the packed-weight kernels and the runtime are both built here. Raises BuildFailed."""
    cc = compiler()
    if cc is None:
        raise BuildFailed("no C compiler found (install gcc)")
    flags = list(flags)
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)
                         + " ".join([cc, *flags, sys.platform]).encode()).hexdigest()[:16]
    path = cache_dir() / "kernels" / f"{name}-{key}.so"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-", suffix=".so")
    os.close(fd)
    try:
        try:
            r = subprocess.run([cc, *flags, f"-I{sources[0].parent}", str(sources[0]), "-o", tmp, "-lm"],
                               capture_output=True, text=True)
            why = r.stderr.strip()[-400:] if r.returncode else None
        except OSError as e:
            why = str(e)
        if why is not None:
            raise BuildFailed(f"{cc}: {why}")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@lru_cache(maxsize=None)
def library(extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The loaded runtime library; raises NativeUnavailable (saying why) where it cannot be had."""
    flags = [*FLAGS, *variant_flags(), *extra_flags, f"-I{SOURCES[1].parent}"]
    try:
        return ctypes.CDLL(str(build_shared(SOURCES, "runtime", flags)))
    except BuildFailed as e:
        raise NativeUnavailable(f"building the native runtime failed ({e}); use --engine torch") from None
