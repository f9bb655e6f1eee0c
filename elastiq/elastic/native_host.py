"""NativeElasticModel: an elastic artifact hosted on the native runtime, in a process that
never imports torch.

The same contract as the torch host (:class:`elastiq.elastic.ElasticModel`): given a
budget it runs the best option that fits; a swap reads only the units whose base
differs (checking each tensor's sha256 at its first read and whenever its file changed
since: elastiq.runtime.tensors), then points the
native model at them under a write lock, so every token runs on one whole option. The
old copies are freed when the swap ends, and glibc hands their pages back (elastiq.memory).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from elastiq.cache import check_file, read_manifest_json
from elastiq.memory import pin_mmap_threshold, trim_heap
from elastiq.runtime.generate import GREEDY, Generation, Sampling, generate_prompt
from elastiq.runtime.native import Matrix, NativeError, NativeModel, packed_matrix
from elastiq.runtime.saved import plain_name, read_spec
from elastiq.runtime.tensors import TensorFile, TensorFileError, as_float32
from elastiq.runtime.tokenizer import Tokenizer

from .chain import Chain, Family
from .hosting import OptionChooser, RWLock, Transition

MANIFEST, REST, VERSION = "elastic.json", "rest.safetensors", 1
WEIGHT_DTYPES = ("float32", "float16", "bfloat16", "float64")  # as elastiq.quant.io reads them


class NativeArtifactError(NativeError):
    """The directory is not an elastic artifact the native runtime can host."""


class NativeElasticModel(OptionChooser):
    engine = "native"

    def __init__(self, path, nthreads: int | None = None, with_tokenizer: bool = True):
        pin_mmap_threshold(1 << 20)  # freed weights go back to the system (elastiq.memory)
        self.path = path = Path(path)
        if not path.is_dir():
            raise NativeArtifactError(f"{path} is not a directory: give the directory `elastiq build` wrote")
        try:
            m = read_manifest_json(path / MANIFEST, "an elastic artifact (written by `elastiq build`)")
            if not isinstance(m, dict) or m.get("elastiq_elastic") != VERSION:
                raise NativeArtifactError(f"{path / MANIFEST} is not an artifact this elastiq reads: rebuild it")
            for name, meta in m["files"].items():
                target = plain_name(path, name, subdir="extras")
                if "sha256" in meta:
                    check_file(target, meta["bytes"], meta["sha256"])
                elif not target.is_file() or target.stat().st_size != meta["bytes"]:
                    raise NativeArtifactError(f"{target} is missing or has the wrong size: the artifact is incomplete")
            self.manifest = m
            self.chain = Chain.from_dict(m["chain"])
            self.family = Family.from_dict(m["family"], self.chain)
            self.units = m["units"]
            spec, tables = read_spec(path, m["files"])
            self.model = NativeModel(spec, tables, nthreads)
            unknown = [f for f in self.chain.formats if f not in self.model.formats]
            if unknown:
                raise NativeArtifactError(f"{path}: the chain's base formats {unknown} are an unknown format to its "
                                          f"native.json: rebuild the artifact")
            for name, meta in m["modules"].items():
                if meta.get("dtype") not in WEIGHT_DTYPES:
                    raise NativeArtifactError(f"{path / MANIFEST}: module {name} has dtype {meta.get('dtype')!r}, not one "
                                              f"of {', '.join(WEIGHT_DTYPES)}: rebuild the artifact")
            self._files = {name: TensorFile(plain_name(path, name, subdir="extras")) for name in m["tensors"]}
            # the float parts outside the units: norms, and a float embedding or head
            self.model.set_float_parts(TensorFile(path / REST), skip={n for u in self.units for n in u["modules"] + u["tied"]},
                                       aliases=m["rest_aliases"])
        except NativeError:
            raise
        except (KeyError, TypeError, AttributeError) as e:
            raise NativeArtifactError(f"{path / MANIFEST} is malformed (bad or missing {e}): rebuild the artifact") from None
        except (ValueError, TensorFileError, FileNotFoundError) as e:
            raise NativeArtifactError(f"{path}: {e}") from None
        self.tokenizer = Tokenizer(path) if with_tokenizer and (path / "tokenizer.json").is_file() else None
        n = self.chain.n_options
        self.extras: list[dict] = list(m.get("extras", []))
        self.extra_ids = {n + j: e for j, e in enumerate(self.extras)}
        ob = self.chain.option_bytes()
        self.sizes = np.concatenate([ob, [ob[e["option"]] + e["bytes"] for e in self.extras]])
        self.quality = np.concatenate([m["quality"]["estimated"], [e["kl"] for e in self.extras]])
        self.options = sorted(self.family.options)
        self.rest_bytes, self.name = self.chain.rest_bytes, path.name
        self.levels = np.full(len(self.units), -1, dtype=np.int64)
        self.option: int | None = None
        self.last_option: int | None = None  # the option that ran the last forward pass
        self.wrapped: dict[str, Matrix] = {}  # module -> its packed base, while a low-rank option is hosted
        self._lock = RWLock()
        self._swap_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one sequence at a time: the KV cache is one

    def _read(self, file: str, key: str) -> np.ndarray:
        want = self.manifest["tensors"].get(file, {}).get(key)
        if want is None:
            raise NativeArtifactError(f"{self.path} does not store {key} (pruned away, or not an option of this artifact)")
        try:
            return self._files[file].get(key, sha256=want)
        except TensorFileError as e:
            raise NativeArtifactError(f"{e}; rebuild the artifact") from None

    def _copy(self, u: int, i: int) -> dict[str, Matrix]:
        """{module: matrix} of unit ``u`` in base format ``i``."""
        if (u, i) not in self.family.copies:
            raise NativeArtifactError(f"{self.path} does not store {self.units[u]['name']} in {self.chain.formats[i]}")
        file, fmt = f"base{i}.safetensors", self.model.formats[self.chain.formats[i]]
        out = {}
        for name in self.units[u]["modules"]:
            meta = self.manifest["modules"][name]
            parts = {k: self._read(file, f"{name}.{k}") for k in ("codes", "scales", "selectors")}
            ts = self._read(file, f"{name}.tensor_scale") if fmt.tensor_scale else None
            bias = self._read(file, f"{name}.bias") if meta.get("bias") else None
            out[name] = packed_matrix(meta["shape"], fmt, parts["codes"], parts["scales"], parts["selectors"], ts,
                                      bias, what=name)
        return out

    # ---- swapping ------------------------------------------------------------------------
    def swap(self, option: int) -> Transition:
        """Load ``option``: read the units that differ, then point the model at them at once."""
        extra = self.check_option(option)
        with self._swap_lock:
            t0 = time.perf_counter()
            target = self.chain.assignment(option if extra is None else extra["option"]).astype(np.int64)
            changed = np.flatnonzero(target != self.levels)
            new: dict[str, Matrix] = {}
            for u in changed:  # may raise (a corrupted copy): nothing has changed yet
                mats = self._copy(int(u), int(target[u]))
                for head in self.units[u]["tied"]:
                    mats[head] = mats[self.units[u]["modules"][0]]
                new.update(mats)
            new.update({n: base for n, base in self.wrapped.items() if n not in new})  # unwrap old corrections
            wrapped = {}
            if extra is not None:
                for name, meta in extra["modules"].items():
                    base = new.get(name) or self.wrapped.get(name) or self.model.matrices[name]
                    A = self._read(extra["file"], f"{name}.lora_A")
                    B = self._read(extra["file"], f"{name}.lora_B")
                    dt = self._files[extra["file"]].dtype(f"{name}.lora_A")
                    new[name] = base.with_low_rank(as_float32(A, dt), as_float32(B, dt), meta["scaling"])
                    wrapped[name] = base
            t1 = time.perf_counter()
            with self._lock.write():
                t2 = time.perf_counter()
                for name, mat in new.items():
                    self.model.set(name, mat)
                self.levels, self.option, self.wrapped = target, option, wrapped
            del new  # the old copies are freed here, by reference counting
            trim_heap()
            return Transition(option, int(self.sizes[option]), len(changed), t1 - t0, t2 - t1, time.perf_counter() - t0)

    # ---- using ---------------------------------------------------------------------------
    def forward(self, ids, all_logits: bool = False) -> np.ndarray:
        """Run ``ids`` after the cached tokens on the option held now (one whole option)."""
        with self._lock.read():
            if self.option is None:
                raise NativeError("no option is loaded: call apply_budget(bytes) or swap(option) first")
            self.last_option = self.option
            return self.model.forward(ids, all_logits)

    def generate(self, prompt: str, max_new_tokens: int = 32, chat: bool = True, on_token=None,
                 sampling: Sampling = GREEDY, stop: tuple[str, ...] = ()) -> Generation:
        """Continue ``prompt``; ``on_token(text_so_far)`` is called after each token. The result's
        ``options`` names the option that produced each new token."""
        with self._generate_lock:
            return generate_prompt(self.model, self.tokenizer, self.path, prompt, max_new_tokens, chat, sampling, stop,
                                   on_token, step=self.forward, label=lambda: self.last_option)
