"""Open a model saved by elastiq (``elastiq quantize --out``, ``elastiq.save``) on the native
runtime: every file checked against the manifest's size and sha256, every tensor placed
by name, and the model refused unless every part is present and nothing is left over."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from elastiq.cache import check_file, read_manifest_json
from elastiq.errors import InputError, check_folder

from .describe import SPEC, TABLES
from .generate import GREEDY, Generation, Sampling, generate_prompt
from .native import NativeError, NativeModel, packed_matrix
from .tensors import TensorFile
from .tokenizer import Tokenizer

MANIFEST, WEIGHTS = "elastiq.json", "model.safetensors"
READABLE = (1, 2)


def plain_name(directory: Path, name, subdir: str | None = None) -> Path:
    """``directory / name`` for a plain file name (or ``subdir/plain name``); a name that
    could leave the folder is refused."""
    rest = name
    if subdir is not None and isinstance(name, str) and name.startswith(subdir + "/"):
        rest = name[len(subdir) + 1:]
    if not isinstance(rest, str) or not rest or rest in (".", "..") or "/" in rest or "\\" in rest or "\0" in rest:
        raise NativeError(f"{directory}: the manifest names the file {name!r}, which is not a plain file name in "
                          "the folder: the manifest is corrupted or hostile")
    return directory / name


def read_spec(directory: Path, files: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """The native spec and tables of a checked folder. A folder that asks to run its own code
    is refused here too, though the runtime would not run it: one rule for every engine."""
    try:
        check_folder(directory)
    except InputError as e:
        raise NativeError(str(e)) from None
    if SPEC not in files or TABLES not in files:
        raise NativeError(f"{directory} was written before the native runtime (it has no {SPEC}): save or build it "
                          "again with this elastiq, or use --engine torch")
    import json

    spec = json.loads((directory / SPEC).read_text())
    tf = TensorFile(directory / TABLES)
    return spec, {k: tf.get(k) for k in tf.entries}


class NativeLM:
    """A saved model on the native runtime, with its tokenizer."""

    def __init__(self, directory, nthreads: int | None = None, with_tokenizer: bool = True):
        directory = Path(directory)
        try:
            manifest = read_manifest_json(directory / MANIFEST, "a model saved by elastiq")
        except (FileNotFoundError, ValueError) as e:
            raise NativeError(str(e)) from None
        if not isinstance(manifest, dict) or manifest.get("elastiq") not in READABLE:
            raise NativeError(f"{directory / MANIFEST} is not a manifest this elastiq reads: save the model again")
        try:
            files = manifest["files"]
            for name, meta in files.items():
                check_file(plain_name(directory, name), meta["bytes"], meta["sha256"])
            spec, tables = read_spec(directory, files)
            self.model = NativeModel(spec, tables, nthreads)
            self._load_weights(directory, manifest["modules"])
        except (KeyError, TypeError) as e:
            raise NativeError(f"{directory / MANIFEST} is malformed (bad or missing {e}): save the model again") from None
        except NativeError:
            raise
        except ValueError as e:  # a file of the wrong size or checksum, a bad safetensors file
            raise NativeError(str(e)) from None
        except FileNotFoundError as e:
            raise NativeError(f"{directory} is incomplete: {e}") from None
        self.path = directory
        self.tokenizer = Tokenizer(directory) if with_tokenizer and (directory / "tokenizer.json").is_file() else None

    def _load_weights(self, directory: Path, modules: dict) -> None:
        m = self.model
        tf = TensorFile(directory / WEIGHTS)
        used: set[str] = set()

        def get(key):
            used.add(key)
            return tf.get(key)

        ties = {name: meta["tied_to"] for name, meta in modules.items() if "tied_to" in meta}
        sharers = {target: name for name, target in ties.items()}  # safetensors stores shared buffers once, under either name

        def part(name, k):
            for owner in (name, sharers.get(name)):
                if owner is not None and f"{owner}.{k}" in tf.entries:
                    return get(f"{owner}.{k}")
            return None

        for name, meta in modules.items():
            if name in ties:
                continue
            fmt = m.formats.get(meta["format"])
            if fmt is None:
                raise NativeError(f"{directory}: {name} is in {meta['format']}, which {SPEC} does not describe")
            parts = {k: v for k in ("codes", "scales", "selectors") if (v := part(name, k)) is not None}
            ts = part(name, "tensor_scale")
            bias = get(f"{name}.bias") if f"{name}.bias" in tf.entries else None
            if "codes" not in parts or "scales" not in parts:
                raise NativeError(f"{directory / WEIGHTS} lacks the packed codes of {name}: the model is incomplete")
            m.set(name, packed_matrix(meta["shape"], fmt, parts["codes"], parts["scales"], parts.get("selectors"), ts,
                                      bias, what=name))
        for name, target in ties.items():
            used.update(k for k in (f"{name}.{p}" for p in ("codes", "scales", "selectors", "tensor_scale")) if k in tf.entries)
            if target not in m.matrices:
                raise NativeError(f"{directory}: {name} is tied to {target}, which is not packed")
            m.set(name, m.matrices[target])
        m.set_float_parts(tf, used=used)
        unexpected = sorted(set(tf.entries) - used)
        if unexpected:
            raise NativeError(f"{directory / WEIGHTS} holds tensors the model does not use ({', '.join(unexpected[:4])}): "
                              "it does not fit its config")
        m.check_complete()

    def generate(self, prompt: str, max_new_tokens: int = 32, chat: bool = True, sampling: Sampling = GREEDY,
                 stop: tuple[str, ...] = (), on_token=None) -> Generation:
        return generate_prompt(self.model, self.tokenizer, self.path, prompt, max_new_tokens, chat, sampling, stop,
                               on_token)
