"""Where the time goes in a generative model: time and FLOPs per operator class
(convolution, linear, self/cross/temporal attention, normalization, elementwise, memory
movement), attention sequence lengths per call, and the share in operators elastiq compresses.

    from elastiq.analysis.profiling import Workload, profile
    r = profile(Workload.from_inputs(model, (x,), steps=3))
    r.shares, r.flops, r.seq_lens(), r.compressible_time_share

See docs/profile.md. Names load on first use, so the CLI can import the command without torch.
"""
from importlib import import_module

_WHERE = {"AttentionCall": "flops", "sdpa_flops": "flops", "BACKENDS": "profiler", "profile": "profiler",
          "sdpa_backend": "profiler", "time_steps": "profiler", "weight_bytes": "profiler",
          "ProfileResult": "result", "ProfileError": "workload", "Workload": "workload", "classes": None,
          "suite": None, "report": None}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(f".{_WHERE[name] or name}", __name__)
    return module if _WHERE[name] is None else getattr(module, name)
