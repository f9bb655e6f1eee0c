"""profile(): time per operator class from torch.profiler, FLOPs and attention calls per step.

Each workload runs three times from its start state: once under the FLOP counter (which also
records every attention call's sequence lengths and proves the model runs), once as a warm-up,
and once step by step under torch.profiler. Time is attributed to the outermost aten operators
(their inclusive time), each classed by its name and the attention or normalization module it
ran in; Python time between operators is not operator time and shows as the gap to wall time.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable

import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from . import classes as C
from .flops import FlopCounter
from .result import ProfileResult
from .scopes import ATTN_SCOPE, NORM_SCOPE, Scopes, is_weight_module
from .workload import ProfileError, Workload, check_device

BACKENDS = ("default", "flash", "math", "efficient", "cudnn")


def sdpa_backend(backend: str):
    """A context forcing PyTorch's scaled-dot-product attention to one backend ('default': PyTorch picks)."""
    if backend not in BACKENDS:
        raise ProfileError(f"unknown attention backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH,
                         "efficient": SDPBackend.EFFICIENT_ATTENTION,
                         "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]])


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints a line to file descriptor 2 at every start and stop;
    those would break progress bars, so fd 2 points at /dev/null meanwhile."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. some notebooks): nothing to hide
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _device_of(workload: Workload) -> torch.device:
    p = next(workload.model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run(workload: Workload, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except ProfileError:
        raise
    except Exception as e:  # the user's model or inputs: say which and why, not a deep traceback
        msg = str(e).strip().splitlines()[0].rstrip(". ") if str(e).strip() else ""
        raise ProfileError(f"{workload.name} could not run ({what}): {type(e).__name__}: {msg}. Check that the "
                           f"inputs match what the model's forward() expects (shapes, dtypes, device) and that "
                           f"the attention backend is available on this device") from e


def weight_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Parameter bytes in convolution, in linear layers, and in everything else (tied weights once)."""
    out = {"conv": 0, "linear": 0, "other": 0}
    seen: set[int] = set()
    for module in model.modules():
        cls = "other"
        if is_weight_module(module):
            cls = "linear" if isinstance(module, torch.nn.Linear) else "conv"
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                out[cls] += p.numel() * p.element_size()
    return out


def classify_events(events, use_device: bool = False, ops: dict | None = None) -> dict[str, float]:
    """Seconds per class from a profiler's event list: outermost aten operators only.
    ops, when given, is filled with {class: {operator: seconds}}."""
    times = {c: 0.0 for c in C.CLASSES}
    for ev in events:
        if not ev.name.startswith("aten::"):
            continue
        attention, in_norm, top = None, False, True
        parent = ev.cpu_parent
        while parent is not None:
            name = parent.name
            if name.startswith("aten::"):
                top = False
                break
            if attention is None and name.startswith(NORM_SCOPE):
                in_norm = True
            elif attention is None and name.startswith(ATTN_SCOPE):
                attention = name[len(ATTN_SCOPE):].split(":", 1)[0]
            parent = parent.cpu_parent
        if not top:
            continue
        us = ev.device_time_total if use_device else ev.cpu_time_total
        cls = C.classify(ev.name, attention, in_norm)
        times[cls] += us * 1e-6
        if ops is not None:
            per = ops.setdefault(cls, {})
            per[ev.name] = per.get(ev.name, 0.0) + us * 1e-6
    return times


def profile(workload: Workload, backend: str = "default", on_step: Callable[[str, int], None] | None = None,
            count: bool = True) -> ProfileResult:
    """Profile every step of a workload. on_step(phase, i) is called after each step (for progress bars).
    count=False skips the FLOP and attention-call pass (time only: FLOPs read 0, no calls)."""
    sdpa_backend(backend)  # validates the name
    device = _device_of(workload)
    check_device(device)
    use_device = device.type == "cuda"
    tick = on_step or (lambda phase, i: None)
    step_flops, step_calls, step_times, step_wall, ops = [], [], [], [], {}
    with torch.no_grad(), sdpa_backend(backend):
        # 1. FLOPs and attention calls (also the check that the model runs at all)
        workload.reset()
        for i in range(workload.steps if count else 0):
            counter_box = {}

            def counted(i=i):
                scopes = Scopes(workload.model, workload.attention_kinds)
                counter = FlopCounter(scopes)
                scopes.on_attention_call = counter.new_call
                with scopes, counter:
                    workload.step(i)
                counter_box["c"] = counter
            _run(workload, f"step {i}", counted)
            step_flops.append(counter_box["c"].flops)
            step_calls.append(counter_box["c"].calls)
            tick("count", i)
        # 2. warm-up: first-call allocations and kernel selection stay out of the timings
        workload.reset()
        _run(workload, "warm-up", lambda: workload.step(0))
        _sync(device)
        tick("warm-up", 0)
        # 3. time, step by step
        workload.reset()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if use_device else [])
        for i in range(workload.steps):
            prof = torch_profile(activities=activities)
            with Scopes(workload.model, workload.attention_kinds, record=True):
                with _quiet_stderr():
                    prof.__enter__()
                try:
                    t0 = time.perf_counter()
                    _run(workload, f"step {i}", lambda i=i: workload.step(i))
                    _sync(device)
                    step_wall.append(time.perf_counter() - t0)
                finally:
                    with _quiet_stderr():
                        prof.__exit__(None, None, None)
            step_times.append(classify_events(prof.events(), use_device, ops))
            tick("time", i)
    if not count:
        step_flops = [{c: 0 for c in C.CLASSES} for _ in step_times]
        step_calls = [[] for _ in step_times]
    return ProfileResult(name=workload.name, family=workload.family, backend=backend, device=str(device),
                         step_name=workload.step_name, config=dict(workload.config), step_times=step_times,
                         step_wall=step_wall, step_flops=step_flops, step_calls=step_calls,
                         weight_bytes=weight_bytes(workload.model), threads=torch.get_num_threads(), ops=ops)


def time_steps(workload: Workload, backend: str = "default", repeats: int = 3, warmup: bool = True) -> list[float]:
    """Wall seconds of all the workload's steps, without the profiler, one value per repeat
    (after one warm-up step unless warmup=False). For comparing attention backends."""
    device = _device_of(workload)
    out = []
    with torch.no_grad(), sdpa_backend(backend):
        if warmup:
            workload.reset()
            _run(workload, "warm-up", lambda: workload.step(0))
        for _ in range(repeats):
            workload.reset()
            _sync(device)
            t0 = time.perf_counter()
            for i in range(workload.steps):
                _run(workload, f"step {i}", lambda i=i: workload.step(i))
            _sync(device)
            out.append(time.perf_counter() - t0)
    return out
