"""ElasticModel: host an elastic artifact under a memory budget that moves.

Given a budget it runs the largest option of the artifact's family that fits. When the
budget changes it reads only the units whose base differs (before taking any lock), then
swaps them in under a write lock and frees the old ones. Every forward pass holds a
read lock, so each forward (each generated token) runs on one whole option, never on a
half-swapped model; a swap waits for the forward in flight, and generation continues
on the new option at the next token.
"""
from __future__ import annotations

import functools
import threading
import time

import numpy as np
import torch
from torch import nn

from elastiq.memory import pin_mmap_threshold, trim_heap
from elastiq.quant import LowRankAdded
from elastiq.quant.io import has_tokenizer, materialize
from elastiq.quant.model import replace_module

from .artifact import REST, Artifact, ArtifactError
from .hosting import BudgetError, OptionChooser, RWLock, Transition, check_max_new_tokens  # noqa: F401 (re-exported)


class Vacant(nn.Module):
    """Stands where a unit's module goes until an option is loaded."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.name} is not loaded: choose an option first (apply_budget or swap)")


class ElasticModel(OptionChooser):
    engine = "torch"

    def __init__(self, path, with_tokenizer: bool = True):
        from safetensors.torch import load_file

        from elastiq.models.hf import auto_tokenizer
        from elastiq.quant.io import empty_model

        pin_mmap_threshold(1 << 20)  # freed weights go back to the system (elastiq.memory)
        self.artifact = a = Artifact(path)
        model = empty_model(a.path)
        config = model.config
        try:
            for unit in a.units:
                for name in unit.modules + unit.tied:
                    replace_module(model, name, Vacant(name))
            materialize(model)
            missing, unexpected = model.load_state_dict(load_file(str(a.path / REST)), strict=False)
            for alias, target in a.manifest["rest_aliases"].items():
                module, _, pname = alias.rpartition(".")
                setattr(model.get_submodule(module), pname, model.get_parameter(target))
        except (AttributeError, RuntimeError, ValueError, TypeError) as e:  # names or shapes of another model
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise ArtifactError(f"{a.path}: the artifact does not fit a {config.model_type} model ({first}); "
                                "rebuild it") from None
        missing = set(missing) - set(a.manifest["rest_aliases"])
        if missing or unexpected:
            raise ArtifactError(f"{a.path / REST} does not fit a {config.model_type} model: missing "
                                f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        model.eval()
        self.model = model
        self._forward = forward = model.forward

        @functools.wraps(forward)  # keeps the signature that generate() inspects
        def locked_forward(*args, **kwargs):
            return self._locked_forward(*args, **kwargs)

        model.forward = locked_forward  # every forward pass holds the read lock
        self.tokenizer = auto_tokenizer(a.path) if with_tokenizer and has_tokenizer(a.path) else None
        # option ids: the chain's options 0..n-1, then one id per extra (low-rank) option
        n = a.chain.n_options
        self.extra_ids = {n + j: e for j, e in enumerate(a.extras)}
        self.sizes = np.concatenate([a.option_bytes, [a.option_bytes[e["option"]] + e["bytes"] for e in a.extras]])
        self.quality = np.concatenate([a.manifest["quality"]["estimated"], [e["kl"] for e in a.extras]])
        self.options = sorted(a.family.options)  # largest first
        self.rest_bytes, self.name = a.chain.rest_bytes, a.path.name
        self.levels = np.full(len(a.units), -1, dtype=np.int64)
        self.option: int | None = None
        self.last_option: int | None = None
        self.wrapped: dict[str, nn.Module] = {}  # module name -> its packed base, while an extra option is hosted
        self._lock = RWLock()
        self._swap_lock = threading.Lock()

    # ---- swapping -------------------------------------------------------------------
    def swap(self, option: int) -> Transition:
        """Load ``option``: read the units that differ, then swap them in at once."""
        extra = self.check_option(option)
        with self._swap_lock:
            t0 = time.perf_counter()
            chain_option = option if extra is None else extra["option"]
            target = self.artifact.chain.assignment(chain_option).astype(np.int64)
            changed = np.flatnonzero(target != self.levels)
            new: dict[str, nn.Module] = {}
            for u in changed:  # may raise (a corrupted copy): nothing has changed yet
                unit = self.artifact.units[u]
                loaded = self.artifact.load_copy(int(u), int(target[u]))
                for head in unit.tied:
                    loaded[head] = loaded[unit.modules[0]].tied_head()
                new.update(loaded)
            for m in new.values():
                m.kernel()  # ready before the swap, not at the first forward after it
            new.update({n: base for n, base in self.wrapped.items() if n not in new})  # unwrap the old corrections
            wrapped = {}
            if extra is not None:
                for name, (A, B, scaling) in self.artifact.load_low_rank(extra).items():
                    base = new.get(name, self.wrapped.get(name) or self.model.get_submodule(name))
                    new[name], wrapped[name] = LowRankAdded(base, A, B, scaling), base
            t1 = time.perf_counter()
            with self._lock.write():
                t2 = time.perf_counter()
                for name, module in new.items():
                    replace_module(self.model, name, module)
                self.levels, self.option, self.wrapped = target, option, wrapped
            del new  # the old modules are freed here, by reference counting (no gc pass: it takes 0.1-0.4 s)
            trim_heap()
            return Transition(option, int(self.sizes[option]), len(changed), t1 - t0, t2 - t1, time.perf_counter() - t0)

    def _locked_forward(self, *args, **kwargs):
        with self._lock.read():
            if self.option is None:
                raise RuntimeError("no option is loaded: call apply_budget(bytes) or swap(option) first")
            self.last_option = self.option  # the option that ran this forward pass (as the native host records)
            return self._forward(*args, **kwargs)

    # ---- using ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = 32, chat: bool = True, on_token=None) -> str:
        """Greedy continuation of ``prompt`` (through the chat template when the tokenizer
        has one and ``chat``); ``on_token(text_so_far)`` is called after each token."""
        check_max_new_tokens(max_new_tokens)
        tok = self.tokenizer
        if tok is None:
            raise ValueError("this ElasticModel was opened without its tokenizer")
        if chat and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        streamer = _Streamer(tok, on_token) if on_token else None
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                  do_sample=False, streamer=streamer, pad_token_id=tok.eos_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


class _Streamer:
    """The minimal streamer interface of transformers' generate: put(ids), end()."""

    def __init__(self, tok, on_token):
        self.tok, self.on_token, self.ids, self.first = tok, on_token, [], True

    def put(self, value):
        if self.first:  # generate puts the prompt first
            self.first = False
            return
        self.ids.extend(value.reshape(-1).tolist())
        self.on_token(self.tok.decode(self.ids, skip_special_tokens=True))

    def end(self):
        pass
