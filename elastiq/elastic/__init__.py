"""elastiq.elastic: elastic hosting (FlexQuant). Build a chain of hosting options that
differ by one unit each from a few base formats, store it once, prune it to a storage
limit, and host it under a memory budget that moves.

    from elastiq.elastic import build, ElasticModel, prune_artifact
    build(model, tok, "smollm2.elastic")                 # int8 / int6 / nxfp4 / int3 bases
    host = ElasticModel("smollm2.elastic")
    host.apply_budget(100 * 2**20)                       # the best option in 100 MiB
    print(host.generate("What is a tree?"))

Imports elastiq.quant, elastiq.models, elastiq.data (never higher layers).
"""
from elastiq.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Artifact", "ArtifactError", "add_low_rank_option", "is_artifact", "prune_artifact"], ".artifact"),
    **dict.fromkeys(["AvailableMemory", "CgroupLimit", "Fixed", "parse_bytes", "read_trace"], ".budget"),
    **dict.fromkeys(["DEFAULT_FORMATS", "build"], ".builder"),
    **dict.fromkeys(["Chain", "Family", "build_chain", "family_of", "prune"], ".chain"),
    **dict.fromkeys(["BudgetError", "ENGINES", "OptionChooser", "RWLock", "Transition", "open_host"], ".hosting"),
    "ElasticModel": ".host",
    "NativeElasticModel": ".native_host",
    **dict.fromkeys(["Unit", "find_units"], ".units"),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
