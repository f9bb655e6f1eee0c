"""elastiq.elastic: elastic hosting (FlexQuant). Build a chain of hosting options that
differ by one unit each from a few base formats, store it once, prune it to a storage
limit, and host it under a memory budget that moves.

    from elastiq.elastic import build, ElasticModel, prune_artifact
    build(model, tok, "smollm2.elastic")                 # int8 / int6 / nxfp4 / int3 bases
    host = ElasticModel("smollm2.elastic")
    host.apply_budget(100 * 2**20)                       # the best option in 100 MiB
    print(host.generate("What is a tree?"))

Imports elastiq.quant, elastiq.formats, elastiq.data, and elastiq.cache, elastiq.memory and
elastiq.progress below them (never lrec, the command line or the labs).
"""
from elastiq.options import BuildOptions

from .artifact import Artifact, ArtifactError, add_low_rank_option, is_artifact, prune_artifact
from .budget import AvailableMemory, CgroupLimit, Fixed, parse_bytes, read_trace
from .builder import DEFAULT_FORMATS, build
from .chain import Chain, Family, build_chain, family_of, prune
from .host import BudgetError, ElasticModel, Transition
from .units import Unit, find_units

__all__ = ["Artifact", "ArtifactError", "AvailableMemory", "BuildOptions", "BudgetError", "CgroupLimit", "Chain", "DEFAULT_FORMATS",
           "ElasticModel", "Family", "Fixed", "Transition", "Unit", "add_low_rank_option", "build", "build_chain",
           "family_of", "find_units", "is_artifact", "parse_bytes", "prune", "prune_artifact", "read_trace"]
