"""elastiq.elastic: elastic hosting (FlexQuant). Build a chain of hosting options that
differ by one unit each from a few base formats, store it once, prune it to a storage
limit, and host it under a memory budget that moves.

    from elastiq.elastic import build, ElasticModel, prune_artifact
    build(model, tok, "smollm2.elastic")                 # int8 / int6 / nxfp4 / int3 bases
    host = ElasticModel("smollm2.elastic")
    host.apply_budget(100 * 2**20)                       # the best option in 100 MiB
    print(host.generate("What is a tree?"))

Imports elastiq.quant, elastiq.formats, elastiq.data, and elastiq.cache, elastiq.memory and
elastiq.progress below them, and elastiq.runtime for the native host (never lrec, the
command line or the labs).
"""
import importlib

from elastiq.options import BuildOptions

from .budget import AvailableMemory, CgroupLimit, Fixed, parse_bytes, read_trace
from .chain import Chain, Family, build_chain, family_of, prune
from .hosting import ENGINES, BudgetError, OptionChooser, RWLock, Transition, check_max_new_tokens, open_host
from .native_host import NativeElasticModel

# The torch half loads when first named, so that a process hosting on the native runtime
# (`elastiq host --engine native`, NativeElasticModel) never imports torch.
_TORCH_SIDE = {
    **dict.fromkeys(["Artifact", "ArtifactError", "add_low_rank_option", "is_artifact", "prune_artifact"], ".artifact"),
    **dict.fromkeys(["DEFAULT_FORMATS", "build"], ".builder"),
    "ElasticModel": ".host",
    **dict.fromkeys(["Unit", "find_units"], ".units"),
}


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        return getattr(importlib.import_module(_TORCH_SIDE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(["AvailableMemory", "BudgetError", "BuildOptions", "CgroupLimit", "Chain", "ENGINES", "Family", "Fixed",
                  "NativeElasticModel", "OptionChooser", "check_max_new_tokens", "RWLock", "Transition", "build_chain", "family_of", "open_host",
                  "parse_bytes", "prune", "read_trace", *_TORCH_SIDE])
