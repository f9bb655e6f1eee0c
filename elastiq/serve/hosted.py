"""The model a server hosts, one interface over its kinds: an elastic artifact on the native
runtime (no torch) or on the torch path, or a saved packed model on the native runtime.

Each gives the server what one generation needs: the tokenizer (the runtime's, which reads
tokenizer.json without transformers), the ids that end a sequence, the maximum context,
``step(ids, all_logits)`` that runs new tokens after the cached ones on one whole option,
``reset()``, and the option that ran the last step. Budgets go to ``chooser`` (None for a
saved model, which has one option)."""
from __future__ import annotations

from pathlib import Path

from elastiq.errors import InputError
from elastiq.runtime.generate import end_ids
from elastiq.runtime.tokenizer import Tokenizer


class Hosted:
    engine: str
    chooser = None  # the elastic host (an OptionChooser), None for a saved model
    native = None  # the NativeModel whose context is checked and whose cache is sized before each run

    def __init__(self, path: Path, tokenizer: Tokenizer, eos: set[int], max_ctx: int, vocab: int):
        self.path, self.name = path, path.name
        self.tokenizer, self.eos, self.max_ctx, self.vocab = tokenizer, eos, max_ctx, vocab

    def step(self, ids, all_logits: bool = False):
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def option(self):
        """The option that ran the last step (a saved model's is None)."""
        return None if self.chooser is None else self.chooser.last_option

    @property
    def weight_bytes(self) -> int:
        return self.native.weight_bytes if self.chooser is None else self.chooser.held_bytes


class _OnNative(Hosted):
    engine = "native"

    def __init__(self, path: Path, native, tokenizer):
        if tokenizer is None:
            raise InputError(f"{path} has no tokenizer.json: a server needs the model's tokenizer")
        self.native = native
        super().__init__(Path(path), tokenizer, end_ids(native.spec, tokenizer), native.max_ctx, native.vocab)

    def reset(self) -> None:
        self.native.reset()


class NativeElastic(_OnNative):
    def __init__(self, host):
        self.chooser = host
        super().__init__(host.path, host.model, host.tokenizer)

    def step(self, ids, all_logits: bool = False):
        return self.chooser.forward(ids, all_logits)  # under the host's read lock: one whole option


class NativeSaved(_OnNative):
    def __init__(self, lm):
        super().__init__(lm.path, lm.model, lm.tokenizer)

    def step(self, ids, all_logits: bool = False):
        return self.native.forward(ids, all_logits)


class TorchElastic(Hosted):
    """The torch host (transformers' forward over packed layers), stepped with its own KV cache."""
    engine = "torch"

    def __init__(self, host):
        self.chooser, self.cache = host, None
        cfg, path = host.model.config, Path(host.artifact.path)
        if not (path / "tokenizer.json").is_file():
            raise InputError(f"{path} has no tokenizer.json: a server needs the model's tokenizer")
        tok = Tokenizer(path)
        eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
        super().__init__(path, tok, end_ids({"eos_token_ids": [e for e in eos if e is not None]}, tok),
                         int(getattr(cfg, "max_position_embeddings", 2048)), int(cfg.vocab_size))

    def step(self, ids, all_logits: bool = False):
        import torch

        with torch.no_grad():
            out = self.chooser.model(torch.tensor([list(ids)]), cache=self.cache, use_cache=True)
        self.cache = out.cache
        logits = out.logits[0].float().numpy()
        return logits if all_logits else logits[-1]

    def reset(self) -> None:
        self.cache = None


def open_hosted(path, engine: str = "auto", threads: int | None = None, warn=print) -> Hosted:
    """What the server hosts at ``path``: an elastic artifact (elastic.json) on ``engine``, or a
    model saved by elastiq (elastiq.json) on the native runtime."""
    from elastiq.elastic.hosting import open_host

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path} is not a directory: give an artifact written by `elastiq build` or a model saved "
                         "by `elastiq quantize --out`")
    if (path / "elastic.json").is_file():
        host = open_host(path, engine, threads, warn=warn)
        return NativeElastic(host) if host.engine == "native" else TorchElastic(host)
    if (path / "elastiq.json").is_file():
        if engine == "torch":
            raise InputError(f"{path} is a saved model: the server hosts saved models on the native runtime only "
                             "(use --engine native or auto)")
        from elastiq.runtime.saved import NativeLM

        return NativeSaved(NativeLM(path, threads))
    raise InputError(f"{path} holds neither elastic.json nor elastiq.json: give an artifact written by `elastiq build` "
                     "or a model saved by `elastiq quantize --out`")
