"""The native runtime: packed models run whole in native code, in a process that never
imports torch (numpy, ctypes, the tokenizers library and jinja2 only).

    from elastiq.runtime import NativeLM
    lm = NativeLM("smollm2-nxfp4")              # a model saved by elastiq
    print(lm.generate("Tell me a story", max_new_tokens=32).text)

Elastic artifacts run on it through ``elastiq.elastic.NativeElasticModel``. What the
runtime needs of a model is written beside its weights when elastiq saves or builds it
(``describe``: the build side, which does import torch).
"""
from .generate import Generation, Sampling
from .native import NativeError, NativeModel
from .saved import NativeLM

__all__ = ["Generation", "NativeError", "NativeLM", "NativeModel", "Sampling"]
