"""Read a float checkpoint one decoder layer at a time and run it through the model's own
forward: the layer streamer that calibration (``calib.quantize``) and LREC's set-up
(``lrec.stream``) both use.

``LayerStream`` builds the model on the meta device, reads the weights outside the
decoder layers, and swaps each decoder layer's ``forward`` for a stand-in that records
its arguments, so the model's own forward supplies the embedding, masks and position
embeddings; then each layer is loaded, run over the recorded hidden states, and handed
back to the caller before the next. The process holds one float decoder layer at a time.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from elastiq.errors import InputError
from elastiq.quant.io import empty_model
from elastiq.quant.model import planned_modules


class StreamUnsupported(ValueError):
    """The model cannot be set up a layer at a time (no safetensors, or no decoder-layer list)."""


class _Weights:
    """Tensors of a safetensors checkpoint (one file, or shards with an index), read on demand.

    Each read opens and closes its file: a mapping kept open would count every page read
    so far in the process's resident memory."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        self._open = safe_open
        index = directory / "model.safetensors.index.json"
        single = directory / "model.safetensors"
        if index.is_file():
            from elastiq.cache import member, read_manifest_json

            weight_map = read_manifest_json(index, "a sharded checkpoint").get("weight_map")
            if not isinstance(weight_map, dict):
                raise InputError(f"{index} has no weight_map object: the checkpoint is damaged")
            self.where = {k: member(directory, f) for k, f in weight_map.items()}  # shards inside the folder only
        elif single.is_file():
            with safe_open(str(single), "pt") as f:
                self.where = dict.fromkeys(f.keys(), single)
        else:
            raise StreamUnsupported(f"{directory} has no model.safetensors (or index): the float weights cannot be "
                                    f"read a layer at a time")

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        by_file: dict[Path, list[str]] = {}
        for n in names:
            by_file.setdefault(self.where[n], []).append(n)
        out = {}
        for path, keys in by_file.items():
            with self._open(str(path), "pt") as f:
                for k in keys:
                    t = f.get_tensor(k)  # may be a view of the file's mapping: copy it, so the mapping can go
                    out[k] = t.to(torch.float32 if t.is_floating_point() else t.dtype, copy=True)
        return out


def _skeleton(directory: Path):
    """The model with its parameters on meta (buffers real)."""
    model = empty_model(directory)
    model.tie_weights()  # from_config on meta leaves a tied head untied; the checkpoint stores the pair once
    return model


def _decoder_layers(model) -> tuple[str, nn.ModuleList]:
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise StreamUnsupported(f"{type(model).__name__} keeps no list of decoder layers at base_model.layers")
    return next(n for n, m in model.named_modules() if m is layers), layers


def _load_params(model, weights: _Weights, wanted) -> None:
    """Give each meta parameter whose name passes ``wanted`` its float value from the file
    (tied parameters once, under whichever of their names the file uses)."""
    names: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    todo: dict[int, str] = {}
    for n, p in model.named_parameters():
        if p.device.type == "meta" and any(wanted(a) for a in names[id(p)]):
            stored = [a for a in names[id(p)] if a in weights.where]
            if not stored:
                raise StreamUnsupported(f"the checkpoint has no tensor for {n}")
            todo[id(p)] = stored[0]
    values = weights.read(list(todo.values()))
    new: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for pname, p in list(module._parameters.items()):
            if p is not None and id(p) in todo:
                if id(p) not in new:
                    t = values[todo[id(p)]]
                    if tuple(t.shape) != tuple(p.shape):
                        raise StreamUnsupported(f"{todo[id(p)]} has shape {tuple(t.shape)} in the checkpoint, "
                                                f"the model expects {tuple(p.shape)}")
                    new[id(p)] = nn.Parameter(t, requires_grad=False)
                module._parameters[pname] = new[id(p)]


@contextmanager
def _stand_ins(layers: nn.ModuleList, forward_for):
    """Every decoder layer's forward swapped for ``forward_for(index)`` while inside."""
    for i, layer in enumerate(layers):
        layer.forward = forward_for(i)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _recorder(calls: list):
    """Stand-ins that note each layer's call (hidden states in, keyword arguments) and pass the states on."""
    def forward_for(i):
        def forward(hidden_states, *args, **kwargs):
            if args:
                raise StreamUnsupported("the decoder layers are called with positional arguments besides the hidden states")
            calls.append((hidden_states, kwargs))
            return hidden_states
        return forward
    return forward_for


def _replayer(final: torch.Tensor):
    """Stand-ins that hand on ``final`` (the last layer's output): the model's own norm and head then follow."""
    return lambda i: (lambda hidden_states, *args, **kwargs: final if i == 0 else hidden_states)


class LayerStream:
    """The float checkpoint in ``directory`` as a skeleton whose decoder layers load one at a time."""

    def __init__(self, directory):
        directory = Path(directory)
        self.weights = _Weights(directory)
        self.model = _skeleton(directory)
        self.prefix, self.layers = _decoder_layers(self.model)

    def linears(self, plan) -> dict[int, list[tuple[str, nn.Linear, object]]]:
        """{layer index: [(name, module, format)]}: the linear layers ``plan`` packs, by decoder layer."""
        by_layer = {i: [] for i in range(len(self.layers))}
        for name, module, f, _ in planned_modules(self.model, plan):
            if f is not None and isinstance(module, nn.Linear) and name.startswith(self.prefix + "."):
                by_layer[int(name[len(self.prefix) + 1:].split(".")[0])].append((name, module, f))
        return by_layer

    @torch.no_grad()
    def start(self, windows) -> tuple[list[torch.Tensor], list[list[dict]]]:
        """Load everything outside the decoder layers; (the first layer's input per window,
        each layer's keyword arguments per window), from the model's own forward."""
        _load_params(self.model, self.weights, lambda n: not n.startswith(self.prefix + "."))
        self.model.eval()
        hidden, calls = [], []
        for w in windows:
            seen: list = []
            with _stand_ins(self.layers, _recorder(seen)):
                self.model.base_model(w[None], use_cache=False)
            if len(seen) != len(self.layers):
                raise StreamUnsupported(f"the model called {len(seen)} of its {len(self.layers)} decoder layers")
            hidden.append(seen[0][0])
            calls.append([kw for _, kw in seen])
        return hidden, calls

    @torch.no_grad()
    def run_layer(self, i: int, hidden: list[torch.Tensor], calls: list[list[dict]]) -> list[torch.Tensor]:
        """Load decoder layer ``i``'s float weights and push every window's hidden states through it."""
        _load_params(self.model, self.weights, lambda n: n.startswith(f"{self.prefix}.{i}."))
        return self.forward_layer(i, hidden, calls)

    def forward_layer(self, i: int, hidden: list[torch.Tensor], calls: list[list[dict]]) -> list[torch.Tensor]:
        """Decoder layer ``i`` as it stands (loaded, some of its linear layers perhaps packed) on every window."""
        layer = self.layers[i]
        return [layer(h, **calls[w][i]) for w, h in enumerate(hidden)]

    def replaying(self, final: torch.Tensor):
        """While inside, the decoder layers hand on ``final``: the model's own norm and head follow."""
        return _stand_ins(self.layers, _replayer(final))

    def check_filled(self) -> None:
        leftover = [n for n, p in self.model.named_parameters() if p.device.type == "meta"]
        if leftover:
            raise StreamUnsupported(f"parameters the checkpoint never filled: {leftover[:5]}")
