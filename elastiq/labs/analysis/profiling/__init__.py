"""Where the time goes in a generative model: time and FLOPs per operator class
(convolution, linear, self/cross/temporal attention, normalization, elementwise, memory
movement), attention sequence lengths per call, and the share in operators elastiq compresses.

    from elastiq.labs.analysis.profiling import Workload, profile
    r = profile(Workload.from_inputs(model, (x,), steps=3))
    r.shares, r.flops, r.seq_lens(), r.compressible_time_share

See docs/profile.md.
"""
from . import classes, report, suite
from .flops import AttentionCall, sdpa_flops
from .profiler import BACKENDS, profile, sdpa_backend, time_steps, weight_bytes
from .result import ProfileResult
from .workload import ProfileError, Workload

__all__ = ["AttentionCall", "BACKENDS", "ProfileError", "ProfileResult", "Workload", "classes", "profile", "report",
           "sdpa_backend", "sdpa_flops", "suite", "time_steps", "weight_bytes"]
