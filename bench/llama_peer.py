"""llama.cpp (llama-cpp-python), the benchmarks' peer, opened the way it runs on this machine.

Some virtual machines report AMX on their CPU but do not run its tile instructions
(seen here: llama.cpp 0.3.36 crashes in ``ggml_backend_amx_mul_mat`` on the first batch
of more than one token). ``extra_buffers_work`` checks that once, in a child process. Where
it fails, the parent sets ``PLAIN_BUFFERS`` in its children's environment and
``open_llama`` loads the weights into plain CPU buffers (llama.cpp's ``use_extra_bufts``
off: no AMX and no weight repacking, which Q4_1 does not use anyway); the benchmark's
results record which way it ran.
"""
from __future__ import annotations

import os
import subprocess
import sys

PLAIN_BUFFERS = "ELASTIQ_BENCH_LLAMA_PLAIN_BUFFERS"

_PROBE = ("import sys; from llama_cpp import Llama; "
          "llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False); "
          "llm.eval(llm.tokenize(b'one two three'))")


def extra_buffers_work(gguf: str) -> bool:
    """Whether llama.cpp with its default (extra) weight buffers survives a batch of tokens."""
    return subprocess.run([sys.executable, "-c", _PROBE, str(gguf)], capture_output=True, timeout=300).returncode == 0


def child_env(gguf: str) -> dict:
    """The environment for the children that run llama.cpp (PLAIN_BUFFERS where needed)."""
    return {**os.environ, PLAIN_BUFFERS: "0" if extra_buffers_work(gguf) else "1"}


def plain_buffers() -> None:
    """Every ``llama_cpp.Llama`` made from now on in this process loads its weights into plain
    buffers (llama.cpp's server makes its own; Llama has no argument for it, so its default
    model parameters are wrapped)."""
    import llama_cpp.llama_cpp as lib

    defaults = lib.llama_model_default_params

    def plain():
        params = defaults()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = plain


def plain_buffers_if_asked() -> None:
    """plain_buffers(), where PLAIN_BUFFERS asks for them."""
    if os.environ.get(PLAIN_BUFFERS) == "1":
        plain_buffers()


def open_llama(**kwargs):
    """``llama_cpp.Llama(**kwargs)``, with plain weight buffers where PLAIN_BUFFERS asks for them."""
    import llama_cpp

    plain_buffers_if_asked()
    return llama_cpp.Llama(**kwargs)
